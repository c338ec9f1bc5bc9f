"""Pure plotting functions (matplotlib, Agg canvas; no global pyplot state). Each writes one image file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from chgdata.dos import DosWindow, RawDos

__all__ = ["plot_dos"]


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
