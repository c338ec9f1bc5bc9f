"""``chgdata plot …``: figures of a dataset (a sub-app: ``plot dos`` here; ``plot density`` etc. can be added)."""

from __future__ import annotations

from pathlib import Path

import typer
from chgdata.cli.common import STORE, cli_errors, out

plot_app = typer.Typer(help="Write figures (PNG) of a dataset.", no_args_is_help=True, rich_markup_mode=None)


@plot_app.command("dos")
def dos(
    material: str = typer.Option(..., "--material", "-m", help="Material id (as in the index)."),
    out_path: Path = typer.Option(..., "--out", "-o", dir_okay=False, help="PNG file to write."),
    store: str = STORE,
    sigma: float = typer.Option(0.1, "--sigma", min=0.0, help="σ (eV) when the window is not in the store yet."),
    emin: float = typer.Option(-10.0, "--emin", help="Window start (eV) when not in the store yet."),
    emax: float = typer.Option(10.0, "--emax", help="Window end (eV) when not in the store yet."),
    points: int = typer.Option(400, "--points", min=2, help="Window points when not in the store yet."),
) -> None:
    """Raw vs smeared DOS of one material: the stored build-dos window, or one computed now if not built."""
    with cli_errors():
        path, how = _plot(store, material, out_path, sigma, emin, emax, points)
    out.print(f"wrote {path} ({how})")


def _plot(store: str, material: str, path: Path, sigma: float, emin: float, emax: float, points: int):
    import dataclasses

    import numpy as np

    from chgdata.dos import smear_window
    from chgdata.plots import plot_dos
    from chgdata.store import open_dataset

    ds = open_dataset(store)
    raw = ds.raw_dos(material)
    window = smear_window(raw, sigma=sigma, emin=emin, emax=emax, npoints=points)
    how = f"computed now: σ = {sigma:g} eV, not in {ds.DOS_TABLE}"
    table = ds.table(ds.DOS_TABLE)
    if table is not None and material in set(table.column("material_id").to_pylist()):
        row = next(r for r in table.to_pylist() if r["material_id"] == material)
        _, absolute, energies = ds.dos_windows([material], "absolute")
        _, normalised, _ = ds.dos_windows([material], "normalised")
        window = dataclasses.replace(
            smear_window(raw, sigma=row["sigma"], emin=row["emin"], emax=row["emax"], npoints=row["npoints"]),
            energies=energies, absolute=absolute[0], normalised=normalised[0], norm_const=row["norm_const"],
            states=float(np.sum(absolute[0], dtype=np.float64) * row["spacing"]))
        how = f"stored window, σ = {row['sigma']:g} eV"
    atoms = f"{raw.natoms} atom" + ("s" if raw.natoms != 1 else "")
    title = f"{material} ({'spin-polarised' if raw.spin_polarized else 'non-spin'}, {atoms})"
    return plot_dos(raw, window, path, title=title), how


@plot_app.command("density")
def density(
    material: str = typer.Option(..., "--material", "-m", help="Material id (as in the index)."),
    out_path: Path = typer.Option(..., "--out", "-o", dir_okay=False, help="PNG file to write."),
    store: str = STORE,
    checkpoint: Path = typer.Option(None, "--checkpoint", "-c", dir_okay=False,
                                    help="Also predict: target, prediction and error slices."),
    device: str = typer.Option("cpu", "--device", "-d", help="cpu or cuda (with --checkpoint)."),
    z_index: int = typer.Option(None, "--z-index", min=0, help="c-plane index (default: densest plane)."),
) -> None:
    """Density slices (ρ, ρ_SAED, Δρ; or target, prediction, error with --checkpoint) and a parity plot."""
    import numpy as np

    from chgdata import contract as C
    from chgdata.plots import plot_density_slices
    from chgdata.store import open_dataset

    with cli_errors():
        ds = open_dataset(store)
        grid = ds.density(material)
        s = ds.structure(material)
        title = f"{material} {s.composition.reduced_formula}"
        if checkpoint is None:
            saed = ds.grid(C.SAED, material).reshape(grid.rho.shape)
            panels = [("ρ (DFT)", grid.rho, "density"), ("ρ_SAED", saed, "density"),
                      ("Δρ = ρ − ρ_SAED", grid.rho - saed, "signed")]
            parity = (saed, grid.rho, "ρ (DFT)", "ρ_SAED")
        else:
            from chgdata.app import predict

            rho = predict(s, checkpoint, grid=grid.rho.shape, device=device).data["total"] / s.volume  # ρ·V → ρ
            panels = [("target ρ (DFT)", grid.rho, "density"), ("predicted ρ", rho, "density"),
                      ("error ρ̂ − ρ", rho - grid.rho, "signed")]
            parity = (rho, grid.rho, "ρ (DFT)", "predicted ρ")
            title += f", {checkpoint}"
        path = plot_density_slices(panels, grid.lattice, out_path, parity=parity, title=title, z_index=z_index)
    nm = 100 * np.abs(parity[0] - parity[1]).sum() / np.abs(parity[1]).sum()
    out.print(f"wrote {path} (NMAE of the parity panel: {nm:.3f} %)")


@plot_app.command("training")
def training(
    run_dir: Path = typer.Argument(..., exists=True, file_okay=False, help="Run folder holding metrics.csv."),
    out_path: Path = typer.Option(..., "--out", "-o", dir_okay=False, help="PNG file to write."),
) -> None:
    """Training curves (loss, validation NMAE / MSE, learning rate, throughput) from metrics.csv."""
    from chgdata.plots import plot_training

    with cli_errors():
        path = plot_training(run_dir / "metrics.csv", out_path)
    out.print(f"wrote {path}")
