"""DOS baselines (train split only), `chgdata evaluate` of a DOS checkpoint, and `chgdata predict --dos`.

One small store from 8 real gpaw folders (symlinks), ingested, DOS windows built and split by formula; a DosNet
model trained on it for a few steps (random-ish weights, but through the real training path)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tests.conftest import GPAW, need_shared

FOLDERS = ["gpaw-0001", "gpaw-0008", "gpaw-0103", "gpaw-0152", "gpaw-0160", "gpaw-0002", "gpaw-0003", "gpaw-0004"]


@pytest.fixture(scope="module")
def dos_store(tmp_path_factory) -> str:
    need_shared()
    from chgdata.pipelines.dos import run_build_dos
    from chgdata.pipelines.ingest import run_ingest
    from chgdata.pipelines.split import run_split

    src = tmp_path_factory.mktemp("gpaw8")
    for f in FOLDERS:  # real folders of symlinked files (discovery does not walk symlinked folders)
        (src / f).mkdir()
        for file in (GPAW / f).iterdir():
            (src / f / file.name).symlink_to(file)
    store = str(tmp_path_factory.mktemp("stores") / "gpaw8")
    report = run_ingest(store, from_dir=str(src), workers=1, progress=False)
    assert not report.failed, report.failed
    run_build_dos(store, workers=1, progress=False)
    run_split(store, group_by="formula", fractions=(0.5, 0.25, 0.25))
    return store


@pytest.fixture(scope="module")
def dos_ckpt(dos_store, tmp_path_factory):
    from chgdata.models.train import TrainConfig, train

    out = tmp_path_factory.mktemp("run") / "dos"
    cfg = TrainConfig(store=dos_store, target="dos", out=str(out), max_steps=2, batch_size=4, split_source="store",
                      tensorboard=False, model={"backbone": "dosnet", "n_key": 2, "mlp_hidden": 8, "encoder": {
                          "n_scalars": 4, "n_vectors": 2, "l_max": 1, "n_layers": 1, "radial_hidden": 8}})
    train(cfg, progress=False)
    return out / "model.pt"


def test_baselines_use_the_training_split_only(dos_store):
    from chgdata.models.evaluate_dos import baselines_from_store, element_fractions, fit_baselines

    from chgdata.store import open_dataset

    ds = open_dataset(dos_store)
    splits = ds.splits()
    train, others = splits["train"], splits["val"] + splits["test"]
    assert train and others
    base = baselines_from_store(ds, train)
    fr = {m: element_fractions(ds.structure(m)) for m in train + others}
    test_only = {e for m in others for e in fr[m]} - {e for m in train for e in fr[m]}
    # a test material's windows and elements never enter: same baselines whatever the other splits hold
    ids, windows, _ = ds.dos_windows(train, "normalised")
    again = fit_baselines(windows, [fr[m] for m in ids])
    np.testing.assert_array_equal(again.mean, base.mean)
    assert set(base.elements) == {e for m in train for e in fr[m]} and not test_only & set(base.elements)
    # the test can fail: moving a held-out material into train changes the baselines
    moved = baselines_from_store(ds, train + others[:1])
    assert not np.allclose(moved.mean, base.mean)
    # an element seen only outside train is mixed in as the mean window
    mix = base.composition({"Og": 0.5, next(iter(base.elements)): 0.5})
    np.testing.assert_allclose(mix, 0.5 * base.mean + 0.5 * base.elements[next(iter(base.elements))])
    assert base.to_dict()["n_materials"] == len(train)
    with pytest.raises(ValueError, match="one element-fraction dict per window"):
        fit_baselines(windows, [])


def test_evaluate_dos_reports_baselines_per_split_and_a_grid(dos_store, dos_ckpt, tmp_path):
    from chgdata.cli.main import app

    res = CliRunner().invoke(app, ["evaluate", "-c", str(dos_ckpt), "-s", dos_store, "--split", "test",
                                   "-o", str(tmp_path / "eval.json"), "--quiet"])
    assert res.exit_code == 0, res.output
    summ = json.loads((tmp_path / "eval.json").read_text())["summary"]
    assert summ["kind"] == "dos" and set(summ["splits"]) <= {"train", "val", "test"} and "train" in summ["splits"]
    for s in summ["splits"].values():
        assert s["mse"] >= 0 and s["mse_mean_baseline"] >= 0 and s["mse_composition_baseline"] >= 0
        assert 0.0 <= s["fraction_beating_both_baselines"] <= 1.0
    png = tmp_path / "eval_grid.png"
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
    assert "composition" in res.output


def test_evaluate_prints_counts_that_add_up_and_warns_on_a_different_split(dos_store, dos_ckpt, tmp_path):
    """Several splits: the title counts each split's rows and names where the split came from; a checkpoint whose
    split assigns the store's materials differently is warned about (it was silent)."""
    from chgdata.cli.main import app

    from chgdata.store import open_dataset

    ds = open_dataset(dos_store)
    have = set(ds.dos_ids())
    splits = {k: [m for m in v if m in have] for k, v in ds.splits().items() if set(v) & have}
    assert len(splits) >= 2
    n = {k: len(v) for k, v in splits.items()}
    res = CliRunner().invoke(app, ["evaluate", "-c", str(dos_ckpt), "-s", dos_store, "--split", ",".join(splits),
                                   "-o", str(tmp_path / "e.json"), "--quiet"])
    assert res.exit_code == 0, res.output
    title = f"{sum(n.values())} materials ({' + '.join(f'{k} {v}' for k, v in n.items())}; the store's"
    assert title in res.output
    rows = json.loads((tmp_path / "e.json").read_text())["per_material"]
    assert sorted(r["split"] for r in rows) == sorted(k for k, v in splits.items() for _ in v)
    mine = {m: k for k, v in splits.items() for m in v}
    ckpt = torch.load(dos_ckpt, map_location="cpu", weights_only=False)

    def differ(theirs):
        return sum(mine[m] != next((k for k, v in theirs.items() if m in v), None) for m in mine)

    k = differ(ckpt["splits"])
    assert (f"differ on {k} of this store's {len(mine)} materials" in res.output) == (k > 0)
    ckpt["splits"] = {**ckpt["splits"], "val": ckpt["splits"]["test"], "test": ckpt["splits"]["val"]}
    torch.save(ckpt, tmp_path / "swapped.pt")
    res = CliRunner().invoke(app, ["evaluate", "-c", str(tmp_path / "swapped.pt"), "-s", dos_store,
                                   "--plot", str(tmp_path / "g.png"), "--quiet"])
    assert res.exit_code == 0, res.output
    k2 = differ(ckpt["splits"])
    assert k2 > k and f"warning: the store's split (train {n['train']}" in res.output
    assert f"differ on {k2} of this store's" in res.output


