"""``chgdata build-dos``."""

from __future__ import annotations

import typer
from chgdata.cli.common import QUIET, SCHEDULER, STORE, WORKERS, cli_errors, console, exit_if_failed, out


def build_dos(
    store: str = STORE,
    sigma: float = typer.Option(0.1, "--sigma", min=0.0, help="Gaussian smearing standard deviation, eV."),
    emin: float = typer.Option(-10.0, "--emin", help="Window start, E - E_F in eV."),
    emax: float = typer.Option(10.0, "--emax", help="Window end, E - E_F in eV."),
    points: int = typer.Option(400, "--points", min=2, help="Energy points in the window."),
    workers: int = WORKERS,
    scheduler: str = SCHEDULER,
    quiet: bool = QUIET,
) -> None:
    """Smear the raw DOS of every ingested material into fixed (2, points) windows around E_F, stored absolute
    (states/eV/atom) and max-normalised. Reruns resume: materials already built are skipped."""
    from chgdata.pipelines.dos import run_build_dos

    with cli_errors():
        report = run_build_dos(store, sigma=sigma, emin=emin, emax=emax, npoints=points, workers=workers,
                               scheduler=scheduler, progress=not quiet)
    out.print(f"built {len(report.committed)} DOS windows, already in store {len(report.skipped)}, "
              f"failed {len(report.failed)} → {store}")
    for mid, why in sorted(report.failed.items()):
        console.print(f"  [red]failed[/] {mid}: {why}", highlight=False)
    exit_if_failed(len(report.failed))
