"""DosNet's backbone (seed 001): SE(3)-Transformer-style attention blocks with a skip to the initial embedding.

Seed 001 writes one layer as ``f_{k+1} = SelfInteraction(f_k, f_0) + Linear(Atten(f_k, r))`` with

* ``SelfInteraction(f_k, f_0) = ⊕_l Σ w CG (f_k ⊗ f_0)``: a tensor product of the node features with the
  initial element embedding ``f_0`` (the "skip connection to the initial embedding", against over-smoothing);
* ``Atten``: ``q_i = Linear(f_i)``, ``k_ij = TP(f_j, Y(r̂_ij); w(|r_ij|))``, ``v_ij = TP(f_j, Y(r̂_ij); w(|r_ij|))``,
  ``a_ij = softmax_j(q_i · k_ij)``, message ``Σ_j a_ij v_ij``.

Here a gate nonlinearity follows the sum (as in the shared encoder, DESIGN.md §6) and the block adds its input
back when the irreps match (ResNet). For continuity when a neighbour crosses r_cut the softmax weights carry the
smooth polynomial cutoff, ``a_ij = c(r_ij) e^{q·k} / Σ_j' c(r_ij') e^{q·k'}``, and every value vanishes at r_cut
(its radial weights are an MLP without biases of a basis that vanishes there). Both pieces can be switched
off (``attention=False``: the NequIP sum ``Σ_j v_ij / √n̄``; ``embedding_skip=False``: a linear
self-interaction of ``f_k`` alone) to measure what each buys.
"""

from __future__ import annotations

import math

import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet, Gate
from torch import nn
from torch.nn import functional as F

from . import keys as K
from .config import EncoderConfig
from .encoder import ElementEmbedding, IrrepsSequential, uvu_tensor_product
from .graph import edge_vectors
from .radial import BesselBasis, polynomial_cutoff


