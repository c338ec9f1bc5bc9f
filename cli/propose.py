"""``chgdata propose``."""

from __future__ import annotations

import csv
from pathlib import Path

import typer
from chgdata.cli.common import cli_errors, console, out

PROPOSAL_COLUMNS = ["rank", "id", "formula", "prototype", "natoms", "spread_pct"]


def propose(
    structures: list[Path] = typer.Argument(None, exists=True, dir_okay=False,
                                            help="Structure files (CIF, POSCAR, …)."),
    generate: bool = typer.Option(False, "--generate", help="The eq cells of `chgdata compute --generate`."),
    n: int = typer.Option(200, "--n", min=0, help="How many to write, most uncertain first (0: all)."),
    out_file: Path = typer.Option(Path("proposals.csv"), "--out", "-o", dir_okay=False, help="CSV to write."),
    checkpoint: str = typer.Option(None, "--checkpoint", help="Ensemble density model (default: the shipped one)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the generated list."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Rank candidate structures by the density ensemble's disagreement (spread of the members' Δρ̂ on a 0.3 Å
    grid, in NMAE units, %): what the model does not know comes first. `chgdata compute --rank-by FILE` then
    computes in that order."""
    from chgdata.app import propose as rank_by_spread
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from chgdata.candidates import from_files, generate_new

    if not structures and not generate:
        raise typer.BadParameter("give structure files or --generate")
    with cli_errors():
        cands = (from_files(structures) if structures else []) + \
            ([c for c in generate_new(seed) if c.variant == "eq"] if generate else [])
        by_id = {c.id: c for c in cands}
        columns = (TextColumn("[bold]spread"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, disable=quiet, transient=True) as bar:
            task = bar.add_task("spread", total=len(cands))
            ranked = rank_by_spread(cands, checkpoint=checkpoint,
                                    callback=lambda done, total: bar.update(task, completed=done))
    ranked = ranked[:n] if n else ranked
    out_file.parent.mkdir(parents=True, exist_ok=True)
    with open(out_file, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(PROPOSAL_COLUMNS)
        for i, sp in enumerate(ranked, 1):
            c = by_id[sp.name]
            w.writerow([i, c.id, sp.formula, c.prototype, len(c.structure), f"{sp.spread_pct:.4f}"])
    top = ", ".join(f"{sp.name} {sp.spread_pct:.2f} %" for sp in ranked[:3])
    out.print(f"ranked {len(cands)} candidates, wrote {len(ranked)} → {out_file} (most uncertain: {top})",
              highlight=False, soft_wrap=True)
    if not ranked:
        console.print("nothing to rank", highlight=False)
