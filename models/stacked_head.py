"""The density heads of several models evaluated in one pass, for inference (no gradients).

:class:`~chgdata.models.density.DensityHead` run member by member pays for the probe graph, the edge geometry
and every per-edge gather once per member, and e3nn's generic modules (``TensorProduct``, ``Linear``, ``Gate``,
``FullyConnectedNet``) for their generality. :class:`StackedDensityHead` computes the same numbers:

* shared by all members: probe edges, edge vectors, ``Y(r)``, the Bessel basis, ``w_geo``, edges sorted by atom;
* the scalar tensor product without gathering atom features onto edges: for an atom ``a`` with features
  ``x_a``, ``dot_e = Y_e · B_a`` where ``B_a`` (sh_dim × n_paths) holds ``c · x_a`` laid out per path, one
  small matmul per atom over that atom's edges (all members side by side in its columns);
* the members' weights stacked (``bmm`` over the member axis); e3nn's normalisations are folded into plain
  matrices once, read off e3nn's own modules (``Linear`` and ``Gate`` probed in float64 and checked);
* ``MLP([g, context_k])``'s first layer split: ``g W_g + (context W_c)_k``, the context half once per probe.

Only the head shape the shipped models use is stacked (one edge layer with scalar paths, a scalars-only gate,
members sharing ``probe_r_cut``, ``probe_sh`` and radial basis); :func:`stack_heads` returns None otherwise and
callers fall back to member-by-member. The result equals the members' mean to float rounding (tested).
"""

from __future__ import annotations

import torch
from e3nn import o3
from torch import nn
from torch.nn.functional import silu

from . import keys as K
from .graph import probe_edge_vectors
from .head_ops import background_softmax, probe_edge_geometry