def _poscar_from_shared(tmp_path, folder="gpaw-0103"):
    from pymatgen.core import Structure

    s = Structure.from_file(str(GPAW / folder / "CHGCAR.gz"))
    (tmp_path / folder).mkdir()
    path = tmp_path / folder / "POSCAR"  # predictions are named after the POSCAR's folder
    s.to(filename=str(path), fmt="poscar")
    return path, s


def test_predict_dos_writes_a_dos_pymatgen_reads(dos_ckpt, dos_store, tmp_path):
    from chgdata.cli.main import app
    from pymatgen.electronic_structure.core import Spin
    from pymatgen.electronic_structure.dos import Dos

    poscar, s = _poscar_from_shared(tmp_path)
    out = tmp_path / "pred"
    mid = "gpaw-0001"
    res = CliRunner().invoke(app, ["predict", str(poscar), f"store:{dos_store}#{mid}", "--dos-only",
                                   "--dos-checkpoint", str(dos_ckpt), "-o", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    d = json.loads((out / "gpaw-0103" / "dos.json").read_text())
    dos = Dos.from_dict(d)
    assert dos.efermi == 0.0 and d["chgdata"]["fermi_level_known"] is False
    assert np.allclose(dos.energies, np.linspace(-10, 10, 400))
    assert dos.densities[Spin.up].shape == (400,) and np.all(dos.densities[Spin.down] >= 0)
    assert not (out / "gpaw-0103" / "CHGCAR").exists()  # --dos-only: no density
    header = (out / "gpaw-0103" / "dos.csv").read_text().splitlines()[0]
    assert header == "E_minus_EF_eV,dos_up_normalised,dos_down_normalised"
    # from a store: absolute energies around the stored Fermi level, reference beside the prediction
    ds_json = json.loads((out / mid / "dos.json").read_text())
    ref = Dos.from_dict(ds_json)
    assert ds_json["chgdata"]["fermi_level_known"] and ref.efermi != 0.0
    np.testing.assert_allclose(ref.energies - ref.efermi, np.linspace(-10, 10, 400), atol=1e-9)
    assert "reference_up_normalised" in (out / mid / "dos.csv").read_text().splitlines()[0]
    assert (out / mid / "dos.png").read_bytes()[:4] == b"\x89PNG"
    assert "MSE vs store reference" in res.output


def test_predict_dos_beside_a_density_prediction(dos_ckpt, tmp_path):
    from chgdata.cli.main import app
    from chgdata.models.checkpoint import DEFAULT_CHECKPOINT

    if not DEFAULT_CHECKPOINT.is_file():
        pytest.skip("no shipped density model")
    poscar, _ = _poscar_from_shared(tmp_path, "gpaw-0001")
    out = tmp_path / "both"
    res = CliRunner().invoke(app, ["predict", str(poscar), "--dos", "--dos-checkpoint", str(dos_ckpt), "--grid",
                                   "6,6,6", "-o", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    folder = next(out.iterdir())
    assert (folder / "CHGCAR").is_file() and (folder / "dos.json").is_file()


def test_predict_dos_refuses_a_density_checkpoint(tmp_path):
    from chgdata.cli.main import app
    from chgdata.models.checkpoint import DEFAULT_CHECKPOINT

    if not DEFAULT_CHECKPOINT.is_file():
        pytest.skip("no shipped density model")
    poscar, _ = _poscar_from_shared(tmp_path)
    res = CliRunner().invoke(app, ["predict", str(poscar), "--dos-only", "--dos-checkpoint", str(DEFAULT_CHECKPOINT),
                                   "-o", str(tmp_path / "x")])
    assert res.exit_code != 0
    text = " ".join(res.output.split())  # the console folds long lines
    assert text.startswith("error:") and text.endswith("is a charge-density checkpoint, not a DOS model")
    assert "Traceback" not in res.output


def test_shipped_dos_model_loads_with_weights_only_and_predicts(tmp_path):
    from chgdata.cli.main import app
    from chgdata.models.predict_dos import DEFAULT_DOS_CHECKPOINT, load_dos_model
    from pymatgen.electronic_structure.dos import Dos

    if not DEFAULT_DOS_CHECKPOINT.is_file():
        pytest.skip("no shipped DOS model")
    assert DEFAULT_DOS_CHECKPOINT.stat().st_size < 5e6
    raw = torch.load(DEFAULT_DOS_CHECKPOINT, map_location="cpu", weights_only=True)
    assert raw["model_config"]["kind"] == "dos-kernel" and len(raw["baselines"]["elements"]) > 10
    assert raw["config"]["selected"]["folds"] == 5 and set(raw["splits"]) == {"train", "val", "test"}
    model, _ = load_dos_model(None)
    assert model.config.n_points == 400
    poscar, _ = _poscar_from_shared(tmp_path, "gpaw-0008")  # C diamond
    res = CliRunner().invoke(app, ["predict", str(poscar), "--dos-only", "-o", str(tmp_path / "p"), "--quiet"])
    assert res.exit_code == 0, res.output
    dos = Dos.from_dict(json.loads((tmp_path / "p" / "gpaw-0008" / "dos.json").read_text()))
    assert len(dos.energies) == 400 and float(dos.get_densities().max()) > 0


def test_element_bias_starts_the_model_at_the_composition_baseline(dos_store):
    from chgdata.models import keys as K
    from chgdata.models.config import DosConfig, EncoderConfig
    from chgdata.models.data import DosWindows
    from chgdata.models.dos import DosModel, start_at_windows
    from chgdata.models.evaluate_dos import baselines_from_store, element_fractions, predict_windows

    from chgdata.store import open_dataset

    ds = open_dataset(dos_store)
    splits = ds.splits()
    model = DosModel(DosConfig(encoder=EncoderConfig(n_scalars=4, n_vectors=2, l_max=1, n_layers=1), mlp_hidden=8,
                               backbone="dosnet", n_key=2)).eval()
    train = DosWindows(dos_store, splits["train"], "normalised", model.config.encoder.r_cut)
    start_at_windows(model.head, train.windows, [train.static_batch(i)[K.ATOMIC_NUMBERS].numpy()
                                                 for i in range(len(train))], scale=0.0)
    base = baselines_from_store(ds, splits["train"])
    held = [ds.structure(m) for m in splits["val"] + splits["test"]]
    want = np.stack([base.composition(element_fractions(s)) for s in held])
    np.testing.assert_allclose(predict_windows(model, held), want, atol=2e-4)
