"""``chgdata predict``: charge density of structures from a trained checkpoint, written as CHGCAR (+ npy/zarr)."""

from __future__ import annotations

from pathlib import Path

import typer
from chgdata.cli.common import QUIET, cli_errors, out


def predict(
    structures: list[str] = typer.Argument(..., help="Structure files (CIF, POSCAR, CHGCAR, …), MP ids (mp-149) "
                                                     "or store:PATH#material_id."),
    checkpoint: Path = typer.Option(None, "--checkpoint", "-c", dir_okay=False,
                                    help="model.pt of a `chgdata train` run (default: the model shipped with "
                                         "chgdata, if any)."),
    out_dir: Path = typer.Option(Path("predictions"), "--out", "-o",
                                 help="Output folder (one sub-folder per structure); a path named *CHGCAR* with "
                                      "one structure and --format chgcar is the file itself."),
    grid: str = typer.Option(None, "--grid", help="Grid nx,ny,nz."),
    spacing: float = typer.Option(None, "--spacing", min=0.01, help="Grid spacing in Å (default 0.1)."),
    like: Path = typer.Option(None, "--like", exists=True, dir_okay=False,
                              help="Use the grid of this CHGCAR (gzip allowed)."),
    device: str = typer.Option("cpu", "--device", "-d", help="cpu or cuda (cuda:N)."),
    chunk_size: int = typer.Option(None, "--chunk-size", min=1, help="Grid points per head chunk (memory bound)."),
    formats: str = typer.Option("chgcar", "--format", "-f",
                                help="Comma-separated: chgcar, npy, zarr (density.zarr for xarray), cube (e/Bohr³), "
                                     "xsf (e/Å³)."),
    spin: str = typer.Option("auto", "--spin", help="auto: a diff (magnetisation) block only for a magnetic "
                                                    "prediction; on: always; off: never."),
    aug_from: Path = typer.Option(None, "--aug-from", exists=True, dir_okay=False,
                                  help="VASP CHGCAR of the same atoms: copy its PAW augmentation occupancies into the "
                                       "CHGCAR, so VASP can start from the prediction (ICHARG=1, same POTCARs)."),
    store: str = typer.Option(None, "--store", "-s", help="Store holding the SAED reference table (default: the "
                                                          "training store, else the copy in the checkpoint)."),
    conserve: bool = typer.Option(True, "--conserve-electrons/--raw",
                                  help="Δ models: shift Δρ̂ so that ∫ρ dV is the valence count exactly."),
    dos: bool = typer.Option(False, "--dos", help="Also predict the DOS window: dos.json (pymatgen Dos), dos.csv, "
                                                  "dos.png per structure."),
    dos_only: bool = typer.Option(False, "--dos-only", help="Predict the DOS window only (no density)."),
    dos_checkpoint: Path = typer.Option(None, "--dos-checkpoint", dir_okay=False,
                                        help="DOS model.pt (default: the DOS model shipped with chgdata)."),
    dos_method: str = typer.Option("kernel", "--dos-method",
                                   help="kernel: the DOS model (instant); nscf: GPAW bands of the predicted density "
                                        "(seconds to minutes per crystal, needs .[dft]), written to OUT/nscf/NAME/."),
    quiet: bool = QUIET,
) -> None:
    """Predict ρ (e/Å³) on a full grid and write a VASP CHGCAR (ρ·V; a `diff` block for spin models)."""
    import warnings

    from chgdata.app import parse_grid, predict_files

    with cli_errors(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        preds = predict_files(structures, out_dir, checkpoint=checkpoint, grid=parse_grid(grid) if grid else None,
                              spacing=spacing, like=like, device=device, chunk_size=chunk_size,
                              formats=[f for f in formats.split(",") if f.strip()], spin=spin, aug_from=aug_from,
                              store=store, conserve_electrons=conserve, dos=dos, dos_only=dos_only,
                              dos_checkpoint=dos_checkpoint, dos_method=dos_method, progress=not quiet,
                              echo=out.print)
    shown = set()
    for w in caught:  # the DOS-only path's warnings too (an unseen element was silent there)
        if w.category.__name__ in ("ConventionWarning", "UnseenElementWarning") and str(w.message) not in shown:
            shown.add(str(w.message))
            out.print(f"[yellow]warning:[/yellow] {w.message}", highlight=False)
    if preds:
        out.print(f"density convention: {preds[0].convention}", highlight=False)
    for p in preds:
        nx, ny, nz = p.grid_shape
        npts = nx * ny * nz
        t = p.timing
        out.print(f"{p.name}: {len(p.structure)} atoms, grid {nx}×{ny}×{nz}, ∫ρ dV = {p.n_electrons:.4f} e"
                  + (f" (Δ net charge corrected by {p.charge_correction:+.3g} e)" if p.charge_correction else "")
                  + f", {t.total_s:.2f} s ({t.total_s / npts * 1e6:.3g} s per 10⁶ points) → "
                  + ", ".join(str(f) for f in p.files), highlight=False)
