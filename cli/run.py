"""``chgdata run``: the whole data pipeline, ingest → split → build-delta → build-dos, on one local Dask cluster."""

from __future__ import annotations

from pathlib import Path

import typer
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
    sigma: float = typer.Option(0.1, "--sigma", min=0.0, help="DOS Gaussian smearing σ, eV."),
    group_by: str = GROUP_BY,
    split_seed: int = SPLIT_SEED,
    reference: str = REFERENCE,
    workers: int = WORKERS,
    scheduler: str = SCHEDULER,
    quiet: bool = QUIET,
) -> None:
    """Ingest, split by group, then SAED/Δρ, then DOS windows: a model-ready dataset in one command (resumable).

    Exit code 3 when some materials failed in any stage (the rest is built; a rerun retries them)."""
    from chgdata.pipelines.cluster import dask_client
    from chgdata.pipelines.delta import run_build_delta
    from chgdata.pipelines.dos import run_build_dos
    from chgdata.pipelines.ingest import run_ingest
    from chgdata.pipelines.split import run_split

    if not from_dir and not mp_ids:
        raise typer.BadParameter("give --from-dir or --mp-ids")
    ids = [s for s in (mp_ids or "").split(",") if s]
    with cli_errors(), dask_client(workers, scheduler) as client:
        ing = run_ingest(store, from_dir=[str(d) for d in from_dir or []], mp_ids=ids, api_key=api_key,
                         client=client, progress=not quiet)
        out.print(f"ingest: committed {len(ing.committed)}, already there {len(ing.skipped)}, "
                  f"failed {len(ing.failed)}, flagged {len(ing.flagged)}")
        split = run_split(store, group_by=group_by, seed=split_seed)
        out.print(f"split by {split.group_by}: "
                  + ", ".join(f"{s} {len(split.ids(s))}" for s in ("train", "val", "test")))
        delta = run_build_delta(store, reference=reference, client=client, progress=not quiet)
        out.print(f"build-delta: reference {delta.reference_id} ({delta.reference_kind}), built "
                  f"{len(delta.committed)}, already there {len(delta.skipped)}, failed {len(delta.failed)}")
        for mid, why in sorted(delta.excluded_from_fit.items()):
            console.print(f"  warning: {mid}: {why}", highlight=False, markup=False)
        dos = run_build_dos(store, sigma=sigma, client=client, progress=not quiet)
        out.print(f"build-dos: built {len(dos.committed)}, already there {len(dos.skipped)}, "
                  f"failed {len(dos.failed)}")
    failed = {**dos.failed, **delta.failed, **ing.failed}
    for mid, why in sorted(failed.items()):
        console.print(f"  [red]failed[/] {mid}: {why}", highlight=False)
    out.print(f"dataset ready: {store}  (see: chgdata info --store {store})")
    exit_if_failed(len(failed))
