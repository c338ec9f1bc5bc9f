"""Kernel DOS model: Gaussian-kernel ridge regression from crystal descriptors to the DOS window.

Why a kernel model next to DosNet: on compositions absent from training, a network on per-element
embeddings learns little more than the composition baseline with the data at hand (a few hundred crystals,
many of them strained copies of one formula; `bench/results/dos_ablation.md`). A smooth regression on
chemistry-level descriptors (:mod:`chgdata.descriptors`: electron count per atom, electronegativity
difference across bonds, coordination, …) interpolates between *kinds* of crystals instead, and is fitted in
closed form in a second, so its two hyper-parameters can be chosen by cross-validation over whole formula
groups of the training split (:func:`chgdata.models.fit_dos.fold_errors`) — never on val or test.

Model: with standardised descriptors z (mean and scale of the training split),
``k(a, b) = exp(−γ |z_a − z_b|² / d)`` and ``W(x) = Σ_i k(x, x_i) α_i + w̄``, where ``w̄`` is the mean
training window and ``α = (K + λ I)⁻¹ (W − w̄)``; outputs are clipped at 0. Units: the max-normalised windows
of ``chgdata build-dos`` (``chgdata.dos``, "Normalisation"), (↑, ↓) on E − E_F ∈ ``energy_window`` eV.

Reduced energies (``energy_exponent`` p > 0): two-centre hoppings scale as d⁻² with the bond length d (Harrison's
universal tight-binding parameters), so the bands of a compressed crystal, or of Si beside Ge, are the same bands
stretched. Each training window is therefore resampled on ε = (E − E_F)·(d_i/d_ref)^p before the regression, and
a prediction is mapped back with its own d; d is the mean nearest-neighbour distance (the descriptor
``nearest_distance_A``). Beyond the window's ends a resampled window keeps its end values.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from chgdata.descriptors import DESCRIPTOR_NAMES, structure_descriptors

from .config import DosKernelConfig


def kernel_grid(energy_exponents=(0.0,)) -> tuple[tuple[float, float, float], ...]:
    """(γ, λ, p) cells for :func:`chgdata.models.fit_dos.fold_errors`: γ per standardised descriptor, λ on the
    diagonal, p the reduced-energy exponents given (0: none; 2: Harrison's d⁻²)."""
    return tuple((g, lam, float(p)) for p in energy_exponents for g in (0.25, 0.5, 1.0, 2.0)
                 for lam in (0.1, 0.3, 1.0, 3.0))


#: the grid of ``chgdata fit-dos`` (and of the shipped model): no reduced energies; grouped CV preferred p = 2,
#: val did not (bench/results/dos_cv.md), so it is an option (``--energy-exponents 0,2``)
DEFAULT_GRID = kernel_grid()
#: the descriptor that sets each crystal's energy scale
DISTANCE = DESCRIPTOR_NAMES.index("nearest_distance_A")


def _kernel(a: torch.Tensor, b: torch.Tensor, gamma: float) -> torch.Tensor:
    return torch.exp(-gamma * torch.cdist(a, b).square() / a.shape[1])


def resample(windows: torch.Tensor, grid: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``windows`` (m, c, n) sampled on ``grid`` (n,), evaluated at ``grid · factor[k]`` for each window k (linear
    interpolation; the end values beyond the grid)."""
    x = (grid[None, :] * factor[:, None]).clamp(grid[0], grid[-1])  # (m, n)
    hi = torch.searchsorted(grid, x.contiguous()).clamp(1, len(grid) - 1)
    lo = hi - 1
    t = ((x - grid[lo]) / (grid[hi] - grid[lo]))[:, None, :]
    idx = lambda i: i[:, None, :].expand(-1, windows.shape[1], -1)  # noqa: E731
    return torch.gather(windows, 2, idx(lo)) * (1 - t) + torch.gather(windows, 2, idx(hi)) * t


class DosKernelModel(nn.Module):
    """``forward(descriptors (m, d)) -> (m, 2, n_points)``; :meth:`predict_structures` from pymatgen structures.

    Buffers (saved in the state dict): the training descriptors (standardised), their mean and scale, the dual
    coefficients α (n_train, 2 · n_points) and the mean training window."""

    def __init__(self, config: DosKernelConfig):
        super().__init__()
        self.config = config
        n, d, p = config.n_train, config.n_descriptors, config.n_points
        self.register_buffer("train_z", torch.zeros(n, d, dtype=torch.float64))
        self.register_buffer("x_mean", torch.zeros(d, dtype=torch.float64))
        self.register_buffer("x_scale", torch.ones(d, dtype=torch.float64))
        self.register_buffer("alpha", torch.zeros(n, 2 * p, dtype=torch.float64))
        self.register_buffer("offset", torch.zeros(2 * p, dtype=torch.float64))

    def forward(self, descriptors: torch.Tensor) -> torch.Tensor:
        x = descriptors.to(self.train_z)
        z = (x - self.x_mean) / self.x_scale
        out = (_kernel(z, self.train_z, self.config.gamma) @ self.alpha + self.offset).reshape(-1, 2,
                                                                                              self.config.n_points)
        if self.config.energy_exponent:  # from the reduced axis back to E − E_F: W(E) = R(E · s)
            out = resample(out, self.energies(), self.energy_scale(x[:, DISTANCE]))
        return out.clamp(min=0)

    def energies(self) -> torch.Tensor:
        """The windows' E − E_F grid (eV)."""
        lo, hi = self.config.energy_window
        return torch.linspace(lo, hi, self.config.n_points, dtype=self.train_z.dtype, device=self.train_z.device)

    def energy_scale(self, distance: torch.Tensor) -> torch.Tensor:
        """s = (d / d_ref)^p for mean nearest-neighbour distances d (Å): ε = (E − E_F) · s."""
        return (distance / self.config.distance_ref) ** self.config.energy_exponent

    @torch.no_grad()
    def nearest(self, descriptors: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Kernel similarity k ∈ (0, 1] of each row of ``descriptors`` (m, d) to its closest training crystal, and
        that crystal's row in the training set (both (m,)); k = 1 for identical descriptors."""
        z = (descriptors.to(self.train_z) - self.x_mean) / self.x_scale
        best = _kernel(z, self.train_z, self.config.gamma).max(dim=1)
        return best.values.cpu().numpy(), best.indices.cpu().numpy()

    @torch.no_grad()
    def predict_structures(self, structures: Sequence) -> np.ndarray:
        """(n, 2, n_points) max-normalised windows for pymatgen structures."""
        if not structures:
            return np.zeros((0, 2, self.config.n_points))
        return self(descriptor_matrix(structures).to(self.train_z.device)).cpu().numpy()


def descriptor_matrix(structures: Sequence) -> torch.Tensor:
    """(n, d) float64 :func:`chgdata.descriptors.structure_descriptors` of pymatgen structures (n ≥ 1)."""
    return torch.as_tensor(np.stack([structure_descriptors(s) for s in structures]))


def standardisation(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale of training descriptors (n, d); a constant descriptor (no information) gets scale 1."""
    mean, scale = x.mean(0), x.std(0)
    scale[scale < 1e-12] = 1.0
    return mean, scale


def max_similarity(train: np.ndarray, query: np.ndarray, gamma: float) -> np.ndarray:
    """Kernel similarity of each query row to its closest training row, standardised as by :func:`fit_kernel`."""
    mean, scale = standardisation(train)
    z = (torch.as_tensor((train - mean) / scale), torch.as_tensor((query - mean) / scale))
    return _kernel(z[1], z[0], gamma).max(dim=1).values.numpy()


def fit_kernel(descriptors: np.ndarray, windows: np.ndarray, gamma: float, lam: float,
               energy_window: tuple[float, float] = (-10.0, 10.0), energy_exponent: float = 0.0) -> DosKernelModel:
    """Closed-form fit on descriptors (n, d) of :data:`DESCRIPTOR_NAMES` and windows (n, 2, n_points) (float64
    throughout); ``energy_exponent`` p > 0 regresses on the reduced energy axis (module docstring)."""
    x = np.asarray(descriptors, np.float64)
    w = np.asarray(windows, np.float64)
    if x.ndim != 2 or w.ndim != 3 or w.shape[1] != 2 or len(x) != len(w) or len(x) < 2:
        raise ValueError(f"need descriptors (n, d) and windows (n, 2, points) for n >= 2, got {x.shape}, {w.shape}")
    if not (np.isfinite(x).all() and np.isfinite(w).all()):
        raise ValueError("descriptors and windows must be finite")
    if energy_exponent and x.shape[1] != len(DESCRIPTOR_NAMES):
        raise ValueError(f"reduced energies need the {len(DESCRIPTOR_NAMES)} descriptors of chgdata.descriptors "
                         f"(the nearest-neighbour distance among them), got {x.shape[1]}")
    if energy_exponent and not (x[:, DISTANCE] > 0).all():
        raise ValueError("nearest-neighbour distances must be positive to scale the energy axis")
    n, p = len(x), w.shape[2]
    cfg = DosKernelConfig(n_points=p, energy_window=tuple(energy_window), gamma=float(gamma), lam=float(lam),
                          n_train=n, n_descriptors=x.shape[1], energy_exponent=float(energy_exponent),
                          distance_ref=float(np.median(x[:, DISTANCE])) if energy_exponent else 1.0)
    model = DosKernelModel(cfg)
    mean, scale = standardisation(x)
    z = torch.as_tensor((x - mean) / scale)
    y = torch.as_tensor(w)
    if energy_exponent:  # onto the reduced axis: R_i(ε) = W_i(ε / s_i)
        y = resample(y, model.energies(), 1 / model.energy_scale(torch.as_tensor(x[:, DISTANCE])))
    y = y.reshape(n, -1)
    offset = y.mean(0)
    k = _kernel(z, z, gamma)
    alpha = torch.linalg.solve(k + lam * torch.eye(n, dtype=k.dtype), y - offset)
    for name, value in (("train_z", z), ("x_mean", mean), ("x_scale", scale), ("alpha", alpha), ("offset", offset)):
        getattr(model, name).copy_(torch.as_tensor(value))
    return model
