"""``chgdata build-delta``."""

from __future__ import annotations

from pathlib import Path

import typer
from chgdata.cli.common import QUIET, SCHEDULER, STORE, WORKERS, cli_errors, console, exit_if_failed, out


def build_delta(
    store: str = STORE,
    reference: Path = typer.Option(None, "--reference", exists=True, dir_okay=False,
                                   help="SAED reference table (JSON) to reuse, e.g. another dataset's "
                                        "saed_reference.json; default: the store's own, fitted if absent."),
    nonnegative: bool = typer.Option(False, "--nonnegative", help="Constrain fitted ρ_Z(r) ≥ 0 (less accurate "
                                     "on pseudo densities that dip below zero near nuclei)."),
    workers: int = WORKERS,
    scheduler: str = SCHEDULER,
    quiet: bool = QUIET,
) -> None:
    """Fit (or reuse) per-element SAED references and store ρ_SAED and Δρ = ρ − ρ_SAED (e/Å³) for every material."""
    from chgdata.pipelines.delta import run_build_delta

    with cli_errors():
        report = run_build_delta(store, reference=str(reference) if reference else None, workers=workers,
                                 scheduler=scheduler, progress=not quiet, nonnegative=nonnegative)
    out.print(f"reference {report.reference_id} ({report.reference_kind}); built {len(report.committed)}, "
              f"already built {len(report.skipped)}, failed {len(report.failed)} → {store}")
    for mid, why in sorted(report.failed.items()):
        console.print(f"  [red]failed[/] {mid}: {why}", highlight=False)
    exit_if_failed(len(report.failed))
