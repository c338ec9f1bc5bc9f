"""Densities of states: the raw DOS (read by :mod:`chgdata.dos_io` from VASP / pymatgen / GPAW files) and fixed DOS
windows for learning.

Units everywhere: energies in eV, densities in states/eV (per cell for :class:`RawDos`, per atom for
:class:`DosWindow`), state counts in states (electrons at full occupation, per spin channel unless said).

Representation of the raw DOS. A raw DOS is a list of samples ``rho_i = rho(E_i)``; between samples it is
taken as piecewise linear and outside ``[E_0, E_last]`` as zero. Its cumulative count
``N(E) = int_{-inf}^E rho`` is then piecewise quadratic and known exactly (trapezoid sums at the knots);
every state count in this module comes from it, so counts are exact for that representation on any grid.

Window (DESIGN.md section 5). :func:`smear_window` convolves ``rho`` with a normalised Gaussian of standard
deviation ``sigma`` (eV) and samples the result at ``npoints`` energies ``E_j = E_F + linspace(emin, emax)``
as bin averages ``[N_s(E_j + h/2) - N_s(E_j - h/2)] / h`` of the smeared cumulative ``N_s = N * g_sigma``,
with ``h = (emax - emin) / (npoints - 1)``. Hence ``sum_j rho_j * h`` equals exactly the smeared states in the
*window cells* ``E - E_F in [emin - h/2, emax + h/2]`` (the ``npoints`` cells of width ``h`` centred on the
samples); this is what "states in the window" means here. Smearing only moves states across the two outer
cell edges, so the raw and smeared counts differ only by the Gaussian leakage there: at most 0.65 % for
sigma = 0.1 eV over the 166 DOS files of the shared data set (tests/test_dos.py checks < 1 % on each).

Normalisation (the one used by the store's ``dos_norm`` windows, DOS training, metrics and baselines): both spin
channels of a window are divided by one constant, ``norm_const = max over E and over the two channels`` of the
absolute window, so the larger channel peaks at exactly 1. For a non-spin DOS each channel is half the total,
so each normalised channel equals ``total / max(total)``: DosNet's max-normalised total DOS (seed 001). For a
spin-polarised DOS DosNet (which used spin-summed MP DOS) has no rule; here the channels keep their ratio
(↑/↓ and the magnetisation are not distorted) and their mean ½(↑ + ↓) peaks at or below 1, not at 1.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from chgdata.numerics import exp

__all__ = [
    "RawDos",
    "DosWindow",
    "count_states",
    "cumulative_states",
    "band_gap",
    "smear_window",
    "FWHM_PER_SIGMA",
    "dos_checksum",
]

#: Full width at half maximum of a Gaussian in units of its standard deviation, 2 sqrt(2 ln 2).
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))

# Negative densities down to -NEG_TOL * max|rho| (rounding noise of tetrahedron / DOSCAR output) are accepted.
NEG_TOL = 1e-6
# Half-width of the truncated Gaussian kernel in units of sigma (weight beyond: 2e-15).
KERNEL_HALF_WIDTH = 8.0
# Relative size below which window values are rounding noise of the cumulative difference and set to 0.
ROUNDING_FLOOR = 1e-10
# Fine-grid spacing used for the convolution is at most sigma / FINE_PER_SIGMA.
FINE_PER_SIGMA = 20


@dataclass(frozen=True)
class RawDos:
    """A total DOS as computed, on its own energy grid.

    Attributes:
        energies: (n,) absolute energies in eV, strictly increasing.
        densities: (n_spin, n) states/eV/cell; n_spin = 1 (total of a non-spin calculation, both spins
            included, as VASP/MP store it) or 2 (up, down).
        efermi: Fermi energy in eV (absolute, same reference as ``energies``).
        natoms: number of atoms in the cell (for per-atom normalisation).
        spin_polarized: True iff ``densities`` has two channels.
        source: where it came from (file path or a label), informational only.
    """

    energies: np.ndarray
    densities: np.ndarray
    efermi: float
    natoms: int
    spin_polarized: bool
    source: str = ""

    def __post_init__(self) -> None:
        e = np.asarray(self.energies, dtype=np.float64)
        d = np.asarray(self.densities, dtype=np.float64)
        if d.ndim == 1:
            d = d[None, :]
        object.__setattr__(self, "energies", e)
        object.__setattr__(self, "densities", d)
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` with a one-line message if the DOS is unusable."""
        where = f" ({self.source})" if self.source else ""
        e, d = self.energies, self.densities
        if self.efermi is None or not np.isfinite(self.efermi):
            raise ValueError(f"DOS has no finite Fermi energy (efermi={self.efermi!r}){where}")
        if e.ndim != 1:
            raise ValueError(f"DOS energies must be 1-D, got shape {e.shape}{where}")
        if e.size < 2:
            raise ValueError(f"DOS is empty: {e.size} energy point(s), need at least 2{where}")
        if d.ndim != 2 or d.shape[1] != e.size:
            raise ValueError(f"DOS densities shape {d.shape} does not match {e.size} energies{where}")
        if d.shape[0] not in (1, 2):
            raise ValueError(f"DOS must have 1 or 2 spin channels, got {d.shape[0]}{where}")
        if bool(self.spin_polarized) != (d.shape[0] == 2):
            raise ValueError(
                f"spin_polarized={self.spin_polarized} but densities have {d.shape[0]} channel(s){where}"
            )
        if not np.all(np.isfinite(e)):
            raise ValueError(f"DOS energies contain NaN or inf{where}")
        if not np.all(np.isfinite(d)):
            raise ValueError(f"DOS densities contain NaN or inf{where}")
        steps = np.diff(e)
        if np.any(steps <= 0):
            i = int(np.argmax(steps <= 0))
            raise ValueError(
                f"DOS energies are not strictly increasing "
                f"(E[{i}]={e[i]:.6g} eV, E[{i + 1}]={e[i + 1]:.6g} eV){where}"
            )
        dmax = float(np.max(np.abs(d)))
        if dmax == 0.0:
            raise ValueError(f"DOS is empty: all densities are zero{where}")
        dmin = float(np.min(d))
        if dmin < -NEG_TOL * dmax:
            raise ValueError(
                f"DOS has negative densities beyond rounding "
                f"(min {dmin:.3g} vs max {dmax:.3g} states/eV){where}"
            )
        if int(self.natoms) != self.natoms or self.natoms < 1:
            raise ValueError(f"natoms must be a positive integer, got {self.natoms!r}{where}")

    def to_pymatgen(self, structure=None):
        """A pymatgen ``Dos`` (absolute energies in eV, states/eV/cell, ``Spin.up``/``Spin.down``), or a
        ``CompleteDos`` without projections when ``structure`` is given."""
        from pymatgen.electronic_structure.core import Spin
        from pymatgen.electronic_structure.dos import CompleteDos, Dos

        dens = {Spin.up: self.densities[0].copy()}
        if self.spin_polarized:
            dens[Spin.down] = self.densities[1].copy()
        dos = Dos(float(self.efermi), self.energies.copy(), dens)
        return dos if structure is None else CompleteDos(structure, dos, {})

    @property
    def total(self) -> np.ndarray:
        """(n,) total DOS in states/eV/cell, summed over spin."""
        return self.densities.sum(axis=0)


