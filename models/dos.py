"""DOS model (seed 001, DosNet-like): per-atom DOS windows from invariant atom features, pooled per structure."""

from __future__ import annotations

import numpy as np
import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet
from torch import nn
from torch.nn import functional as F

from . import keys as K
from .config import DosConfig
from .encoder import AtomEncoder, scalar_indices


class DosHead(nn.Module):
    """MLP on the even scalars (0e) of the atom features → (n_spin × n_points) per atom, pooled over atoms.

    ``forward(atom_features, batch)`` returns (n_struct, n_spin, n_points), in the units of the training
    windows (e.g. normalised states/eV). With ``pooling="mean"`` the output is intensive (per atom).
    """

    def __init__(self, config: DosConfig, irreps_atom):
        super().__init__()
        self.config = config
        self.irreps_in = o3.Irreps(irreps_atom)
        self.register_buffer("scalars", scalar_indices(self.irreps_in), persistent=False)
        if len(self.scalars) == 0:
            raise ValueError(f"DosHead needs 0e scalars in the atom irreps, got {self.irreps_in}")
        h = config.mlp_hidden
        self.mlp = FullyConnectedNet([len(self.scalars), h, h, config.n_spin * config.n_points], F.silu)
        width = config.n_spin * config.n_points
        shape = {"element": (config.encoder.n_elements, width), "mean": (width,)}.get(config.output_bias)
        if shape is not None:  # bias = fixed start (a baseline, saved with the weights) + learned change
            self.register_buffer("bias_start", torch.zeros(shape))
            self.bias = nn.Parameter(torch.zeros(shape))  # weight decay pulls it back to the start

    def per_atom(self, atom_features: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """Per-atom DOS (n_atoms, n_spin, n_points); ``z`` (atomic numbers) for the per-element bias."""
        if atom_features.shape[-1] != self.irreps_in.dim:
            raise ValueError(f"atom features have {atom_features.shape[-1]} columns, expected {self.irreps_in}")
        out = self.mlp(atom_features[:, self.scalars])
        if self.config.output_bias == "element":
            out = out + (self.bias_start + self.bias)[z]
        elif self.config.output_bias == "mean":
            out = out + self.bias_start + self.bias
        if self.config.positive:
            out = F.softplus(out)
        return out.reshape(-1, self.config.n_spin, self.config.n_points)

    def forward(self, atom_features: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        per_atom = self.per_atom(atom_features, batch[K.ATOMIC_NUMBERS])
        n_struct = batch[K.CELL].shape[0]
        index = batch[K.ATOM_BATCH]
        pooled = torch.zeros((n_struct,) + per_atom.shape[1:], dtype=per_atom.dtype, device=per_atom.device)
        pooled = pooled.index_add(0, index, per_atom)
        if self.config.pooling == "mean":
            count = torch.bincount(index, minlength=n_struct).clamp(min=1).to(per_atom.dtype)
            pooled = pooled / count[:, None, None]
        return pooled


def element_windows(windows: np.ndarray, atomic_numbers: list, n_elements: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-element average windows ``W_Z = Σ_m x_mZ W_m / Σ_m x_mZ`` (x_mZ: atomic fraction of Z in material m)
    of windows (n, S, P): (n_elements, S, P) and a mask of the elements seen; the composition baseline's
    element windows (:mod:`chgdata.models.evaluate_dos`)."""
    num = np.zeros((n_elements,) + windows.shape[1:])
    den = np.zeros(n_elements)
    for w, z in zip(windows, atomic_numbers, strict=True):
        zs, counts = np.unique(np.asarray(z, np.int64), return_counts=True)
        x = counts / counts.sum()
        num[zs] += x[:, None, None] * np.asarray(w, np.float64)[None]
        den[zs] += x
    seen = den > 0
    num[seen] /= den[seen][:, None, None]
    return num, seen


@torch.no_grad()
def start_at_windows(head: DosHead, windows: np.ndarray, atomic_numbers: list, scale: float = 0.1) -> None:
    """Start the output bias at the training windows (n, n_spin, n_points): per element (the composition
    baseline; unseen elements get the mean window) or their mean, through softplus⁻¹ (``bias_start``; the
    learned ``bias`` is zeroed); shrink the MLP's last layer by ``scale`` so the model starts near that
    baseline and learns the rest."""
    mean = np.asarray(windows, np.float64).mean(0)

    def inv(w):
        w = torch.as_tensor(w, dtype=head.bias_start.dtype).clamp(min=1e-4)
        return w + torch.log(-torch.expm1(-w)) if head.config.positive else w  # softplus⁻¹

    if head.config.output_bias == "element":
        per, seen = element_windows(windows, atomic_numbers, head.bias.shape[0])
        per[~seen] = mean
        head.bias_start.copy_(inv(per.reshape(per.shape[0], -1)))
    elif head.config.output_bias == "mean":
        head.bias_start.copy_(inv(mean.reshape(-1)))
    head.bias.zero_()
    list(head.mlp.parameters())[-1].mul_(scale)


class DosModel(nn.Module):
    """Encoder (``config.backbone``: the shared NequIP-like one or DosNet's) + DOS head.

    ``forward(batch) -> (n_struct, n_spin, n_points)``; :meth:`windows` gives (n_struct, 2, n_points)."""

    def __init__(self, config: DosConfig):
        super().__init__()
        self.config = config
        if config.backbone == "dosnet":
            from .dosnet import DosNetEncoder

            self.encoder = DosNetEncoder(config.encoder, config.n_key, config.attention, config.embedding_skip,
                                         config.element_features, config.n_skip)
        else:
            self.encoder = AtomEncoder(config.encoder)
        self.head = DosHead(config, self.encoder.irreps_out)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.encoder(batch), batch)

    def windows(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(n_struct, 2, n_points): the (↑, ↓) windows; a 1-channel model's spin average goes to both."""
        out = self(batch)
        return out.expand(-1, 2, -1) if out.shape[1] == 1 else out
