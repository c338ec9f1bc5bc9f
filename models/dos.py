"""DOS model (seed 001, DosNet-like): per-atom DOS windows from invariant atom features, pooled per structure."""

from __future__ import annotations

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
        if config.output_bias:
            self.bias = nn.Parameter(torch.zeros(config.n_spin * config.n_points))

    def per_atom(self, atom_features: torch.Tensor) -> torch.Tensor:
        """Per-atom DOS (n_atoms, n_spin, n_points)."""
        if atom_features.shape[-1] != self.irreps_in.dim:
            raise ValueError(f"atom features have {atom_features.shape[-1]} columns, expected {self.irreps_in}")
        out = self.mlp(atom_features[:, self.scalars])
        if self.config.output_bias:
            out = out + self.bias
        if self.config.positive:
            out = F.softplus(out)
        return out.reshape(-1, self.config.n_spin, self.config.n_points)

    def forward(self, atom_features: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        per_atom = self.per_atom(atom_features)
        n_struct = batch[K.CELL].shape[0]
        index = batch[K.ATOM_BATCH]
        pooled = torch.zeros((n_struct,) + per_atom.shape[1:], dtype=per_atom.dtype, device=per_atom.device)
        pooled = pooled.index_add(0, index, per_atom)
        if self.config.pooling == "mean":
            count = torch.bincount(index, minlength=n_struct).clamp(min=1).to(per_atom.dtype)
            pooled = pooled / count[:, None, None]
        return pooled


@torch.no_grad()
def start_at_window(head: DosHead, window: torch.Tensor, scale: float = 0.1) -> None:
    """Set the output bias so that a zero MLP output gives ``window`` (n_spin, n_points) through the softplus,
    and shrink the MLP's last layer by ``scale``: training then starts near that window (e.g. the mean one)."""
    w = window.to(head.bias.dtype).reshape(-1).clamp(min=1e-4)
    head.bias.copy_(w + torch.log(-torch.expm1(-w)) if head.config.positive else w)  # softplus⁻¹
    list(head.mlp.parameters())[-1].mul_(scale)


class DosModel(nn.Module):
    """Encoder (``config.backbone``: the shared NequIP-like one or DosNet's) + DOS head.

    ``forward(batch) -> (n_struct, n_spin, n_points)``; :meth:`windows` gives (n_struct, 2, n_points)."""

    def __init__(self, config: DosConfig):
        super().__init__()
        self.config = config
        if config.backbone == "dosnet":
            from .dosnet import DosNetEncoder

            self.encoder = DosNetEncoder(config.encoder, config.n_key, config.attention, config.embedding_skip)
        else:
            self.encoder = AtomEncoder(config.encoder)
        self.head = DosHead(config, self.encoder.irreps_out)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.encoder(batch), batch)

    def windows(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(n_struct, 2, n_points): the (↑, ↓) windows; a 1-channel model's spin average goes to both."""
        out = self(batch)
        return out.expand(-1, 2, -1) if out.shape[1] == 1 else out
