"""``chgdata ingest``."""

from __future__ import annotations

from pathlib import Path

import typer
from chgdata.cli.common import QUIET, SCHEDULER, STORE, WORKERS, cli_errors, console, exit_if_failed, out


def ingest(
    mp_ids: str = typer.Option(None, "--mp-ids", help="Comma-separated Materials Project ids, e.g. mp-149,mp-13."),
    mp_ids_file: Path = typer.Option(None, "--mp-ids-file", exists=True, dir_okay=False,
                                     help="File with one MP id per line ('#' comments allowed)."),
    from_dir: list[Path] = typer.Option(None, "--from-dir", exists=True, file_okay=False,
                                        help="Folder tree of calculations (CHGCAR[.gz], AECCAR0/2, vasprun.xml, "
                                             "DOS JSON); repeat for several trees."),
    store: str = STORE,
    api_key: str = typer.Option(None, "--api-key", envvar="MP_API_KEY", show_envvar=True, show_default=False,
                                help="Materials Project API key (prefer the MP_API_KEY environment variable)."),
    workers: int = WORKERS,
    scheduler: str = SCHEDULER,
    quiet: bool = QUIET,
) -> None:
    """Read structures, charge densities and DOS into the store. Reruns resume: committed materials are skipped.

    Exit code 3 when some materials failed (the others are committed; a rerun retries the failed ones)."""
    from chgdata.app import ingest as run_ingest

    ids = [s for s in (mp_ids or "").replace(" ", ",").split(",") if s]
    if mp_ids_file:
        ids += [ln.split("#")[0].strip() for ln in mp_ids_file.read_text().splitlines() if ln.split("#")[0].strip()]
    if not ids and not from_dir:
        raise typer.BadParameter("give --mp-ids, --mp-ids-file or --from-dir")
    with cli_errors():
        report = run_ingest(store, from_dir=from_dir, mp_ids=ids, api_key=api_key, workers=workers,
                            scheduler=scheduler, progress=not quiet)
    out.print(f"committed {len(report.committed)}, already in store {len(report.skipped)}, "
              f"failed {len(report.failed)}, flagged {len(report.flagged)} → {store}")
    for mid, why in sorted(report.failed.items()):
        console.print(f"  [red]failed[/] {mid}: {why}", highlight=False)
    for mid, why in sorted(report.flagged.items()):
        console.print(f"  [yellow]flagged[/] {mid}: {why}", highlight=False)
    exit_if_failed(len(report.failed))
