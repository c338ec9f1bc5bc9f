"""NequIP-like equivariant atom encoder built from e3nn tensor products and gates."""

from __future__ import annotations

import math

import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet, Gate
from torch import nn
from torch.nn import functional as F

from . import keys as K
from .config import EncoderConfig
from .graph import edge_vectors
from .radial import BesselBasis


def _irreps(x, name: str) -> o3.Irreps:
    try:
        return o3.Irreps(x)
    except Exception as err:  # e3nn raises ValueError/AssertionError on malformed strings
        raise ValueError(f"{name}: cannot parse irreps {x!r}") from err


def check_irreps(expected, got, where: str) -> None:
    """Raise ``ValueError`` unless two irreps are identical (after simplification)."""
    if o3.Irreps(expected).simplify() != o3.Irreps(got).simplify():
        raise ValueError(f"{where}: irreps mismatch, expected {o3.Irreps(expected)} but got {o3.Irreps(got)}")


def scalar_indices(irreps) -> torch.Tensor:
    """Feature indices of the even scalars (0e) of ``irreps``, for invariant read-outs."""
    idx = []
    for (mul, ir), sl in zip(o3.Irreps(irreps), o3.Irreps(irreps).slices()):
        if ir == o3.Irrep("0e"):
            idx.extend(range(sl.start, sl.start + mul))
    return torch.tensor(idx, dtype=torch.int64)


def uvu_tensor_product(irreps_in, irreps_sh, wanted: set) -> o3.TensorProduct:
    """Per-channel ("uvu") tensor product ``irreps_in ⊗ Y`` onto the irreps in ``wanted``, weights given per edge
    (``shared_weights=False``), output irreps sorted."""
    irreps_in, irreps_sh = o3.Irreps(irreps_in), o3.Irreps(irreps_sh)
    mid, instructions = [], []
    for i, (mul, ir_in) in enumerate(irreps_in):
        for j, (_, ir_sh) in enumerate(irreps_sh):
            for ir_out in ir_in * ir_sh:
                if ir_out in wanted:
                    instructions.append((i, j, len(mid), "uvu", True))
                    mid.append((mul, ir_out))
    irreps_mid, perm, _ = o3.Irreps(mid).sort()
    instructions = [(i, j, perm[k], mode, train) for i, j, k, mode, train in instructions]
    return o3.TensorProduct(irreps_in, irreps_sh, irreps_mid, instructions, shared_weights=False,
                            internal_weights=False)