class DosNetBlock(nn.Module):
    """One DosNet layer; ``forward(x, f0, sh, radial, cutoff, edge_index) -> (n_atoms, irreps_out.dim)``.

    Parameters
    ----------
    irreps_in : node features f_k;  irreps_f0 : initial embedding f_0 (scalars)
    irreps_sh : spherical harmonics;  irreps_target : wanted output irreps (unreachable ones dropped)
    n_key : channels of each key/query irrep (scalars and every l of the spherical harmonics)
    attention, embedding_skip : the two pieces of seed 001 (see the module docstring)
    """

    def __init__(self, irreps_in, irreps_f0, irreps_sh, irreps_target, n_radial: int, radial_hidden: int,
                 avg_num_neighbors: float, n_key: int = 8, attention: bool = True, embedding_skip: bool = True):
        super().__init__()
        self.irreps_in, self.irreps_f0, self.irreps_sh = o3.Irreps(irreps_in), o3.Irreps(irreps_f0), o3.Irreps(
            irreps_sh)
        target = o3.Irreps(irreps_target).simplify()
        self.attention, self.embedding_skip, self.avg_num_neighbors = attention, embedding_skip, avg_num_neighbors
        reachable = {ir_out for _, ir_in in self.irreps_in for _, ir_sh in self.irreps_sh for ir_out in ir_in * ir_sh}
        wanted = {ir for _, ir in target} | {o3.Irrep("0e")}
        self.value = uvu_tensor_product(self.irreps_in, self.irreps_sh, wanted)
        self.value_radial = FullyConnectedNet([n_radial, radial_hidden, self.value.weight_numel], F.silu)
        scalars = o3.Irreps([(m, ir) for m, ir in target if ir.l == 0 and ir in reachable])
        gated = o3.Irreps([(m, ir) for m, ir in target if ir.l > 0 and ir in reachable])
        self.gate = Gate(scalars, [F.silu if ir.p == 1 else torch.tanh for _, ir in scalars],
                         o3.Irreps(f"{gated.num_irreps}x0e") if gated.num_irreps else o3.Irreps(""),
                         [torch.sigmoid] if gated.num_irreps else [], gated)
        self.linear = o3.Linear(self.value.irreps_out, self.gate.irreps_in)  # Interaction = Linear(Atten)
        if embedding_skip:
            self.self_interaction = o3.FullyConnectedTensorProduct(self.irreps_in, self.irreps_f0, self.gate.irreps_in)
        else:
            self.self_interaction = o3.Linear(self.irreps_in, self.gate.irreps_in)
        if attention:
            # keys as TFN convolutions like the values, on n_key channels of f_j (cheap per edge):
            # k_ij = Linear(TP_uvu(Linear(f_j), Y(r̂_ij); w_k(|r_ij|)))
            irreps_key = o3.Irreps([(n_key, ir) for _, ir in self.irreps_sh]).simplify()
            narrow = o3.Irreps([(n_key, ir) for _, ir in self.irreps_in]).simplify()
            self.query = o3.Linear(self.irreps_in, irreps_key)
            self.key_in = o3.Linear(self.irreps_in, narrow)
            self.key = uvu_tensor_product(narrow, self.irreps_sh, {ir for _, ir in irreps_key})
            self.key_out = o3.Linear(self.key.irreps_out, irreps_key)
            self.key_radial = FullyConnectedNet([n_radial, radial_hidden, self.key.weight_numel], F.silu)
            self.dot = o3.FullyConnectedTensorProduct(irreps_key, irreps_key, "0e")
        self.irreps_out = self.gate.irreps_out
        self.residual = self.irreps_out == self.irreps_in

    def forward(self, x: torch.Tensor, f0: torch.Tensor, sh: torch.Tensor, radial: torch.Tensor,
                cutoff: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        receiver, sender = edge_index
        v = self.value(x[sender], sh, self.value_radial(radial))
        if self.attention:
            key = self.key_out(self.key(self.key_in(x)[sender], sh, self.key_radial(radial)))
            logits = self.dot(self.query(x)[receiver], key)[:, 0]
            top = torch.full((x.shape[0],), -torch.inf, dtype=logits.dtype, device=x.device)
            top = top.scatter_reduce(0, receiver, logits.detach(), "amax", include_self=True)
            w = cutoff * torch.exp(logits - top[receiver])
            z = torch.zeros(x.shape[0], dtype=w.dtype, device=x.device).index_add(0, receiver, w)
            v = v * (w / z[receiver].clamp(min=torch.finfo(w.dtype).tiny))[:, None]
            scale = 1.0
        else:
            scale = 1.0 / math.sqrt(self.avg_num_neighbors)
        message = torch.zeros(x.shape[0], v.shape[1], dtype=v.dtype, device=x.device).index_add(0, receiver, v)
        si = self.self_interaction(x, f0) if self.embedding_skip else self.self_interaction(x)
        out = self.gate(self.linear(message * scale) + si)
        return out + x if self.residual else out


class DosNetEncoder(nn.Module):
    """Element embedding f_0 followed by ``n_layers`` :class:`DosNetBlock`; same batch contract and output as
    :class:`chgdata.models.encoder.AtomEncoder` (atom features, O(3)-equivariant)."""

    def __init__(self, config: EncoderConfig, n_key: int = 8, attention: bool = True, embedding_skip: bool = True,
                 element_features: bool = False, n_skip: int = 0):
        super().__init__()
        self.config = config
        self.irreps_sh = o3.Irreps.spherical_harmonics(config.l_max, p=-1)
        self.irreps_in = o3.Irreps(f"{config.n_scalars}x0e")
        self.embedding = ElementEmbedding(config.n_elements, config.n_scalars,
                                          element_features or config.element_features)
        self.sh = o3.SphericalHarmonics(self.irreps_sh, normalize=True, normalization="component")
        self.radial = BesselBasis(config.r_cut, config.n_radial_basis, config.cutoff_p)
        # the skip's operand: f_0 itself, or a linear map of it to n_skip channels (the f_k ⊗ f_0 product has
        # mul_in · mul_f0 · mul_out weights per path: at DosNet's 259 channels the full width is too large)
        self.skip_proj = nn.Linear(config.n_scalars, n_skip, bias=False) if n_skip else None
        irreps_f0 = o3.Irreps(f"{n_skip}x0e") if n_skip else self.irreps_in
        self.blocks = IrrepsSequential.chain(self.irreps_in, lambda _, irreps: DosNetBlock(
            irreps, irreps_f0, self.irreps_sh, config.hidden_irreps(), config.n_radial_basis, config.radial_hidden,
            config.avg_num_neighbors, n_key, attention, embedding_skip), config.n_layers)
        self.irreps_out = self.blocks.irreps_out

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        vec = edge_vectors(batch)
        r = vec.norm(dim=-1)
        sh, radial = self.sh(vec), self.radial(r)
        cutoff = polynomial_cutoff(r, self.config.r_cut, self.config.cutoff_p)
        z = batch[K.ATOMIC_NUMBERS]
        f0 = x = self.embedding(z)
        if self.skip_proj is not None:
            f0 = self.skip_proj(f0)
        for block in self.blocks:
            x = block(x, f0, sh, radial, cutoff, batch[K.EDGE_INDEX])
        return x