@dataclass(frozen=True)
class DosWindow:
    """A smeared DOS sampled on a fixed window around E_F (the learning target of DESIGN.md section 5).

    Attributes:
        energies: (npoints,) E - E_F in eV, ``np.linspace(emin, emax, npoints)``.
        absolute: (2, npoints) float32, states/eV/atom per spin channel (up, down); for a non-spin DOS each
            channel is half of the total.
        normalised: (2, npoints) float32, ``absolute / norm_const`` (max over both channels = 1).
        norm_const: states/eV/atom; ``absolute == normalised * norm_const`` (to float32 rounding).
        sigma: Gaussian standard deviation used, eV (FWHM = 2.3548 sigma).
        efermi: absolute Fermi energy of the raw DOS, eV.
        band_gap: eV from the raw DOS (:func:`band_gap`), None for a metal / no gap at E_F.
        states_raw: raw (unsmeared) states per atom, both spins summed, in the window cells
            E - E_F in [emin - h/2, emax + h/2].
        states: smeared states per atom in the same cells, both spins = ``absolute.sum() * spacing`` (computed
            in float64 before the float32 cast).
        spacing: h = (emax - emin) / (npoints - 1), eV.
        truncated: True if part of the window cells lies outside the raw energy range; the DOS is taken as
            zero there (physical below the lowest band; unknown above the last computed band).
        raw_range: (lo, hi) raw energy range relative to E_F, eV.
        natoms: atoms per cell used for per-atom units.
        spin_polarized: whether the raw DOS had two spin channels.
    """

    energies: np.ndarray
    absolute: np.ndarray
    normalised: np.ndarray
    norm_const: float
    sigma: float
    efermi: float
    band_gap: float | None
    states_raw: float
    states: float
    spacing: float
    truncated: bool
    raw_range: tuple[float, float]
    natoms: int
    spin_polarized: bool

    @property
    def conservation_error(self) -> float:
        """Relative change of the states in the window cells caused by smearing, (states - raw) / raw."""
        return (self.states - self.states_raw) / self.states_raw


# ------------------------------------------------------------------------------------------------ physics


