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
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from chgdata.descriptors import structure_descriptors

from .config import DosKernelConfig

#: (γ, λ) tried by :func:`chgdata.models.fit_dos.fold_errors`; γ per descriptor (standardised), λ on the diagonal
DEFAULT_GRID: tuple[tuple[float, float], ...] = tuple(
    (g, lam) for g in (0.25, 0.5, 1.0, 2.0) for lam in (0.1, 0.3, 1.0, 3.0))


def _kernel(a: torch.Tensor, b: torch.Tensor, gamma: float) -> torch.Tensor:
    return torch.exp(-gamma * torch.cdist(a, b).square() / a.shape[1])


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
        z = (descriptors.to(self.train_z) - self.x_mean) / self.x_scale
        out = _kernel(z, self.train_z, self.config.gamma) @ self.alpha + self.offset
        return out.clamp(min=0).reshape(-1, 2, self.config.n_points)

    @torch.no_grad()
    def predict_structures(self, structures: Sequence) -> np.ndarray:
        """(n, 2, n_points) max-normalised windows for pymatgen structures."""
        if not structures:
            return np.zeros((0, 2, self.config.n_points))
        x = torch.as_tensor(np.stack([structure_descriptors(s) for s in structures]))
        return self(x.to(self.train_z.device)).cpu().numpy()


def fit_kernel(descriptors: np.ndarray, windows: np.ndarray, gamma: float, lam: float,
               energy_window: tuple[float, float] = (-10.0, 10.0)) -> DosKernelModel:
    """Closed-form fit on descriptors (n, d) and windows (n, 2, n_points) (float64 throughout)."""
    x = np.asarray(descriptors, np.float64)
    w = np.asarray(windows, np.float64)
    if x.ndim != 2 or w.ndim != 3 or w.shape[1] != 2 or len(x) != len(w) or len(x) < 2:
        raise ValueError(f"need descriptors (n, d) and windows (n, 2, points) for n >= 2, got {x.shape}, {w.shape}")
    if not (np.isfinite(x).all() and np.isfinite(w).all()):
        raise ValueError("descriptors and windows must be finite")
    n, p = len(x), w.shape[2]
    cfg = DosKernelConfig(n_points=p, energy_window=tuple(energy_window), gamma=float(gamma), lam=float(lam),
                          n_train=n, n_descriptors=x.shape[1])
    model = DosKernelModel(cfg)
    mean, scale = x.mean(0), x.std(0)
    scale[scale < 1e-12] = 1.0  # a constant descriptor carries no information
    z = torch.as_tensor((x - mean) / scale)
    y = torch.as_tensor(w.reshape(n, -1))
    offset = y.mean(0)
    k = _kernel(z, z, gamma)
    alpha = torch.linalg.solve(k + lam * torch.eye(n, dtype=k.dtype), y - offset)
    for name, value in (("train_z", z), ("x_mean", mean), ("x_scale", scale), ("alpha", alpha), ("offset", offset)):
        getattr(model, name).copy_(torch.as_tensor(value))
    return model