class GatedTensorProductBlock(nn.Module):
    """Tensor product with spherical harmonics, radial weights, self-interaction, gate (and residual).

    ``out = Gate(Linear(m) + Linear_self(x))`` (+ ``x`` when ``irreps_in == irreps_out``), with
    ``m = TP(x_j, Y(r̂_ij); w(radial_ij))`` summed over neighbours j and divided by ``sqrt(avg_num_neighbors)``
    (message passing), or ``m = TP(x_e, Y_e; w_e)`` per edge when ``avg_num_neighbors`` is None (the
    probe-edge layers of the density head, which never aggregate).

    Parameters
    ----------
    irreps_in : input feature irreps
    irreps_sh : spherical-harmonics irreps
    irreps_target : wanted output irreps; those not reachable from ``irreps_in ⊗ irreps_sh`` are dropped
    n_radial : radial basis size
    radial_hidden : hidden width of the radial MLP
    avg_num_neighbors : float or None (None: per-edge mode)

    Attributes
    ----------
    irreps_in, irreps_out : o3.Irreps
    """

    def __init__(self, irreps_in, irreps_sh, irreps_target, n_radial: int, radial_hidden: int,
                 avg_num_neighbors: float | None = None):
        super().__init__()
        self.irreps_in = _irreps(irreps_in, "irreps_in")
        self.irreps_sh = _irreps(irreps_sh, "irreps_sh")
        target = _irreps(irreps_target, "irreps_target").simplify()
        self.avg_num_neighbors = avg_num_neighbors

        reachable = {ir_out for _, ir_in in self.irreps_in for _, ir_sh in self.irreps_sh for ir_out in ir_in * ir_sh}
        wanted = {ir for _, ir in target} | {o3.Irrep("0e")}
        self.tp = uvu_tensor_product(self.irreps_in, self.irreps_sh, wanted)
        self.scalar_paths = _scalar_paths(self.tp)
        self.radial = FullyConnectedNet([n_radial, radial_hidden, self.tp.weight_numel], F.silu)

        scalars = o3.Irreps([(m, ir) for m, ir in target if ir.l == 0 and ir in reachable])
        gated = o3.Irreps([(m, ir) for m, ir in target if ir.l > 0 and ir in reachable])
        if scalars.dim == 0:
            raise ValueError(f"irreps_target {target} has no scalar reachable from {self.irreps_in} ⊗ {self.irreps_sh}")
        self.gate = Gate(
            scalars, [F.silu if ir.p == 1 else torch.tanh for _, ir in scalars],
            o3.Irreps(f"{gated.num_irreps}x0e") if gated.num_irreps else o3.Irreps(""),
            [torch.sigmoid] if gated.num_irreps else [],
            gated,
        )
        self.linear = o3.Linear(self.tp.irreps_out, self.gate.irreps_in)
        self.self_interaction = o3.Linear(self.irreps_in, self.gate.irreps_in)
        self.irreps_out = self.gate.irreps_out
        self.residual = self.irreps_out == self.irreps_in

    def forward(self, x: torch.Tensor, sh: torch.Tensor, radial: torch.Tensor,
                edge_index: torch.Tensor | None = None, self_term: torch.Tensor | None = None) -> torch.Tensor:
        """x: (n_nodes or n_edges, irreps_in.dim); sh: (n_edges, irreps_sh.dim); radial: (n_edges, n_radial).

        ``self_term``: ``self_interaction(x)`` when the caller has it cheaper (per-edge mode on gathered atom
        features: the linear map is applied once per atom and gathered, instead of once per edge).
        """
        if x.shape[-1] != self.irreps_in.dim:
            raise ValueError(f"input has {x.shape[-1]} features, irreps_in {self.irreps_in} has {self.irreps_in.dim}")
        weight = self.radial(radial)
        if edge_index is None:
            message = self.tp(x, sh, weight) if self.scalar_paths is None else _scalar_tp(self.scalar_paths, x, sh,
                                                                                         weight)
        else:
            receiver, sender = edge_index
            edge_msg = self.tp(x[sender], sh, weight)
            message = torch.zeros(x.shape[0], edge_msg.shape[1], dtype=edge_msg.dtype, device=x.device)
            message = message.index_add(0, receiver, edge_msg) / math.sqrt(self.avg_num_neighbors)
        out = self.gate(self.linear(message) + (self.self_interaction(x) if self_term is None else self_term))
        return out + x if self.residual else out


def _scalar_paths(tp: o3.TensorProduct) -> list[tuple] | None:
    """Slices and constants of a TP whose every path is ``l ⊗ l → 0e`` in "uvu" mode (a head layer that keeps
    scalars only), or None. Each path is then ``out_u = c · w_u · Σ_m x_{u,m} Y_m``; the constant ``c`` is read
    off e3nn's own TP once (float64), so the fast form stays e3nn's normalisation by construction."""
    ins = tp.instructions
    if not ins or any(i.connection_mode != "uvu" or tp.irreps_out[i.i_out].ir != o3.Irrep("0e")
                      or tp.irreps_in1[i.i_in1].ir.l != tp.irreps_in2[i.i_in2].ir.l for i in ins):
        return None
    s1, s2, so = tp.irreps_in1.slices(), tp.irreps_in2.slices(), tp.irreps_out.slices()
    rng = torch.Generator().manual_seed(0)
    x = torch.randn(4, tp.irreps_in1.dim, generator=rng, dtype=torch.float64)
    y = torch.randn(4, tp.irreps_in2.dim, generator=rng, dtype=torch.float64)
    w = torch.randn(4, tp.weight_numel, generator=rng, dtype=torch.float64)
    with torch.no_grad():
        ref = tp.to(torch.float64)(x, y, w)
        tp.to(torch.get_default_dtype())
    paths, w0 = [], 0
    for i in ins:
        mul, dim = tp.irreps_in1[i.i_in1].mul, tp.irreps_in1[i.i_in1].ir.dim
        path = [s1[i.i_in1], mul, dim, s2[i.i_in2], slice(w0, w0 + mul), so[i.i_out], 1.0]
        w0 += mul
        plain = _scalar_path(path, x, y, w)
        path[-1] = float((ref[:, so[i.i_out]] * plain).sum() / (plain * plain).sum())
        paths.append(tuple(path))
    return paths


def _scalar_path(path, x, y, w) -> torch.Tensor:
    xs, mul, dim, ys, ws, _, c = path
    dot = torch.einsum("eum,em->eu", x[:, xs].reshape(-1, mul, dim), y[:, ys])
    return c * w[:, ws] * dot


