"""Charge-density model (seed 000): atom encoder + probe-edge head, and chunked prediction on grids."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet
from torch import nn
from torch.nn import functional as F

from . import keys as K
from .config import ChargeDensityConfig
from .encoder import AtomEncoder, GatedTensorProductBlock, IrrepsSequential, check_irreps
from .graph import probe_edge_vectors, structure_batch
from .head_ops import background_softmax, probe_edge_geometry
from .kinds import is_ensemble
from .neighbors import grid_positions, grid_probe_edges, probe_edges
from .radial import BesselBasis
from .stacked_head import stack_heads


class DensityHead(nn.Module):
    """Probe-edge head: ρ_k = Σ_i w_ik s_ik over atoms i within ``probe_r_cut`` of probe k.

    Edge features start from the atom features, ``G⁰_ik = D_i``, and pass through ``n_edge_layers``
    tensor-product layers with ``Y(r̂_ik)`` and radial weights, without aggregation; the last layer keeps
    ``n_edge_scalars`` even scalars. Then

    * ``w_geo,ik = 1 + u³(−6u² + 15u − 10)``, ``u = r_ik / probe_r_cut``;
    * context ``g_k = Σ_i w_geo,ik G_ik``; logits ``l_ik = MLP([G_ik, g_k])``; intensity ``s_ik = MLP(G_ik)``;
    * ``w_ik = w_geo,ik e^{l_ik} / (e^{b} + Σ_j w_geo,jk e^{l_jk})``: a softmax over the atoms of k with
      ``log w_geo`` added to the logits, plus one background slot with learnable logit ``b`` and zero
      intensity. Every term vanishes with ``w_geo`` (C² at the cutoff), so ρ stays C² when an atom enters or
      leaves the sphere, including the last one, and a probe without atoms gets exactly 0.

    ``forward(atom_features, batch)`` returns (n_probes, n_spin_channels) in the target's units (e/Å^3).
    """

    def __init__(self, config: ChargeDensityConfig, irreps_atom):
        super().__init__()
        enc = config.encoder
        self.config = config
        self.irreps_in = o3.Irreps(irreps_atom)
        self.irreps_sh = o3.Irreps.spherical_harmonics(enc.l_max, p=-1)
        self.sh = o3.SphericalHarmonics(self.irreps_sh, normalize=False, normalization="component")
        self.radial = BesselBasis(config.probe_r_cut, enc.n_radial_basis, enc.cutoff_p)
        def edge_layer(m: int, irreps) -> GatedTensorProductBlock:  # the last one keeps scalars only
            target = f"{config.n_edge_scalars}x0e" if m == config.n_edge_layers - 1 else enc.hidden_irreps()
            return GatedTensorProductBlock(irreps, self.irreps_sh, target, enc.n_radial_basis, enc.radial_hidden)

        self.layers = IrrepsSequential.chain(self.irreps_in, edge_layer, config.n_edge_layers)
        check_irreps(f"{config.n_edge_scalars}x0e", self.layers.irreps_out, "density head output")
        self.irreps_out = o3.Irreps(f"{config.n_spin_channels}x0e")
        c, h = config.n_edge_scalars, config.mlp_hidden
        self.logit_mlp = FullyConnectedNet([2 * c, h, 1], F.silu)
        self.intensity_mlp = FullyConnectedNet([c, h, config.n_spin_channels], F.silu)
        self.background_logit = nn.Parameter(torch.zeros(()))

    def forward(self, atom_features: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        check = atom_features.shape[-1] == self.irreps_in.dim
        if not check:
            raise ValueError(f"atom features have {atom_features.shape[-1]} columns, expected {self.irreps_in}")
        n_probes = batch[K.PROBE_POSITIONS].shape[0]
        k, i = batch[K.PROBE_EDGE_INDEX]
        cfg = self.config
        _, sh, radial, w_geo = probe_edge_geometry(probe_edge_vectors(batch), cfg.probe_r_cut, cfg.probe_sh, self.sh,
                                                  self.radial)
        g = atom_features[i]
        for m, layer in enumerate(self.layers):  # the first layer's self-interaction is per atom, then gathered
            g = layer(g, sh, radial, self_term=layer.self_interaction(atom_features)[i] if m == 0 else None)
        dt, dev = w_geo.dtype, g.device  # under autocast g may be bf16: weights and sums stay in w_geo's dtype
        g = g.to(dt)
        context = torch.zeros(n_probes, g.shape[1], dtype=dt, device=dev).index_add(0, k, g * w_geo[:, None])
        logit = self.logit_mlp(torch.cat([g, context[k]], dim=-1)).squeeze(-1)
        intensity = self.intensity_mlp(g) * self.config.output_scale
        return background_softmax(k, logit, w_geo, intensity, self.background_logit.to(dt).expand(n_probes))


class ChargeDensityModel(nn.Module):
    """Encoder (once per structure) + density head (per probe). ``forward(batch) -> (n_probes, n_spin_channels)``."""

    def __init__(self, config: ChargeDensityConfig):
        super().__init__()
        self.config = config
        self.encoder = AtomEncoder(config.encoder)
        self.head = DensityHead(config, self.encoder.irreps_out)
        self.irreps_out = self.head.irreps_out

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.encoder(batch), batch)


@dataclass
class GridTiming:
    """Seconds spent on the atom graph + encoder, the probe graph, and the head (device-synchronised)."""

    encoder_s: float = 0.0
    graph_s: float = 0.0
    head_s: float = 0.0
    chunks: int = 0
    probe_edges: int = 0

    @property
    def total_s(self) -> float:
        return self.encoder_s + self.graph_s + self.head_s


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _members(model) -> list:
    return list(model.members) if is_ensemble(model) else [model]


def _encode(members, positions, atomic_numbers, cell, dtype, device) -> tuple[list[torch.Tensor], dict]:
    """Each member's atom features (one atom graph per encoder cutoff) and a batch holding the structure."""
    batches: dict[float, dict] = {}
    features = []
    for m in members:
        r_cut = m.config.encoder.r_cut
        if r_cut not in batches:
            batches[r_cut] = structure_batch(positions, atomic_numbers, cell, r_cut, dtype=dtype, device=device)
        features.append(m.encoder(batches[r_cut]))
    return features, next(iter(batches.values()))


