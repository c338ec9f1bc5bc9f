"""The ensemble in one pass (models/stacked_head.py): the same numbers as the members one by one, from the same
shared probe graph, for random and shipped weights; shapes it cannot stack fall back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure


def _members(n: int, seed: int = 0, **head):
    from chgdata.models.config import ChargeDensityConfig, DensityEnsembleConfig, EncoderConfig
    from chgdata.models.ensemble import DensityEnsemble

    torch.manual_seed(seed)
    enc = EncoderConfig(n_scalars=6, n_vectors=2, l_max=2, n_layers=1)
    cfg = ChargeDensityConfig(encoder=enc, n_edge_scalars=5, mlp_hidden=7, n_spin_channels=2, chunk_size=40,
                              **{"n_edge_layers": 1, **head})
    ens = DensityEnsemble(DensityEnsembleConfig(members=[cfg] * n)).double().eval()
    for p in ens.parameters():  # away from the initial values, so that every weight matters
        p.data.add_(0.3 * torch.randn_like(p))
    return ens


def _structure():
    return Structure(Lattice.hexagonal(3.1, 4.6), ["Si", "Fe", "O"], [[0, 0, 0], [1 / 3, 2 / 3, 0.5], [0.5, 0, 0.3]])


@pytest.mark.parametrize("probe_sh", ["scaled", "unit"])
def test_one_pass_equals_the_members_one_by_one(probe_sh):
    from chgdata.models.density import member_grids, predict_grid
    from chgdata.models.stacked_head import stack_heads

    ens = _members(3, probe_sh=probe_sh)
    assert stack_heads(ens.members) is not None
    s = _structure()
    args = (s.cart_coords, np.array([14, 26, 8]), s.lattice.matrix, (7, 8, 11))
    members = member_grids(ens, *args)
    assert members.shape == (3, 7, 8, 11, 2) and members.dtype == torch.float64
    for m, got in zip(ens.members, members):
        torch.testing.assert_close(got, predict_grid(m, *args, stacked=False), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(predict_grid(ens, *args), predict_grid(ens, *args, stacked=False), rtol=1e-10,
                               atol=1e-12)
    assert not torch.allclose(members[0], members[1])  # the members differ
    assert next(ens.parameters()).dtype == torch.float64  # probing e3nn's modules left the model as it was


def test_points_and_chunks_and_a_probe_on_an_atom():
    """Probe points (cKDTree edges), one of them on an atom (r = 0), in chunks of a few points."""
    from chgdata.models.density import density_in_chunks

    ens = _members(2, seed=1)
    s = _structure()
    points = np.vstack([s.cart_coords[:1], np.random.default_rng(0).random((20, 3)) @ s.lattice.matrix])
    args = (s.cart_coords, np.array([14, 26, 8]), s.lattice.matrix)
    got = density_in_chunks(ens, *args, probe_positions=points, chunk_size=6)
    want = sum(density_in_chunks(m, *args, probe_positions=points, chunk_size=6) for m in ens.members) / 2
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert torch.isfinite(got).all() and (got != 0).any()


def test_heads_it_cannot_stack_fall_back_to_the_member_path():
    from chgdata.models.density import predict_grid
    from chgdata.models.stacked_head import stack_heads

    deep = _members(2, n_edge_layers=2)  # the first edge layer keeps vectors: not the stackable shape
    assert stack_heads(deep.members) is None
    s = _structure()
    args = (s.cart_coords, np.array([14, 26, 8]), s.lattice.matrix, (5, 5, 6))
    torch.testing.assert_close(predict_grid(deep, *args),
                               sum(predict_grid(m, *args) for m in deep.members) / 2)


def test_members_with_other_probe_cutoffs_are_predicted_one_by_one():
    """No shared probe graph when the members' probe cutoffs differ: each member on its own graph, then the mean."""
    from chgdata.models.density import member_grids, predict_grid
    from chgdata.models.ensemble import DensityEnsemble

    a, b = _members(1, seed=2), _members(1, seed=3, probe_r_cut=2.5)
    ens = DensityEnsemble(a.config.__class__(members=[a.members[0].config, b.members[0].config])).double().eval()
    ens.members[0].load_state_dict(a.members[0].state_dict())
    ens.members[1].load_state_dict(b.members[0].state_dict())
    s = _structure()
    args = (s.cart_coords, np.array([14, 26, 8]), s.lattice.matrix, (6, 6, 7))
    each = member_grids(ens, *args)
    torch.testing.assert_close(each[1], predict_grid(ens.members[1], *args, stacked=False), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(predict_grid(ens, *args), each.mean(0))


def test_the_shipped_ensemble_in_one_pass():
    """The shipped checkpoint (float32) on a shared crystal (FeCo, magnetic): one pass equals member by member to
    float rounding, far below the model's error (NMAE ~1 %)."""
    import json

    from chgdata.models.checkpoint import load
    from chgdata.models.density import predict_grid
    from chgdata.models.predict import atomic_numbers
    from chgdata.models.stacked_head import stack_heads

    from tests.conftest import GPAW, REPO, need_shared

    need_shared()
    model = load(REPO / "models/default/density.pt")
    model = model[0] if isinstance(model, tuple) else model
    assert stack_heads(model.members) is not None
    s = Structure.from_dict(json.loads((GPAW / "gpaw-0161" / "meta.json").read_text())["structure"])
    args = (s.cart_coords, atomic_numbers(s), s.lattice.matrix, (12, 12, 12))
    one, each = predict_grid(model, *args), predict_grid(model, *args, stacked=False)
    assert float((one - each).abs().sum() / each.abs().sum()) < 1e-6


def test_bfloat16_products_stay_close_and_need_the_one_pass_head():
    """Per-edge products in bfloat16 (sums and softmax in float64 here): close to the float64 result at bf16's
    8-bit mantissa, but not equal (the dtype is really used); the member path refuses the option."""
    from chgdata.models.density import predict_grid

    ens = _members(2)
    s = _structure()
    args = (s.cart_coords, np.array([14, 26, 8]), s.lattice.matrix, (6, 7, 8))
    exact, low = predict_grid(ens, *args), predict_grid(ens, *args, matmul_dtype=torch.bfloat16)
    assert low.dtype == torch.float64
    rel = float((low - exact).abs().sum() / exact.abs().sum())
    assert 1e-5 < rel < 3e-2
    with pytest.raises(ValueError, match="one-pass"):
        predict_grid(ens, *args, stacked=False, matmul_dtype=torch.bfloat16)