def _scalar_tp(paths, x: torch.Tensor, sh: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The scalar-only TP of :func:`_scalar_paths`: per-channel dot products, no Clebsch–Gordan tensors."""
    return torch.cat([_scalar_path(p, x, sh, weight) for p in paths], dim=-1)


class IrrepsSequential(nn.ModuleList):
    """List of layers whose ``irreps_out``/``irreps_in`` must chain; checked at construction (``ValueError``)."""

    def __init__(self, layers, irreps_in=None):
        super().__init__(layers)
        prev = None if irreps_in is None else o3.Irreps(irreps_in)
        for n, layer in enumerate(self):
            if prev is not None:
                check_irreps(layer.irreps_in, prev, f"layer {n} ({type(layer).__name__}) irreps_in")
            prev = layer.irreps_out
        self.irreps_in = self[0].irreps_in
        self.irreps_out = self[-1].irreps_out

    @classmethod
    def chain(cls, irreps_in, make_layer, n: int) -> IrrepsSequential:
        """``n`` layers ``make_layer(index, irreps)``, each built on the previous layer's ``irreps_out``."""
        layers, irreps = [], o3.Irreps(irreps_in)
        for i in range(n):
            layers.append(make_layer(i, irreps))
            irreps = layers[-1].irreps_out
        return cls(layers, irreps_in)


def element_descriptors(n_elements: int) -> torch.Tensor:
    """(n_elements, 10) chemical descriptors per atomic number (row 0 and unknown values zero): group/18,
    row/7, Pauling electronegativity/4, atomic radius/3 Å, Mendeleev number/100, s/p/d/f block one-hot,
    is_metal. They let an element embedding interpolate between chemically similar elements."""
    import warnings

    from pymatgen.core.periodic_table import Element

    table = torch.zeros(n_elements, 10)
    for z in range(1, min(n_elements, 104)):
        el = Element.from_Z(z)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            x = [el.group / 18, el.row / 7, (el.X if el.X == el.X else 0.0) / 4,
                 float(el.atomic_radius or 0.0) / 3, float(el.mendeleev_no or 0) / 100]
        x += [float(el.block == b) for b in "spdf"] + [float(el.is_metal)]
        table[z] = torch.tensor(x)
    return table


class ElementEmbedding(nn.Embedding):
    """Learned per-element vector, plus (``descriptors=True``) a linear map of :func:`element_descriptors`, so
    that an element seen in few training compounds borrows from chemically similar ones."""

    def __init__(self, n_elements: int, dim: int, descriptors: bool = False):
        super().__init__(n_elements, dim)
        self.use_descriptors = descriptors
        if descriptors:
            self.register_buffer("descriptors", element_descriptors(n_elements), persistent=False)
            self.descriptor_embedding = nn.Linear(self.descriptors.shape[1], dim, bias=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = super().forward(z)
        return out + self.descriptor_embedding(self.descriptors[z]) if self.use_descriptors else out


class AtomEncoder(nn.Module):
    """Element embedding followed by ``n_layers`` interaction blocks on the periodic atom graph.

    ``forward(batch)`` reads ``POSITIONS, ATOMIC_NUMBERS, ATOM_BATCH, CELL, EDGE_INDEX, EDGE_CELL_SHIFT`` and
    returns atom features ``D`` of shape (n_atoms, irreps_out.dim), equivariant under O(3).
    """

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        self.irreps_sh = o3.Irreps.spherical_harmonics(config.l_max, p=-1)
        self.irreps_in = o3.Irreps(f"{config.n_scalars}x0e")
        self.embedding = ElementEmbedding(config.n_elements, config.n_scalars, config.element_features)
        self.sh = o3.SphericalHarmonics(self.irreps_sh, normalize=True, normalization="component")
        self.radial = BesselBasis(config.r_cut, config.n_radial_basis, config.cutoff_p)
        self.blocks = IrrepsSequential.chain(self.irreps_in, lambda _, irreps: GatedTensorProductBlock(
            irreps, self.irreps_sh, config.hidden_irreps(), config.n_radial_basis, config.radial_hidden,
            config.avg_num_neighbors), config.n_layers)
        self.irreps_out = self.blocks.irreps_out

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        vec = edge_vectors(batch)
        sh = self.sh(vec)
        radial = self.radial(vec.norm(dim=-1))
        x = self.embedding(batch[K.ATOMIC_NUMBERS])
        for block in self.blocks:
            x = block(x, sh, radial, batch[K.EDGE_INDEX])
        return x
