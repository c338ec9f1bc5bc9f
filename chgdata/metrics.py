"""Pure numpy metrics for charge densities and DOS windows (no torch, no store).

Charge density: ChargE3Net's NMAE, ``100 · Σ_k |ρ̂_k − ρ_k| / Σ_k |ρ_k|`` over the full grid of one material (%),
then the mean over materials. It is kept as additive pieces (:class:`DensityErrorSums`: Σ|err| and Σ|ρ|) so
results computed chunk by chunk (x-slabs, workers) merge exactly by addition.

DOS windows (``(..., n_points)`` on an energy grid): MSE on max-normalised windows (DosNet), R², Wasserstein
distance between windows treated as distributions over energy (one per spin channel), and the mean absolute
error of absolute windows in states/eV/atom.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DensityErrorSums",
    "density_error_sums",
    "nmae",
    "mean_nmae",
    "dos_mse",
    "r2_score",
    "dos_wasserstein",
    "dos_abs_mae",
]


@dataclass(frozen=True)
class DensityErrorSums:
    """Additive pieces of one material's NMAE: ``abs_err`` = Σ|ρ̂ − ρ|, ``abs_ref`` = Σ|ρ|, ``n`` grid points."""

    abs_err: float = 0.0
    abs_ref: float = 0.0
    n: int = 0

    def __add__(self, other: DensityErrorSums) -> DensityErrorSums:
        return DensityErrorSums(self.abs_err + other.abs_err, self.abs_ref + other.abs_ref, self.n + other.n)

    @property
    def nmae(self) -> float:
        """100 · Σ|ρ̂ − ρ| / Σ|ρ| in % (NaN when Σ|ρ| is 0)."""
        return 100.0 * self.abs_err / self.abs_ref if self.abs_ref > 0 else float("nan")

    @property
    def mae(self) -> float:
        """Mean |ρ̂ − ρ| over the grid points (units of ρ, e/Å³)."""
        return self.abs_err / self.n if self.n else float("nan")


def density_error_sums(pred: np.ndarray, target: np.ndarray) -> DensityErrorSums:
    """Σ|pred − target| and Σ|target| (float64 accumulation) of one chunk or one whole grid."""
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {p.shape} != target shape {t.shape}")
    return DensityErrorSums(float(np.abs(p - t).sum()), float(np.abs(t).sum()), int(t.size))


def nmae(pred: np.ndarray, target: np.ndarray) -> float:
    """ChargE3Net NMAE (%) of one material's full grid."""
    return density_error_sums(pred, target).nmae


def mean_nmae(per_material: Iterable[DensityErrorSums]) -> float:
    """Mean over materials of their NMAE (%), ChargE3Net's data-set figure (not a pooled ratio)."""
    vals = [s.nmae for s in per_material]
    return float(np.mean(vals)) if vals else float("nan")


# ----------------------------------------------------------------------------------------------------- DOS


def dos_mse(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean squared error over all values (DosNet's loss on max-normalised windows)."""
    p, t = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {p.shape} != target shape {t.shape}")
    return float(np.mean((p - t) ** 2))


def r2_score(pred: np.ndarray, target: np.ndarray, axis: int | tuple[int, ...] | None = None) -> np.ndarray | float:
    """Coefficient of determination 1 − Σ(t − p)² / Σ(t − t̄)², over all values or along ``axis``.

    With ``axis=None`` (default) every value counts once (the flattened R²); with ``axis=-1`` one R² per window.
    NaN where the target is constant.
    """
    p, t = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    ss_res = np.sum((t - p) ** 2, axis=axis)
    ss_tot = np.sum((t - np.mean(t, axis=axis, keepdims=axis is not None)) ** 2, axis=axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(ss_tot > 0, 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0), np.nan)
    return float(r2) if np.ndim(r2) == 0 else r2


def dos_wasserstein(pred: np.ndarray, target: np.ndarray, energies: np.ndarray) -> np.ndarray:
    """1-Wasserstein distance (eV) between windows read as distributions over ``energies``.

    ``pred``/``target``: (..., n_points) windows; negative predicted values are clipped to 0 and each window is
    normalised to unit mass (scipy.stats.wasserstein_distance with weights). Returns an array of shape ``...``
    (e.g. (n_materials, n_spin)); NaN where either window has no positive mass.
    """
    from scipy.stats import wasserstein_distance

    p, t = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    e = np.asarray(energies, np.float64)
    if p.shape != t.shape or p.shape[-1] != e.shape[0]:
        raise ValueError(f"shapes {p.shape}, {t.shape} do not match {e.shape[0]} energies")
    p2, t2 = np.clip(p.reshape(-1, e.shape[0]), 0, None), np.clip(t.reshape(-1, e.shape[0]), 0, None)
    out = np.full(p2.shape[0], np.nan)
    for i in range(p2.shape[0]):
        if p2[i].sum() > 0 and t2[i].sum() > 0:
            out[i] = wasserstein_distance(e, e, u_weights=p2[i], v_weights=t2[i])
    return out.reshape(p.shape[:-1])


def dos_abs_mae(pred_abs: np.ndarray, target_abs: np.ndarray) -> float:
    """Mean absolute error (states/eV/atom) between absolute windows."""
    p, t = np.asarray(pred_abs, np.float64), np.asarray(target_abs, np.float64)
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {p.shape} != target shape {t.shape}")
    return float(np.mean(np.abs(p - t)))