def _knot_cumulative(energies: np.ndarray, densities: np.ndarray) -> np.ndarray:
    """(n_spin, n) states/cell below each knot for the piecewise-linear DOS (trapezoid sums)."""
    seg = 0.5 * (densities[:, 1:] + densities[:, :-1]) * np.diff(energies)
    return np.concatenate([np.zeros((densities.shape[0], 1)), np.cumsum(seg, axis=1)], axis=1)


def cumulative_states(raw: RawDos, energies: np.ndarray) -> np.ndarray:
    """N(E): states/cell per spin channel below absolute energies ``energies`` (eV); shape (n_spin, m).

    Exact for the piecewise-linear raw DOS (zero outside the raw range).
    """
    x = np.asarray(energies, dtype=np.float64)
    e, d = raw.energies, raw.densities
    cum = _knot_cumulative(e, d)
    i = np.clip(np.searchsorted(e, x, side="right") - 1, 0, e.size - 2)
    t = np.clip(x - e[i], 0.0, e[i + 1] - e[i])
    width = e[i + 1] - e[i]
    slope = (d[:, i + 1] - d[:, i]) / width
    n = cum[:, i] + d[:, i] * t + 0.5 * slope * t * t
    n = np.where(x < e[0], 0.0, n)
    return np.where(x >= e[-1], cum[:, -1:], n)


def count_states(raw: RawDos, lo: float, hi: float, relative: bool = True) -> np.ndarray:
    """States/cell per spin channel with energy in [lo, hi] eV (relative to E_F unless ``relative=False``)."""
    if hi < lo:
        raise ValueError(f"count_states: hi={hi} < lo={lo}")
    shift = raw.efermi if relative else 0.0
    n = cumulative_states(raw, np.array([lo + shift, hi + shift]))
    return n[:, 1] - n[:, 0]


def band_gap(raw: RawDos, tol: float = 1e-3) -> float | None:
    """Band gap in eV from the raw total DOS, or None for a metal (no empty region at E_F).

    Grid points with total DOS <= ``tol`` states/eV/atom count as empty. The gap is the width of the run of
    empty points that contains E_F or starts / ends within one grid step of it (VASP puts E_F at the top of
    the valence band); in the piecewise-linear representation the DOS is exactly zero over that run. A run of
    a single point (width 0) is not a gap. This is a DOS-based estimate: Gaussian tails of an ISMEAR=0 VASP
    DOS can hide a gap (e.g. the shared H2O molecule reads as None), and a tetrahedron DOS from a too coarse
    k-mesh can show spurious gaps (shared gpaw-0052, Na16 on a 2x2x2 mesh, reads 0.83 eV).
    """
    e = raw.energies
    empty = raw.total <= tol * raw.natoms
    if not empty.any():
        return None
    ef = raw.efermi
    step = float(np.max(np.diff(e)))
    # runs of consecutive empty points: [start, end] inclusive
    padded = np.concatenate([[False], empty, [False]]).astype(np.int8)
    edges = np.diff(padded)
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1) - 1
    for s, t in zip(starts, ends, strict=True):
        if s == 0 or t == e.size - 1:
            continue  # below the lowest / above the highest band: not a gap
        if e[s] - step <= ef <= e[t] + step:
            width = float(e[t] - e[s])
            return width if width > 0 else None
    return None


def _gaussian_weights(sigma: float, dx: float) -> np.ndarray:
    m = int(math.ceil(KERNEL_HALF_WIDTH * sigma / dx))
    x = np.arange(-m, m + 1) * dx
    w = exp(-0.5 * (x / sigma) ** 2)  # chgdata.numerics: the same bits on every CPU
    return w / w.sum()


