"""Pure plotting functions (matplotlib, Agg canvas; no global pyplot state). Each writes one image file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from chgdata.dos import DosWindow, RawDos

__all__ = ["plot_dos", "plot_density_slices", "plot_training"]


def plot_dos(raw: RawDos, window: DosWindow, path: str | Path, title: str | None = None) -> Path:
    """Write a PNG comparing the raw DOS with its smeared window, both per atom, against E - E_F (eV).

    Spin up is drawn upwards and spin down mirrored downwards; a non-spin raw DOS is split evenly between the
    two channels, as in the window. Raw spikes higher than 1.5x the smeared maximum are clipped (noted on the
    axis). Returns the path written.
    """
    path = Path(path)
    e_raw = raw.energies - raw.efermi
    raw_pa = raw.densities / raw.natoms
    if raw_pa.shape[0] == 1:
        raw_pa = np.repeat(0.5 * raw_pa, 2, axis=0)
    lo, hi = float(window.energies[0]), float(window.energies[-1])
    inside = (e_raw >= lo - 1.0) & (e_raw <= hi + 1.0)
    ymax = 1.5 * float(np.max(window.absolute))
    clipped = bool(np.any(raw_pa[:, inside] > ymax))

    fig = Figure(figsize=(8.0, 5.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    colours = ("tab:blue", "tab:red")
    for ch, (sign, name) in enumerate(((1.0, "up"), (-1.0, "down"))):
        ax.plot(
            e_raw[inside],
            sign * np.minimum(raw_pa[ch, inside], ymax),
            color="0.6",
            lw=0.6,
            label="raw (unsmeared)" if ch == 0 else None,
        )
        ax.plot(
            window.energies,
            sign * window.absolute[ch],
            color=colours[ch],
            lw=1.4,
            label=f"smeared, spin {name}",
        )
    ax.axhline(0.0, color="k", lw=0.5)
    ax.axvline(0.0, color="k", ls="--", lw=0.8, label="$E_F$")
    ax.set_xlim(lo, hi)
    ax.set_ylim(-ymax, ymax)
    ax.set_xlabel(r"$E - E_F$ (eV)")
    ylabel = "DOS (states/eV/atom), spin down < 0"
    if clipped:
        ylabel += "\n(raw spikes clipped)"
    ax.set_ylabel(ylabel)
    gap = "metal" if window.band_gap is None else f"gap {window.band_gap:.2f} eV"
    spin = "spin-polarised" if window.spin_polarized else "non-spin (total split evenly)"
    info = (
        f"Gaussian $\\sigma$ = {window.sigma:g} eV (FWHM {2.3548 * window.sigma:.3g} eV), {spin}, {gap}\n"
        f"states/atom in window: raw {window.states_raw:.3f}, smeared {window.states:.3f}"
        + (" (window exceeds raw range)" if window.truncated else "")
    )
    ax.text(0.0, 1.01, info, transform=ax.transAxes, fontsize=8, va="bottom", ha="left")
    ax.legend(loc="upper right", fontsize=8, framealpha=0.8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


# ------------------------------------------------------------------------------------------ charge density


def _plane_coords(lattice: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Cartesian in-plane coordinates (Å) of the (a, b) plane's grid-cell corners, a along x."""
    a, b = np.asarray(lattice, np.float64)[0], np.asarray(lattice, np.float64)[1]
    e1 = a / np.linalg.norm(a)
    b_perp = b - (b @ e1) * e1
    e2 = b_perp / np.linalg.norm(b_perp)
    fa = np.arange(shape[0] + 1) / shape[0]
    fb = np.arange(shape[1] + 1) / shape[1]
    fa, fb = np.meshgrid(fa, fb, indexing="ij")
    pts = fa[..., None] * a + fb[..., None] * b
    return pts @ e1, pts @ e2


def density_style(dmin: float, dmax: float) -> dict:
    """pcolormesh colours for densities in [dmin, dmax] e/Å³: viridis from 0 when nothing is negative; when a
    pseudo-density dips below 0 (near cores), a diverging map white at 0 over [dmin, dmax], so nothing is clipped."""
    if dmin < 0:
        from matplotlib.colors import TwoSlopeNorm

        return {"cmap": "RdBu_r", "norm": TwoSlopeNorm(vmin=dmin, vcenter=0.0, vmax=max(dmax, -1e-6 * dmin))}
    return {"cmap": "viridis", "vmin": 0.0, "vmax": dmax}