def _heads(members, stacked: bool, matmul_dtype: torch.dtype | None = None):
    """The members' heads as one callable ``(features, batch) -> (M, n_probes, channels)``: stacked in one pass
    (:mod:`chgdata.models.stacked_head`, its per-edge products in ``matmul_dtype``) where their shape allows and
    ``stacked``, else member by member."""
    one_pass = stack_heads(members, matmul_dtype) if stacked else None
    if one_pass is not None:
        return one_pass
    if matmul_dtype is not None:
        raise ValueError("a matmul dtype needs the one-pass head (stacked=True and a stackable model)")
    return lambda features, batch: torch.stack([m.head(f, batch) for m, f in zip(members, features)])


@torch.no_grad()
def member_grids(model, positions, atomic_numbers, cell, grid_shape: Sequence[int], chunk_size: int | None = None,
                 device: str | torch.device = "cpu", callback: Callable[[int, int], None] | None = None,
                 timing: GridTiming | None = None, dtype: torch.dtype | None = None, mean: bool = False,
                 stacked: bool = True, matmul_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Each member's output on the full grid, (n_members, nx, ny, nz, n_channels) on the CPU, e/Å³ (a single
    model is one member); ``mean=True`` returns their mean, (nx, ny, nz, n_channels), in one grid's memory.

    The encoders run once; the heads run over x-slabs of about ``chunk_size`` points whose probe edges come from
    :func:`~chgdata.models.neighbors.grid_probe_edges` on ``device``, built once for all members, and (with
    ``stacked``) evaluated in one pass. ``callback(done_points, total_points)`` reports progress, ``timing``
    collects per-stage seconds, ``matmul_dtype`` (e.g. ``torch.bfloat16``) is the one-pass head's product dtype.
    """
    device = torch.device(device)
    members = _members(model)
    cfg = members[0].config
    if any(m.config.probe_r_cut != cfg.probe_r_cut for m in members):  # no shared probe graph: one at a time
        outs = [member_grids(m, positions, atomic_numbers, cell, grid_shape, chunk_size, device, None, timing,
                             dtype, stacked=stacked, matmul_dtype=matmul_dtype)[0] for m in members]
        out = torch.stack(outs)
        return out.mean(0) if mean else out
    chunk_size = int(chunk_size or cfg.chunk_size)
    dtype = dtype or next(model.parameters()).dtype
    nx, ny, nz = (int(n) for n in grid_shape)
    t0 = time.perf_counter()
    features, batch = _encode(members, positions, atomic_numbers, cell, dtype, device)
    heads = _heads(members, stacked, matmul_dtype)
    _sync(device)
    if timing is not None:
        timing.encoder_s += time.perf_counter() - t0
    pos_t, cell_t = batch[K.POSITIONS], batch[K.CELL][0]
    n_m, n_ch = len(members), cfg.n_spin_channels
    out = torch.empty((nx, ny, nz, n_ch) if mean else (n_m, nx, ny, nz, n_ch), dtype=dtype)
    slab = max(1, chunk_size // (ny * nz))
    for x0 in range(0, nx, slab):
        x_range = (x0, min(nx, x0 + slab))
        t1 = time.perf_counter()
        probes = grid_positions(cell_t, (nx, ny, nz), x_range)
        edge_index, shift = grid_probe_edges(pos_t, cell_t, (nx, ny, nz), cfg.probe_r_cut, x_range)
        _sync(device)
        t2 = time.perf_counter()
        batch[K.PROBE_POSITIONS] = probes
        batch[K.PROBE_BATCH] = torch.zeros(len(probes), dtype=torch.int64, device=device)
        batch[K.PROBE_EDGE_INDEX] = edge_index.to(device)
        batch[K.PROBE_EDGE_CELL_SHIFT] = shift.to(device)
        res = heads(features, batch).to(dtype).cpu().reshape(n_m, x_range[1] - x_range[0], ny, nz, n_ch)
        if mean:
            out[x_range[0]:x_range[1]] = res.mean(0)
        else:
            out[:, x_range[0]:x_range[1]] = res
        t3 = time.perf_counter()
        if timing is not None:
            timing.graph_s += t2 - t1
            timing.head_s += t3 - t2
            timing.chunks += 1
            timing.probe_edges += int(edge_index.shape[1])
        if callback is not None:
            callback(x_range[1] * ny * nz, nx * ny * nz)
    return out


def predict_grid(model, positions, atomic_numbers, cell, grid_shape: Sequence[int], chunk_size: int | None = None,
                 device: str | torch.device = "cpu", callback: Callable[[int, int], None] | None = None,
                 timing: GridTiming | None = None, dtype: torch.dtype | None = None,
                 stacked: bool = True, matmul_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Model output on the full grid, (nx, ny, nz, n_channels) on the CPU in the model's dtype, e/Å³; an
    ensemble's is its members' mean (:func:`member_grids` with ``mean=True``). Output is written into one
    preallocated CPU array, so peak host memory is one grid, not two. ``stacked=False`` runs the heads member by
    member through their modules (the reference the one-pass path is tested and benchmarked against)."""
    return member_grids(model, positions, atomic_numbers, cell, grid_shape, chunk_size, device, callback, timing,
                        dtype, mean=True, stacked=stacked, matmul_dtype=matmul_dtype)