def _in_float64(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` evaluated with its parameters and buffers in float64 on the CPU, the module left as it is."""
    state = {name: t.detach().to("cpu", torch.float64 if t.is_floating_point() else t.dtype)
             for name, t in [*module.named_parameters(), *module.named_buffers()]}
    with torch.no_grad():
        return torch.func.functional_call(module, state, (x,))


def _silu_mlp(fcn) -> tuple[torch.Tensor, torch.Tensor]:
    """An e3nn ``FullyConnectedNet([n_in, n_hidden, n_out], silu)`` as ``(w1, w2)`` with
    ``fcn(x) = silu(x @ w1) @ w2``: its ``1/sqrt(fan_in)``, variances and the activation's normalisation folded in."""
    first, last = list(fcn)
    w1 = first.weight.detach() / (first.h_in * first.var_in) ** 0.5
    w2 = last.weight.detach() / (last.h_in * last.var_in / last.var_out) ** 0.5
    return w1, w2 * (_silu_scale(first.act, 4) * first.var_out ** 0.5)


def _scalars_only_linear(linear: o3.Linear) -> torch.Tensor | None:
    """The matrix of an ``o3.Linear`` between scalar irreps without biases, or None."""
    if any(ir.l for _, ir in linear.irreps_in) or any(ir.l for _, ir in linear.irreps_out):
        return None
    n = linear.irreps_in.dim
    w, zero = _in_float64(linear, torch.eye(n, dtype=torch.float64)), _in_float64(linear, torch.zeros(1, n).double())
    return None if zero.abs().max() > 0 else w


def _silu_scale(fn, dim: int) -> float | None:
    """``c`` with ``fn(x) = c · silu(x)`` (checked on random values in float64): e3nn's moment-normalised SiLU,
    or a gate over even scalars only; None for anything else."""
    x = torch.randn(64, dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = _in_float64(fn, x) if isinstance(fn, nn.Module) else fn(x)
    if y.shape != x.shape:
        return None
    c = float((y * silu(x)).sum() / (silu(x) ** 2).sum())
    return c if torch.allclose(y, c * silu(x), rtol=1e-12, atol=1e-12) else None


def _gate_scale(gate) -> float | None:
    scalars = all(ir.l == 0 and ir.p == 1 for _, ir in gate.irreps_in) and gate.irreps_in == gate.irreps_out
    return _silu_scale(gate, gate.irreps_in.dim) if scalars else None


def _stackable(head) -> bool:
    layer = head.layers[0]
    return (len(head.layers) == 1 and layer.scalar_paths is not None and not layer.residual
            and _scalars_only_linear(layer.linear) is not None and _gate_scale(layer.gate) is not None
            and all(_silu_scale(f.act, 4) is not None for mlp in (head.logit_mlp, head.intensity_mlp, layer.radial)
                    for f in list(mlp)[:-1])
            and len(head.logit_mlp) == len(head.intensity_mlp) == 2 and len(layer.radial) == 2)


class StackedDensityHead(nn.Module):
    """``forward(features, batch) -> (n_members, n_probes, n_spin_channels)``: each member's head output on the
    probes of ``batch`` (e/Å³), ``features`` a list of each member's atom features. Build with
    :func:`stack_heads`."""

    def __init__(self, heads):
        super().__init__()
        h0 = heads[0]
        self.config, self.sh, self.radial = h0.config, h0.sh, h0.radial
        self.n_members = len(heads)
        self.matmul_dtype: torch.dtype | None = None
        layer0 = h0.layers[0]
        self.sh_dim = layer0.irreps_sh.dim
        self._paths(layer0.scalar_paths)
        c = h0.config.n_edge_scalars
        stack = lambda ms: torch.stack(ms).contiguous()  # noqa: E731
        rad = [_silu_mlp(h.layers[0].radial) for h in heads]
        logit = [_silu_mlp(h.logit_mlp) for h in heads]
        inten = [_silu_mlp(h.intensity_mlp) for h in heads]
        gate = [_gate_scale(h.layers[0].gate) for h in heads]  # folded into the maps that read g
        self.hidden = logit[0][0].shape[1]
        self.self_interactions = nn.ModuleList(h.layers[0].self_interaction for h in heads)
        dtype = rad[0][0].dtype
        self.register_buffer("radial_w1", stack([w1 for w1, _ in rad]))
        self.register_buffer("radial_w2", stack([w2[:, self.weight_perm] for _, w2 in rad]))  # paths' order
        self.register_buffer("linear_w", stack([_scalars_only_linear(h.layers[0].linear) for h in heads]).to(dtype))
        self.register_buffer("edge_w1", stack([torch.cat([lg[0][:c], it[0]], 1) * s for lg, it, s in
                                                zip(logit, inten, gate)]))
        self.register_buffer("context_w1", stack([lg[0][c:] * s for lg, s in zip(logit, gate)]))
        self.register_buffer("logit_w2", stack([lg[1] for lg in logit]))
        self.register_buffer("intensity_w2", stack([it[1] * h.config.output_scale for it, h in zip(inten, heads)]))
        self.register_buffer("background", torch.stack([h.background_logit.detach() for h in heads]))

    def _paths(self, paths) -> None:
        """Index maps from atom features to ``B_a`` (sh_dim × n_paths) and from paths to the TP's weights."""
        src, rows, cols, consts, perm = [], [], [], [], []
        for xs, mul, dim, ys, ws, so, c in paths:
            for u in range(mul):
                for m in range(dim):
                    src.append(xs.start + u * dim + m)
                    rows.append(ys.start + m)
                    cols.append(so.start + u)
                    consts.append(c)
                perm.append((so.start + u, ws.start + u))
        self.n_paths = len(perm)
        self.register_buffer("b_src", torch.tensor(src))
        self.register_buffer("b_index", torch.tensor(rows) * self.n_paths + torch.tensor(cols))
        self.register_buffer("b_const", torch.tensor(consts, dtype=torch.float64))
        self.weight_perm = [w for _, w in sorted(perm)]

    def _basis_matrices(self, features: list[torch.Tensor]) -> torch.Tensor:
        """(n_atoms, M, sh_dim, n_paths): ``B_a`` of every member."""
        out = []
        for x in features:
            b = x.new_zeros(x.shape[0], self.sh_dim * self.n_paths)
            b[:, self.b_index] = x[:, self.b_src] * self.b_const.to(x.dtype)
            out.append(b.view(-1, self.sh_dim, self.n_paths))
        return torch.stack(out, dim=1)

    @torch.no_grad()
    def forward(self, features: list[torch.Tensor], batch: dict[str, torch.Tensor],
                block: int | None = None) -> torch.Tensor:
        """``block``: edges per step of the per-edge work; by default 2048 on the CPU, where its temporaries then
        stay in cache (2.6-3.3x faster than one block: shipped ensemble, Si8 30³, one thread), and all on a GPU, where
        every step costs kernel launches. ``self.matmul_dtype`` (e.g. ``torch.bfloat16``; None: the features'
        dtype) is the dtype of the per-edge products; sums over edges and the softmax stay in the features'."""
        cfg, n_m = self.config, self.n_members
        n_probes = batch[K.PROBE_POSITIONS].shape[0]
        k, i = batch[K.PROBE_EDGE_INDEX]
        order = torch.argsort(i, stable=True)  # edges grouped by atom: one matmul per atom
        k, i = k[order], i[order]
        vec = probe_edge_vectors({**batch, K.PROBE_EDGE_INDEX: torch.stack([k, i]),
                                  K.PROBE_EDGE_CELL_SHIFT: batch[K.PROBE_EDGE_CELL_SHIFT][order]})
        _, sh, radial, w_geo = probe_edge_geometry(vec, cfg.probe_r_cut, cfg.probe_sh, self.sh, self.radial)
        dt, dev, n_e = vec.dtype, vec.device, len(k)
        mt = self.matmul_dtype or dt
        block = block or (2048 if dev.type == "cpu" else max(n_e, 1))
        w = {name: buf.to(mt) for name, buf in self.named_buffers() if buf.is_floating_point() and name != "background"}
        sh, radial = sh.to(mt), radial.to(mt)

        basis = self._basis_matrices(features).to(mt)
        ends = torch.cumsum(torch.bincount(i, minlength=basis.shape[0]), 0).tolist()
        self_term = torch.stack([si(x) for si, x in zip(self.self_interactions, features)]).to(mt)  # (M, atoms, C)
        context = torch.zeros(n_m, n_probes, self.config.n_edge_scalars, dtype=dt, device=dev)
        blocks = []  # per block of edges: silu of the gate's input (the gate's scale is folded into what reads it)
        for e0 in range(0, n_e, block):
            e1 = min(n_e, e0 + block)
            segments = list(_segments(ends, e0, e1))
            dot = torch.empty(n_m, e1 - e0, self.n_paths, dtype=mt, device=dev)
            for a, s0, s1 in segments:
                dot[:, s0 - e0:s1 - e0] = torch.matmul(sh[s0:s1], basis[a])
            hidden = silu(torch.matmul(radial[e0:e1], w["radial_w1"]))  # (M, edges, hidden)
            pre = torch.bmm(torch.bmm(hidden, w["radial_w2"]).mul_(dot), w["linear_w"])
            for a, s0, s1 in segments:
                pre[:, s0 - e0:s1 - e0] += self_term[:, a, None]
            g = silu(pre, inplace=True)
            context.index_add_(1, k[e0:e1], g * w_geo[None, e0:e1, None])
            blocks.append((e0, e1, g))
        context = torch.bmm(context.to(mt), w["context_w1"])
        logit = torch.empty(n_m, n_e, dtype=dt, device=dev)
        intensity = torch.empty(n_m, n_e, cfg.n_spin_channels, dtype=dt, device=dev)
        for e0, e1, g in blocks:
            first = torch.bmm(g, w["edge_w1"])
            h_logit = silu(first[..., :self.hidden] + context[:, k[e0:e1]])
            h_int = silu(first[..., self.hidden:])
            for m in range(n_m):  # outputs of width 1 and 2: per-member products (bmm is slow for them on CPUs)
                if mt == dt:
                    torch.mv(h_logit[m], w["logit_w2"][m, :, 0], out=logit[m, e0:e1])
                else:
                    logit[m, e0:e1] = h_logit[m] @ w["logit_w2"][m, :, 0]
                intensity[m, e0:e1] = h_int[m] @ w["intensity_w2"][m]

        slot = (k[None, :] + n_probes * torch.arange(n_m, device=dev)[:, None]).reshape(-1)  # (member, probe)
        out = background_softmax(slot, logit.reshape(-1), w_geo.repeat(n_m), intensity.reshape(-1, cfg.n_spin_channels),
                                 self.background.to(dt).repeat_interleave(n_probes))
        return out.view(n_m, n_probes, -1)


def _segments(ends: list[int], e0: int, e1: int):
    """(atom, start, stop) of the edges in [e0, e1), edges sorted by atom, ``ends`` each atom's cumulative count."""
    begin = e0
    for a, end in enumerate(ends):
        if end > begin:
            stop = min(end, e1)
            yield a, begin, stop
            begin = stop
            if begin >= e1:
                return


def stack_heads(models, matmul_dtype: torch.dtype | None = None) -> StackedDensityHead | None:
    """One :class:`StackedDensityHead` for the heads of ``models`` (charge-density models), or None when a head's
    shape is not the stackable one or the members' probe geometry differs; ``matmul_dtype``: its per-edge
    products' dtype (None: the features')."""
    heads = [m.head for m in models]
    h0 = heads[0]
    same = all(h.config.probe_r_cut == h0.config.probe_r_cut and h.config.probe_sh == h0.config.probe_sh
               and h.irreps_in == h0.irreps_in and h.layers[0].irreps_sh == h0.layers[0].irreps_sh
               and h.radial.r_cut == h0.radial.r_cut and h.radial.p == h0.radial.p
               and torch.equal(h.radial.freq, h0.radial.freq) and h.config.n_edge_scalars == h0.config.n_edge_scalars
               and h.config.mlp_hidden == h0.config.mlp_hidden for h in heads)
    if not same or not all(_stackable(h) for h in heads):
        return None
    head = StackedDensityHead(heads).to(next(h0.parameters()).device)
    head.matmul_dtype = matmul_dtype
    return head
