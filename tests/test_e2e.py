"""End to end: ingest a few GPAW crystals → build-delta → build-dos → train a few CPU steps → predict a CHGCAR
that pymatgen reads back → evaluate → plots. CLI commands run through typer's CliRunner."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import GPAW, need_shared

SUBSET = ["gpaw-0002", "gpaw-0003", "gpaw-0008", "gpaw-0010"]
TINY = {"encoder": {"n_scalars": 8, "n_vectors": 2, "l_max": 1, "n_layers": 1}, "n_edge_scalars": 8,
        "mlp_hidden": 16, "chunk_size": 4000}


def _ok(result):
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    need_shared()
    from chgdata.cli.main import app
    from chgdata.models.train import TrainConfig, train

    tmp = tmp_path_factory.mktemp("e2e")
    src = tmp / "calcs"
    src.mkdir()
    for mid in SUBSET:
        shutil.copytree(GPAW / mid, src / mid)
    store = str(tmp / "store")
    runner = CliRunner()
    _ok(runner.invoke(app, ["ingest", "--from-dir", str(src), "--store", store, "-q", "--workers", "1"]))
    _ok(runner.invoke(app, ["build-delta", "--store", store, "-q", "--workers", "1"]))
    _ok(runner.invoke(app, ["build-dos", "--store", store, "-q", "--workers", "1"]))
    run = tmp / "run"
    train(TrainConfig(store=store, target="delta", out=str(run), epochs=1, max_steps=4, probes=100, batch_size=2,
                      val_max_materials=1, model=TINY), progress=False)
    return runner, app, store, run, tmp


def test_predict_evaluate_plot(pipeline):
    from pymatgen.io.vasp import Chgcar

    runner, app, store, run, tmp = pipeline
    ckpt = str(run / "model.pt")
    out = tmp / "pred"
    text = _ok(runner.invoke(app, ["predict", str(GPAW / "gpaw-0013" / "CHGCAR.gz"), "--checkpoint", ckpt,
                                   "--out", str(out), "--grid", "12,12,12", "-q"]))
    assert "gpaw-0013" in text
    chg = Chgcar.from_file(str(out / "gpaw-0013" / "CHGCAR"))
    assert chg.data["total"].shape == (12, 12, 12)
    electrons = chg.data["total"].mean()  # CHGCAR holds ρ·V: the grid mean is ∫ρ dV
    assert electrons == pytest.approx(32.0, rel=0.01)  # C8, 4 valence electrons each

    res_path = tmp / "eval" / "results.json"
    text = _ok(runner.invoke(app, ["evaluate", "--checkpoint", ckpt, "--store", store, "--split", "all",
                                   "--out", str(res_path), "-q"]))
    assert "nmae_mean" in text and "NMAE" in text
    res = json.loads(res_path.read_text())
    assert res["summary"]["materials"] == len(SUBSET)
    assert 0 < res["summary"]["nmae_saed_mean"] < 50
    assert np.isfinite(res["summary"]["nmae_mean"])
    assert (tmp / "eval" / "results.csv").read_text().startswith("material_id")
    # the store's recorded split (build-delta made one, grouped by formula): a per-split table beside SAED
    text = _ok(runner.invoke(app, ["evaluate", "--checkpoint", ckpt, "--store", store, "--split", "train",
                                   "--out", str(res_path), "-q"]))
    res = json.loads(res_path.read_text())
    import chgdata

    train_ids = chgdata.open_dataset(store).splits()["train"]
    assert res["summary"]["by_split"]["train"]["materials"] == len(train_ids)
    assert "| train |" in text and "SAED NMAE %" in text

    for args in (["plot", "density", "--store", store, "-m", "gpaw-0010", "--out", str(tmp / "d.png")],
                 ["plot", "density", "--store", store, "-m", "gpaw-0010", "-c", ckpt, "--out", str(tmp / "dc.png")],
                 ["plot", "training", str(run), "--out", str(tmp / "t.png")]):
        _ok(runner.invoke(app, args))
    for name in ("d.png", "dc.png", "t.png"):
        assert (tmp / name).read_bytes()[:4] == b"\x89PNG"
