"""``chgdata compute``."""

from __future__ import annotations

from pathlib import Path

import typer
from chgdata.cli.common import QUIET, SCHEDULER, WORKERS, cli_errors, console, exit_if_failed, out


def compute(
    structures: list[Path] = typer.Argument(None, exists=True, dir_okay=False,
                                            help="Structure files pymatgen reads (CIF, POSCAR, …)."),
    generate: bool = typer.Option(False, "--generate",
                                  help="Generated prototypes × substitutions of compositions absent from the shared "
                                       "data (chgdata.candidates), eq variants first."),
    out_dir: Path = typer.Option(Path("data/gpaw-new"), "--out", "-o", file_okay=False,
                                 help="Folder of calculation folders (the layout of ../shared/data/gpaw)."),
    workers: int = WORKERS,
    scheduler: str = SCHEDULER,
    timeout: float = typer.Option(900.0, "--timeout", min=1, help="Seconds per structure before it is skipped."),
    budget_min: float = typer.Option(None, "--budget-min", min=0,
                                     help="Wall-clock minutes after which no new calculation starts."),
    limit: int = typer.Option(None, "--limit", min=0, help="Compute at most N structures."),
    max_atoms: int = typer.Option(16, "--max-atoms", min=1, help="Refuse larger cells."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Retry the structures in failures.csv."),
    seed: int = typer.Option(0, "--seed", help="Seed of the generated list (rattles, order)."),
    rank_by: Path = typer.Option(None, "--rank-by", exists=True, dir_okay=False,
                                 help="proposals.csv of `chgdata propose`: its compositions first, most uncertain "
                                      "first (each variant tier in turn: every eq cell, then the others)."),
    list_only: bool = typer.Option(False, "--list",
                                   help="Print the structures (id, formula, atoms, spin; tab-separated) and exit."),
    quiet: bool = QUIET,
) -> None:
    """Run GPAW (the shared crystals' settings) on structures, one Dask task each. Reruns resume: finished folders
    are kept, a killed run leaves no half folder. Exit code 3 when some structures failed (failures.csv)."""
    from chgdata.candidates import from_files, generate_new, rank_order

    if not structures and not generate:
        raise typer.BadParameter("give structure files or --generate")
    with cli_errors():
        cands = (from_files(structures) if structures else []) + (generate_new(seed) if generate else [])
        if rank_by:
            cands = rank_order(cands, rank_by)
        if list_only:
            for c in cands[:limit]:
                typer.echo(f"{c.id}\t{c.reduced_formula}\t{len(c.structure)}\t{int(c.spin)}")
            return
        from chgdata.app import compute as run_compute

        report = run_compute(cands, out_dir, workers=workers, scheduler=scheduler, timeout_s=timeout,
                             budget_min=budget_min, limit=limit, max_atoms=max_atoms, retry_failed=retry_failed,
                             progress=not quiet)
    out.print(f"finished {len(report.finished)}, already there {len(report.existing)}, refused "
              f"{len(report.refused)}, failed {len(report.failed)}, not started (budget) {len(report.not_started)} "
              f"→ {out_dir} ({report.seconds / 60:.1f} min)", highlight=False, soft_wrap=True)
    for cid, why in sorted(report.refused.items()):
        console.print(f"  refused {cid}: {why}", highlight=False, soft_wrap=True)
    for cid, why in sorted(report.failed.items()):
        console.print(f"  failed {cid}: {why}", highlight=False, soft_wrap=True)
    exit_if_failed(len(report.failed) + len(report.refused))
