"""``chgdata dft``."""

from __future__ import annotations

from pathlib import Path

import typer
from chgdata.cli.common import QUIET, cli_errors, console, exit_if_failed, out


def dft(
    structures: list[str] = typer.Argument(..., help="CIF/POSCAR/CHGCAR files, MP ids or store:PATH#id."),
    start: str = typer.Option("predicted", "--start",
                              help="Initial density: predicted (the density model's), saed (the model's reference "
                                   "alone) or default (GPAW's superposition of atoms)."),
    nscf: bool = typer.Option(False, "--nscf",
                              help="No SCF: the bands of the fixed start density (gaps, DOS in a fraction of the "
                                   "SCF time)."),
    paw: str = typer.Option("atomic", "--paw",
                            help="NSCF's PAW atomic density matrices D_asii: atomic (GPAW's free-atom ones; the "
                                 "closer bands with the shipped model) or relaxed (self-consistent with the fixed "
                                 "density: better energies; spin-paired cells)."),
    out_dir: Path = typer.Option(Path("dft"), "--out", "-o", file_okay=False, help="One folder per structure."),
    checkpoint: str = typer.Option(None, "--checkpoint", help="Density model (default: the shipped one)."),
    spin: str = typer.Option("auto", "--spin", help="auto (from the predicted magnetisation), on or off."),
    quiet: bool = QUIET,
) -> None:
    """GPAW (the shared crystals' settings) started from a predicted density, or NSCF bands of it. Writes per
    structure summary.json (iterations, seconds, energy, E_F, gaps in eV), dos.json/csv/png, CHGCAR and a
    restartable calc.gpw. Exit code 3 when some structures failed (nothing is written for them)."""
    from chgdata.app import dft as run_dft

    with cli_errors():
        results = run_dft(structures, out_dir, start=start, nscf=nscf, checkpoint=checkpoint, spin=spin,
                          paw=paw, progress=not quiet)
    failed = [r for r in results if "error" in r]
    for r in results:
        if "error" in r:
            console.print(f"  failed {r['name']}: {r['error']}", highlight=False, soft_wrap=True)
            continue
        what = f"NSCF ({r['paw']} D_asii)" if nscf else f"SCF {r['iterations']} iterations"
        out.print(f"{r['name']} ({r['formula']}): {what} from {r['start']}, {r['seconds']:.1f} s; E = "
                  f"{r['energy_eV']:.4f} eV, E_F = {r['efermi_eV']:.3f} eV, gap {r['gap_eV']:.3f} eV (direct "
                  f"{r['direct_gap_eV']:.3f}) → {r['folder']}", highlight=False, soft_wrap=True)
    exit_if_failed(len(failed))