def plot_density_slices(panels: list[tuple[str, np.ndarray, str]], lattice: np.ndarray, path: str | Path,
                        parity: tuple[np.ndarray, np.ndarray, str, str] | None = None, title: str | None = None,
                        z_index: int | None = None, max_parity_points: int = 200_000) -> Path:
    """Slices through 3-D grids (e/Å³) at one c-plane, plus an optional parity plot; writes a PNG.

    ``panels``: (title, grid (nx, ny, nz), kind) with kind "density" (one scale shared by the density panels:
    viridis from 0, or, when a pseudo-density goes negative, RdBu white at 0 from the minimum to the maximum) or
    "signed" (RdBu centred at 0, symmetric); every panel has a colour bar in e/Å³. The plane is c-index
    ``z_index`` (default: the plane holding the largest density), drawn in Cartesian in-plane coordinates so
    non-orthogonal cells look right.
    ``parity``: (predicted, reference, x label, y label) flattened values, drawn as a log-count hexbin with y = x.
    """
    path = Path(path)
    nz = panels[0][1].shape[2]
    if z_index is None:
        z_index = int(np.argmax(panels[0][1].reshape(-1, nz).max(axis=0)))
    x, y = _plane_coords(lattice, panels[0][1].shape[:2])
    dens = [p[1][:, :, z_index] for p in panels if p[2] == "density"]
    dmax = max(float(np.max(d)) for d in dens) if dens else 1.0
    dens_style = density_style(min(float(np.min(d)) for d in dens) if dens else 0.0, dmax)
    n = len(panels) + (parity is not None)
    fig = Figure(figsize=(4.3 * n, 4.4), dpi=110)
    FigureCanvasAgg(fig)
    for i, (name, grid, kind) in enumerate(panels):
        ax = fig.add_subplot(1, n, i + 1)
        sl = grid[:, :, z_index]
        if kind == "signed":
            m = float(np.max(np.abs(sl))) or 1e-12
            im = ax.pcolormesh(x, y, sl, cmap="RdBu_r", vmin=-m, vmax=m, shading="flat")
        else:
            im = ax.pcolormesh(x, y, sl, shading="flat", **dens_style)
        ax.set_aspect("equal")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("x (Å)")
        if i == 0:
            ax.set_ylabel("y (Å), in the (a, b) plane")
        cb = fig.colorbar(im, ax=ax, shrink=0.8, pad=0.02)
        cb.set_label("e/Å³")
    if parity is not None:
        pred, ref, xl, yl = parity
        pred, ref = np.ravel(pred), np.ravel(ref)
        if pred.size > max_parity_points:
            sel = np.random.default_rng(0).choice(pred.size, max_parity_points, replace=False)
            pred, ref = pred[sel], ref[sel]
        ax = fig.add_subplot(1, n, n)
        lo, hi = float(min(pred.min(), ref.min())), float(max(pred.max(), ref.max()))
        ax.hexbin(ref, pred, gridsize=60, bins="log", cmap="magma_r", mincnt=1, extent=(lo, hi, lo, hi))
        ax.plot([lo, hi], [lo, hi], color="tab:blue", lw=0.8, ls="--", label="y = x")
        nm = 100.0 * np.abs(pred - ref).sum() / max(np.abs(ref).sum(), 1e-300)
        ax.set_xlabel(f"{xl} (e/Å³)")
        ax.set_ylabel(f"{yl} (e/Å³)")
        ax.set_title(f"parity (NMAE {nm:.2f} %)", fontsize=10)
        ax.set_aspect("equal")
        ax.legend(loc="upper left", fontsize=8)
    fig.suptitle((title + "  " if title else "") + f"(slice at c-index {z_index} of {nz})", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def plot_training(metrics_csv: str | Path, path: str | Path, title: str | None = None) -> Path:
    """Training curves from a run's metrics.csv (:func:`training_figure`) as a PNG."""
    path = Path(path)
    fig = training_figure(metrics_csv, title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def training_figure(metrics_csv: str | Path, title: str | None = None) -> Figure:
    """Loss, validation metric(s) (with the SAED baseline), learning rate and throughput against the step."""
    import csv

    with open(metrics_csv) as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"{metrics_csv}: no rows")

    def col(name: str) -> np.ndarray:
        return np.array([float(r[name]) if r.get(name) not in (None, "") else np.nan for r in rows])

    step = col("step")
    fig = Figure(figsize=(11.0, 7.0), dpi=110)
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(2, 2, i + 1) for i in range(4)]
    axes[0].plot(step, col("train_loss"), "o-", ms=3)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("training loss (per-probe, e/Å³ for L1)")
    ax = axes[1]
    fields = set(rows[-1])  # metrics.csv grows columns: the last row has them all

    def curve(name: str, *args, **kw) -> bool:
        """Plot the finite values of a column (validation runs every val_every epochs); False when there are none."""
        if name not in fields:
            return False
        y = col(name)
        ok = np.isfinite(y)
        if ok.any():
            ax.plot(step[ok], y[ok], *args, **kw)
        return bool(ok.any())

    if curve("val_nmae", "o-", ms=3, label="model (ρ_SAED + Δρ̂)" if "val_nmae_saed" in fields else "model"):
        curve("val_nmae_saed", "s--", ms=3, color="0.5", label="SAED baseline")
        ax.set_ylabel("validation NMAE (%)")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    elif curve("val_mse", "o-", ms=3):
        ax.set_yscale("log")
        ax.set_ylabel("validation MSE (normalised DOS)")
    else:
        ax.set_ylabel("validation metric")
        ax.text(0.5, 0.5, f"no validation yet\n(last step {int(np.nanmax(step))}; validation runs at the end of\n"
                "every val_every epochs and of the run)", ha="center", va="center", transform=ax.transAxes,
                fontsize=9, color="0.35")
    axes[2].plot(step, col("lr"), "o-", ms=3)
    axes[2].set_ylabel("learning rate")
    if "probes_per_s" in rows[0]:
        axes[3].plot(step, col("probes_per_s"), "o-", ms=3)
        axes[3].set_ylabel("throughput (probes/s)")
    for a in axes:
        a.set_xlabel("optimiser step")
        a.grid(alpha=0.3)
    fig.suptitle(title or f"training curves: {Path(metrics_csv).parent.name}")
    fig.tight_layout()
    return fig
