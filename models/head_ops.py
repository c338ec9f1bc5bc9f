"""The two computations every probe-edge density head shares (:class:`~chgdata.models.density.DensityHead` for
training and single models, :class:`~chgdata.models.stacked_head.StackedDensityHead` for ensembles in one pass):
the geometry of the probe edges, and the softmax over a probe's atoms with its background slot."""

from __future__ import annotations

import torch

from .radial import geometric_weight


def probe_edge_geometry(vec: torch.Tensor, probe_r_cut: float, probe_sh: str, sh, radial):
    """Per probe edge (vectors ``vec`` (E, 3) Å): distance r (0 where the probe sits on the atom), spherical
    harmonics (``scaled``: (r/r_cut)^l Y_l(r̂), a polynomial in the vector, smooth at r = 0; otherwise Y_l(r̂),
    the zero vector at r = 0), the radial basis of r and ``w_geo(r / probe_r_cut)``."""
    r2 = (vec * vec).sum(-1)
    r = torch.sqrt(r2.clamp(min=1e-24))
    r = torch.where(r2 > 1e-24, r, torch.zeros_like(r))
    y = sh(vec / probe_r_cut) if probe_sh == "scaled" else sh(vec / r.clamp(min=1e-12)[:, None])
    return r, y, radial(r), geometric_weight(r / probe_r_cut)


def background_softmax(slot: torch.Tensor, logit: torch.Tensor, w_geo: torch.Tensor, intensity: torch.Tensor,
                       background: torch.Tensor) -> torch.Tensor:
    """``ρ_s = Σ_e w_e e^{l_e} s_e / (e^{b_s} + Σ_e w_e e^{l_e})`` over the edges e of each slot s (a probe, or a
    probe of one member): ``slot`` (E,), ``logit`` (E,), ``w_geo`` (E,), ``intensity`` (E, C), ``background``
    (S,) each slot's background logit. Shifted by each slot's largest score (exact; the shift is detached)."""
    score = (logit + torch.log(w_geo.clamp(min=1e-30))).detach()
    shift = background.detach().clone().scatter_reduce(0, slot, score, reduce="amax", include_self=True)
    unnorm = w_geo * torch.exp(logit - shift[slot])
    norm = torch.exp(background - shift).index_add(0, slot, unnorm)
    numer = intensity.new_zeros(len(background), intensity.shape[1]).index_add(0, slot, unnorm[:, None] * intensity)
    return numer / norm[:, None]
