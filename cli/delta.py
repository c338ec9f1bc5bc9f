"""``chgdata build-delta``."""

from __future__ import annotations

import typer
from chgdata.cli.common import QUIET, SCHEDULER, STORE, WORKERS, cli_errors, console, exit_if_failed, out

REFERENCE = typer.Option(None, "--reference",
                         help="SAED reference table: a JSON file (e.g. another dataset's saed_reference.json) or "
                              "'gpaw-free-atoms' (GPAW free neutral atoms, shipped; the convention of the GPAW "
                              "sample data and of the shipped density model); default: the store's own, fitted "
                              "on its train split if absent.")


def build_delta(
    store: str = STORE,
    reference: str = REFERENCE,
    nonnegative: bool = typer.Option(False, "--nonnegative", help="Constrain fitted ρ_Z(r) ≥ 0 (less accurate "
                                     "on pseudo densities that dip below zero near nuclei)."),
    workers: int = WORKERS,
    scheduler: str = SCHEDULER,
    quiet: bool = QUIET,
) -> None:
    """Fit (or reuse) per-element SAED references and store ρ_SAED and Δρ = ρ − ρ_SAED (e/Å³) for every material."""
    from chgdata.app import build_delta as run_build_delta

    with cli_errors():
        report = run_build_delta(store, reference=reference, nonnegative=nonnegative, workers=workers,
                                 scheduler=scheduler, progress=not quiet)
    out.print(f"reference {report.reference_id} ({report.reference_kind}); built {len(report.committed)}, "
              f"already built {len(report.skipped)}, failed {len(report.failed)} → {store}")
    for mid, why in sorted(report.failed.items()):
        console.print(f"  [red]failed[/] {mid}: {why}", highlight=False)
    for mid, why in sorted(report.excluded_from_fit.items()):
        console.print(f"  warning: {mid}: {why}", highlight=False, markup=False)
    exit_if_failed(len(report.failed))