def smear_window(
    raw: RawDos,
    sigma: float = 0.1,
    emin: float = -10.0,
    emax: float = 10.0,
    npoints: int = 400,
) -> DosWindow:
    """Gaussian-smear ``raw`` (sigma in eV) and sample it on E - E_F in linspace(emin, emax, npoints).

    Returns per-atom densities for two spin channels; a non-spin total is split evenly (each channel gets
    half). Values are cell averages of the smeared DOS over cells of width h centred on the samples, so the
    smeared states in the window cells are conserved exactly by the samples (see module docstring);
    ``sigma = 0`` gives plain cell averages of the raw DOS. The smeared cumulative count is computed by a
    discrete convolution of the exact cumulative count with a Gaussian on a fine grid (spacing <= sigma/20,
    a divisor of h, kernel truncated at 8 sigma).
    """
    if not (np.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be a finite number >= 0 eV, got {sigma!r}")
    if not (np.isfinite(emin) and np.isfinite(emax) and emax > emin):
        raise ValueError(f"window must satisfy emin < emax (finite), got [{emin}, {emax}]")
    if int(npoints) != npoints or npoints < 2:
        raise ValueError(f"npoints must be an integer >= 2, got {npoints!r}")
    npoints = int(npoints)
    h = (emax - emin) / (npoints - 1)
    ef = raw.efermi
    lo_cell, hi_cell = emin - 0.5 * h, emax + 0.5 * h
    cell_edges = ef + emin + h * (np.arange(npoints + 1) - 0.5)

    if sigma > 0:
        sub = max(1, int(math.ceil(h * FINE_PER_SIGMA / sigma)))
        dx = h / sub
        w = _gaussian_weights(sigma, dx)
        m = (w.size - 1) // 2
        fine = ef + emin - 0.5 * h + dx * np.arange(-m, npoints * sub + m + 1)
        n_fine = cumulative_states(raw, fine)
        if w.size > 64 and n_fine.shape[1] > 4096:
            from scipy.signal import fftconvolve  # lazy: scipy.signal costs ~1.5 s to import

            n_s = fftconvolve(n_fine, w[None, :], mode="valid", axes=1)
        else:
            n_s = np.stack([np.convolve(c, w, mode="valid") for c in n_fine])
        n_edges = n_s[:, ::sub]  # fine points at cell edges, exactly
    else:
        n_edges = cumulative_states(raw, cell_edges)
    if n_edges.shape[1] != npoints + 1:  # guard the index arithmetic above
        raise RuntimeError(f"internal error: {n_edges.shape[1]} cell edges for {npoints} points")

    per_cell = np.diff(n_edges, axis=1) / raw.natoms  # states/atom per cell, per raw channel
    if raw.spin_polarized:
        states_cells = per_cell
    else:
        states_cells = np.repeat(0.5 * per_cell, 2, axis=0)
    # N_s is monotone, so cells are >= 0 up to float rounding of the cumulative (|err| ~ 1e-14 * N); drop that
    # noise so empty regions are exactly zero: values below ROUNDING_FLOOR * max are set to 0.
    floor = ROUNDING_FLOOR * float(np.max(np.abs(states_cells)))
    states_cells = np.where(states_cells > floor, states_cells, 0.0)
    absolute64 = states_cells / h
    states = float(states_cells.sum())
    states_raw = float(count_states(raw, lo_cell, hi_cell).sum()) / raw.natoms
    norm_const = float(np.max(absolute64))
    if not norm_const > 0:
        raise ValueError(
            f"DOS window E-E_F in [{emin}, {emax}] eV contains no states"
            f"{' (' + raw.source + ')' if raw.source else ''}"
        )
    e0, e1 = float(raw.energies[0] - ef), float(raw.energies[-1] - ef)
    return DosWindow(
        energies=np.linspace(emin, emax, npoints),
        absolute=absolute64.astype(np.float32),
        normalised=(absolute64 / norm_const).astype(np.float32),
        norm_const=norm_const,
        sigma=float(sigma),
        efermi=float(ef),
        band_gap=band_gap(raw),
        states_raw=states_raw,
        states=states,
        spacing=h,
        truncated=bool(lo_cell < e0 or hi_cell > e1),
        raw_range=(e0, e1),
        natoms=int(raw.natoms),
        spin_polarized=bool(raw.spin_polarized),
    )


def raw_from_row(r: dict[str, Any]) -> RawDos:
    """A validated RawDos from a dos_raw.parquet row; ValueError with a one-line reason if unusable."""
    mid = r.get("material_id")
    if r.get("efermi") is None:
        raise ValueError("raw DOS has no Fermi energy (efermi is null)")
    if not r.get("energies") or not r.get("dos_up"):
        raise ValueError("raw DOS is empty (no energies or densities)")
    spin = bool(r.get("spin_polarized"))
    if spin and not r.get("dos_down"):
        raise ValueError("raw DOS is flagged spin-polarised but has no spin-down densities")
    dens = [r["dos_up"], r["dos_down"]] if spin else [r["dos_up"]]
    if any(x is None for ch in dens for x in ch) or any(x is None for x in r["energies"]):
        raise ValueError("raw DOS contains null values")
    if len({len(ch) for ch in dens}) != 1:
        raise ValueError(f"raw DOS spin channels differ in length ({', '.join(str(len(ch)) for ch in dens)})")
    return RawDos(energies=np.asarray(r["energies"], dtype=np.float64), densities=np.asarray(dens, dtype=np.float64),
                  efermi=float(r["efermi"]), natoms=int(r.get("natoms") or 0), spin_polarized=spin,
                  source=f"{mid} in dos_raw.parquet")


def dos_checksum(absolute: np.ndarray, normalised: np.ndarray) -> str:
    """sha256 of the stored little-endian float32 bytes of the absolute then the normalised window."""
    h = hashlib.sha256(np.ascontiguousarray(absolute, dtype="<f4").tobytes())
    h.update(np.ascontiguousarray(normalised, dtype="<f4").tobytes())
    return h.hexdigest()
