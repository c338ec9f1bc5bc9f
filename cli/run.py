"""``chgdata run``: the whole data pipeline, ingest → split → build-delta → build-dos, on one local Dask cluster."""

from __future__ import annotations

from pathlib import Path

import typer
from chgdata.app import data as D
from chgdata.cli.common import QUIET, SCHEDULER, STORE, WORKERS, cli_errors, console, exit_if_failed, out
from chgdata.cli.delta import REFERENCE
from chgdata.cli.split import GROUP_BY, SPLIT_SEED


def run(
    from_dir: list[Path] = typer.Option(None, "--from-dir", exists=True, file_okay=False,
                                        help="Folder tree of calculations (CHGCAR[.gz], vasprun.xml, DOS JSON); "
                                             "repeat for several trees."),
    mp_ids: str = typer.Option(None, "--mp-ids", help="Comma-separated Materials Project ids."),
    store: str = STORE,
    api_key: str = typer.Option(None, "--api-key", envvar="MP_API_KEY", show_default=False,
                                help="Materials Project API key (prefer the MP_API_KEY environment variable)."),
    sigma: float = typer.Option(D.DOS_SIGMA_EV, "--sigma", min=0.0, help="DOS Gaussian smearing σ, eV."),
    group_by: str = GROUP_BY,
    split_seed: int = SPLIT_SEED,
    reference: str = REFERENCE,
    workers: int = WORKERS,
    scheduler: str = SCHEDULER,
    quiet: bool = QUIET,
) -> None:
    """Ingest, split by group, then SAED/Δρ, then DOS windows: a model-ready dataset in one command (resumable).

    Exit code 3 when some materials failed in any stage (the rest is built; a rerun retries them)."""
    from chgdata.app import run as run_pipeline

    if not from_dir and not mp_ids:
        raise typer.BadParameter("give --from-dir or --mp-ids")
    ids = [s for s in (mp_ids or "").split(",") if s]

    def stage(name: str, rep) -> None:
        if name == "ingest":
            out.print(f"ingest: committed {len(rep.committed)}, already there {len(rep.skipped)}, "
                      f"failed {len(rep.failed)}, flagged {len(rep.flagged)}")
        elif name == "split":
            out.print(f"split by {rep.group_by}: " + ", ".join(f"{s} {len(rep.ids(s))}" for s in ("train", "val",
                                                                                                   "test")))
        elif name == "build-delta":
            out.print(f"build-delta: reference {rep.reference_id} ({rep.reference_kind}), built "
                      f"{len(rep.committed)}, already there {len(rep.skipped)}, failed {len(rep.failed)}")
            for mid, why in sorted(rep.excluded_from_fit.items()):
                console.print(f"  warning: {mid}: {why}", highlight=False, markup=False)
        else:
            out.print(f"build-dos: built {len(rep.committed)}, already there {len(rep.skipped)}, "
                      f"failed {len(rep.failed)}")

    with cli_errors():
        report = run_pipeline(store, from_dir=from_dir, mp_ids=ids, api_key=api_key, sigma=sigma, group_by=group_by,
                              split_seed=split_seed, reference=reference, workers=workers, scheduler=scheduler,
                              progress=not quiet, on_stage=stage)
    failed = report.failed
    for mid, why in sorted(failed.items()):
        console.print(f"  [red]failed[/] {mid}: {why}", highlight=False)
    out.print(f"dataset ready: {store}  (see: chgdata info --store {store})")
    exit_if_failed(len(failed))
