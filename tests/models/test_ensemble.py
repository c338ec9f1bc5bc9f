"""Density ensembles: the mean of their members, one checkpoint, refused when members saw different data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner


def _member(tmp_path, seed: int, n_layers: int = 1, train=("a", "b"), ref="saed-ref-x", dos=False):
    from chgdata.models.config import ChargeDensityConfig, DosConfig, EncoderConfig
    from chgdata.models.density import ChargeDensityModel
    from chgdata.models.dos import DosModel

    torch.manual_seed(seed)
    enc = EncoderConfig(n_scalars=4, n_vectors=2, l_max=1, n_layers=n_layers)
    if dos:
        cfg, model = (c := DosConfig(encoder=enc, n_points=10, mlp_hidden=4)), DosModel(c)
    else:
        cfg = ChargeDensityConfig(encoder=enc, n_edge_scalars=4, mlp_hidden=8, n_spin_channels=2, chunk_size=500)
        model = ChargeDensityModel(cfg)
    path = tmp_path / f"m{seed}.pt"
    torch.save({"format": 1, "model_config": cfg.to_dict(), "model": model.state_dict(), "ema": None,
                "n_parameters": 10, "saed_reference_id": ref, "train_elements": ["Fe", "Si"],
                "splits": {"train": list(train), "val": ["c"], "test": ["d"]}}, path)
    return path, model


def test_ensemble_predicts_the_mean_of_its_members(tmp_path):
    from chgdata.cli.main import app
    from chgdata.models.checkpoint import load_checkpoint
    from chgdata.models.density import density_in_chunks, predict_grid
    from pymatgen.core import Lattice, Structure

    (p1, m1), (p2, m2) = _member(tmp_path, 1), _member(tmp_path, 2, n_layers=2)
    dest = tmp_path / "ens.pt"
    res = CliRunner().invoke(app, ["ensemble", str(p1), str(p2), "-o", str(dest)])
    assert res.exit_code == 0, res.output
    raw = torch.load(dest, map_location="cpu", weights_only=True)
    assert raw["model_config"]["kind"] == "density-ensemble" and len(raw["members"]) == 2
    assert raw["n_parameters"] == 20 and raw["splits"]["train"] == ["a", "b"]
    ens, _ = load_checkpoint(dest)
    s = Structure(Lattice.hexagonal(3.0, 4.5), ["Si", "Fe"], [[0, 0, 0], [1 / 3, 2 / 3, 0.5]])
    args = (s.cart_coords, np.array([14, 26]), s.lattice.matrix)
    m1.eval(), m2.eval()
    want = (predict_grid(m1, *args, (5, 6, 7)) + predict_grid(m2, *args, (5, 6, 7))) / 2
    seen = []
    got = predict_grid(ens, *args, (5, 6, 7), chunk_size=60, callback=lambda d, n: seen.append((d, n)))
    torch.testing.assert_close(got, want)
    assert not torch.allclose(want, predict_grid(m1, *args, (5, 6, 7)))  # the members differ
    assert seen[-1][0] == seen[-1][1] and all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))  # one progress run
    points = np.random.default_rng(0).random((9, 3)) @ s.lattice.matrix
    torch.testing.assert_close(density_in_chunks(ens, *args, probe_positions=points),
                               (density_in_chunks(m1, *args, probe_positions=points)
                                + density_in_chunks(m2, *args, probe_positions=points)) / 2)


def test_ensemble_refuses_members_of_other_data_or_kind(tmp_path):
    from chgdata.cli.main import app

    p1, _ = _member(tmp_path, 1)
    cases = {"another training split": _member(tmp_path, 2, train=("a", "z"))[0],
             "another SAED reference": _member(tmp_path, 3, ref="saed-ref-y")[0],
             "not a single charge-density checkpoint": _member(tmp_path, 4, dos=True)[0]}
    for message, other in cases.items():
        res = CliRunner().invoke(app, ["ensemble", str(p1), str(other), "-o", str(tmp_path / "e.pt")])
        assert res.exit_code == 1 and message in " ".join(res.output.split()), res.output
        assert "Traceback" not in res.output and not (tmp_path / "e.pt").exists()
    res = CliRunner().invoke(app, ["ensemble", str(p1), "-o", str(tmp_path / "e.pt")])
    assert res.exit_code == 1 and "at least two" in res.output
    with pytest.raises(ValueError, match="differ in n_spin_channels"):
        from chgdata.models.config import ChargeDensityConfig, DensityEnsembleConfig

        DensityEnsembleConfig(members=(ChargeDensityConfig(n_spin_channels=1), ChargeDensityConfig(n_spin_channels=2)))


def test_models_are_built_by_the_kind_their_checkpoint_records():
    """The registry: every config round-trips with its kind; a dict without one (checkpoints from before) still
    loads by its keys; an unknown kind is refused by name; the shipped checkpoints record theirs."""
    from chgdata.models.checkpoint import load
    from chgdata.models.config import ChargeDensityConfig, DosConfig
    from chgdata.models.kinds import is_density, kind_of
    from chgdata.models.registry import build_model, config_from_dict, config_to_dict

    for cfg, kind in ((ChargeDensityConfig(), "charge-density"), (DosConfig(), "dos-net")):
        d = config_to_dict(cfg)
        assert d["kind"] == kind and kind_of(config_from_dict(d)) == kind
        legacy = {k: v for k, v in d.items() if k != "kind"}
        assert config_from_dict(legacy) == cfg
        assert kind_of(build_model(cfg)) == kind
    with pytest.raises(ValueError, match="unknown model kind 'gnn'"):
        config_from_dict({"kind": "gnn"})
    model, ckpt = load(None)
    assert ckpt["model_config"]["kind"] == "density-ensemble" and is_density(model)