@torch.no_grad()
def density_in_chunks(
    model: ChargeDensityModel,
    positions,
    atomic_numbers,
    cell,
    grid_shape: tuple[int, int, int] | None = None,
    probe_positions=None,
    chunk_size: int | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Predict the density of one structure on a full grid or at given points, in bounded memory.

    The encoders run once; probe edges are built chunk by chunk (grid: x-slabs via
    :func:`~chgdata.models.neighbors.grid_probe_edges` on ``device``; points: cKDTree on the CPU); an
    ensemble gives its members' mean.

    Parameters
    ----------
    model : ChargeDensityModel or DensityEnsemble
    positions : (n_atoms, 3) Å; atomic_numbers : (n_atoms,); cell : (3, 3) Å, rows are lattice vectors
    grid_shape : (n_x, n_y, n_z) of the points ``(n / N) @ cell``; or None with ``probe_positions`` given
    probe_positions : (n_probes, 3) Å
    chunk_size : probes per chunk (default ``model.config.chunk_size``); a grid chunk holds whole x-slices

    Returns
    -------
    (n_x, n_y, n_z, n_spin_channels) tensor for a grid, (n_probes, n_spin_channels) for points; e/Å^3, on CPU.
    """
    if (grid_shape is None) == (probe_positions is None):
        raise ValueError("give exactly one of grid_shape and probe_positions")
    if grid_shape is not None:
        return predict_grid(model, positions, atomic_numbers, cell, grid_shape, chunk_size, device, dtype=dtype)
    members = _members(model)
    cfg = members[0].config
    if any(m.config.probe_r_cut != cfg.probe_r_cut for m in members):
        return sum(density_in_chunks(m, positions, atomic_numbers, cell, None, probe_positions, chunk_size, device,
                                     dtype) for m in members) / len(members)
    chunk_size = int(chunk_size or cfg.chunk_size)
    dtype = dtype or next(model.parameters()).dtype
    features, batch = _encode(members, positions, atomic_numbers, cell, dtype, device)
    heads = _heads(members, stacked=True)
    outputs = []
    probes_np = np.asarray(probe_positions, np.float64).reshape(-1, 3)
    pos_np, cell_np = np.asarray(positions, np.float64), np.asarray(cell, np.float64)
    for start in range(0, len(probes_np), chunk_size):
        chunk = probes_np[start : start + chunk_size]
        edge_index, shift = probe_edges(chunk, pos_np, cell_np, cfg.probe_r_cut)
        batch[K.PROBE_POSITIONS] = torch.tensor(chunk, dtype=dtype, device=device)
        batch[K.PROBE_BATCH] = torch.zeros(len(chunk), dtype=torch.int64, device=device)
        batch[K.PROBE_EDGE_INDEX] = torch.as_tensor(edge_index).to(device)
        batch[K.PROBE_EDGE_CELL_SHIFT] = torch.as_tensor(shift).to(device)
        outputs.append(heads(features, batch).mean(0).cpu())
    return torch.cat(outputs) if outputs else torch.zeros(0, cfg.n_spin_channels)
