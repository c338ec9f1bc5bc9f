"""The kernel DOS model: crystal descriptors, closed-form fit, grouped cross-validation, checkpoint, predict."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tests.models.conftest import load_structure
from tests.models.test_dos_tools import _poscar_from_shared, dos_store  # noqa: F401 - the 8-crystal store fixture


def test_descriptors_of_rocksalt_nacl_and_their_invariances():
    from pymatgen.core import Lattice, Structure

    from chgdata.descriptors import DESCRIPTOR_NAMES, structure_descriptors

    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    d = dict(zip(DESCRIPTOR_NAMES, structure_descriptors(nacl), strict=True))
    assert len(d) == len(DESCRIPTOR_NAMES)
    assert d["coordination"] == 6 and d["n_elements"] == 2
    assert d["nearest_distance_A"] == pytest.approx(2.82)
    assert d["mean_outer_electrons"] == pytest.approx(4.0)  # Na 1 + Cl 7, one of each
    assert d["electronegativity_spread"] == pytest.approx(3.16 - 0.93)
    assert d["bond_electronegativity_difference"] == pytest.approx(3.16 - 0.93)
    assert d["frac_s"] == d["frac_p"] == pytest.approx(0.5)
    assert d["atomic_volume_length_A"] == pytest.approx((5.64**3 / 8) ** (1 / 3))
    # the same crystal as its primitive cell, a supercell and rotated gives the same descriptors
    ref = structure_descriptors(nacl)
    prim = nacl.get_primitive_structure()
    sup = prim.copy()
    sup.make_supercell([2, 1, 1])
    rot = prim.copy()
    rot.apply_operation(__import__("pymatgen.core.operations", fromlist=["x"]).SymmOp.from_axis_angle_and_translation(
        [1, 2, 3], 37.0))
    for other in (prim, sup, rot):
        np.testing.assert_allclose(structure_descriptors(other), ref, rtol=1e-10, atol=1e-10)
    # and a different crystal does not
    si = load_structure("gpaw-0001")
    assert not np.allclose(structure_descriptors(si), ref)


def test_descriptors_refuse_an_isolated_atom():
    from pymatgen.core import Lattice, Structure

    from chgdata.descriptors import structure_descriptors

    with pytest.raises(ValueError, match="no neighbour within 6.0 Å"):
        structure_descriptors(Structure(Lattice.cubic(7.0), ["Na"], [[0, 0, 0]]))


def test_fit_interpolates_at_small_ridge_and_stays_non_negative(rng):
    from chgdata.models.dos_kernel import fit_kernel

    x = rng.normal(size=(12, 5))
    w = rng.random((12, 2, 30))
    model = fit_kernel(x, w, gamma=1.0, lam=1e-9)
    with torch.no_grad():
        np.testing.assert_allclose(model(torch.as_tensor(x)).numpy(), w, atol=1e-5)
        far = model(torch.as_tensor(x[:1] + 100.0)).numpy()
    # far from every training crystal the prediction falls back to the mean training window
    np.testing.assert_allclose(far[0], w.mean(0), atol=1e-9)
    # a strong ridge pulls every prediction towards the mean window
    strong = fit_kernel(x, w, gamma=1.0, lam=1e6)
    with torch.no_grad():
        assert np.abs(strong(torch.as_tensor(x)).numpy() - w.mean(0)).max() < 1e-4
    with pytest.raises(ValueError, match="finite"):
        fit_kernel(np.where(x > 2, np.nan, x), w, 1.0, 1.0)
    with pytest.raises(ValueError, match="need descriptors"):
        fit_kernel(x, w[:5], 1.0, 1.0)


def test_resample_moves_a_peak_by_the_energy_scale():
    from chgdata.models.dos_kernel import resample

    grid = torch.linspace(-10, 10, 401, dtype=torch.float64)
    peak = torch.exp(-((grid - 4.0) ** 2) / 0.5)[None, None].repeat(2, 2, 1)
    out = resample(peak, grid, torch.tensor([1.0, 2.0], dtype=torch.float64))
    torch.testing.assert_close(out[0], peak[0])  # factor 1: unchanged
    assert float(grid[out[1, 0].argmax()]) == pytest.approx(2.0, abs=0.05)  # W(2E) peaks at E = 2 eV
    back = resample(resample(peak, grid, torch.tensor([0.8], dtype=torch.float64)), grid,
                    torch.tensor([1.25], dtype=torch.float64))
    torch.testing.assert_close(back[0], peak[0], atol=2e-3, rtol=0)  # there and back, to interpolation error


def test_reduced_energies_transfer_a_band_to_another_bond_length(rng):
    """A family whose windows are one band stretched by (d/d_ref)²: with p = 2 an unseen bond length is
    predicted to interpolation error; without the reduced axis the model can only blend the training widths."""
    from chgdata.models.dos_kernel import DISTANCE, fit_kernel

    from chgdata.descriptors import DESCRIPTOR_NAMES

    energies = np.linspace(-10, 10, 400)
    d = np.array([2.2, 2.35, 2.5, 2.65, 2.8, 2.95, 3.1])
    band = lambda dist: np.exp(-((energies * (dist / 2.65) ** 2 + 3.0) ** 2) / 0.8)  # noqa: E731
    x = rng.normal(size=(len(d), len(DESCRIPTOR_NAMES)))
    x[:, DISTANCE] = d
    w = np.stack([np.stack([band(v), band(v)]) for v in d])
    test = x[:1].copy()
    test[0, DISTANCE] = 2.42  # between training crystals; its other descriptors are the first one's
    truth = band(2.42)
    with torch.no_grad():
        scaled = fit_kernel(x, w, gamma=0.5, lam=1e-3, energy_exponent=2.0)(torch.as_tensor(test)).numpy()[0, 0]
        plain = fit_kernel(x, w, gamma=0.5, lam=1e-3)(torch.as_tensor(test)).numpy()[0, 0]
    assert np.mean((scaled - truth) ** 2) < 1e-4 < np.mean((plain - truth) ** 2)
    with pytest.raises(ValueError, match="reduced energies need"):
        fit_kernel(x[:, :5], w, 0.5, 1.0, energy_exponent=2.0)


def test_grouped_folds_hold_whole_groups():
    from chgdata.splits import grouped_folds

    groups = ["Si"] * 5 + ["NaCl"] * 3 + ["Fe"] * 4 + ["MgO"] * 2 + ["C"]
    folds = grouped_folds(groups, 3)
    flat = np.concatenate(folds)
    assert sorted(flat.tolist()) == list(range(len(groups)))  # every material once
    for f in folds:
        held = {groups[i] for i in f}
        assert all(groups[i] not in held for g in folds if g is not f for i in g)  # no group on both sides
    assert [f.tolist() for f in grouped_folds(groups, 3)] == [f.tolist() for f in folds]  # deterministic
    with pytest.raises(ValueError, match="5 groups cannot make 6 folds"):
        grouped_folds(groups, 6)


def test_fit_dos_kernel_on_a_real_store_reads_only_train_and_predicts(dos_store, tmp_path, monkeypatch):  # noqa: F811
    from chgdata.cli.main import app
    from chgdata.models.predict_dos import load_dos_model
    from pymatgen.electronic_structure.dos import Dos

    from chgdata.descriptors import structure_descriptors
    from chgdata.store import Dataset, open_dataset

    ds = open_dataset(dos_store)
    train, held = ds.splits()["train"], ds.splits()["val"] + ds.splits()["test"]
    seen: list[str] = []
    original = Dataset.dos_windows

    def spy(self, material_ids=None, variant="normalised"):
        if material_ids is not None:
            seen.extend(material_ids)
        return original(self, material_ids, variant)

    monkeypatch.setattr(Dataset, "dos_windows", spy)
    ckpt = tmp_path / "kernel.pt"
    res = CliRunner().invoke(app, ["fit-dos", "-s", dos_store, "-o", str(ckpt), "--folds", "2"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())  # the console folds long lines
    assert "grouped 2-fold CV" in text and "beats both" in text
    assert seen and set(seen) <= set(train) and not set(seen) & set(held)  # no val/test window was read
    monkeypatch.setattr(Dataset, "dos_windows", original)

    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert raw["model_config"]["kind"] == "dos-kernel" and raw["splits"]["train"] == train
    assert {r["gamma"] for r in raw["config"]["cv"]} and raw["config"]["selected"]["folds"] == 2
    model, _ = load_dos_model(ckpt)
    # on its own training crystals the fit is close to the windows (a smooth, not an exact, fit)
    ids, w, _ = ds.dos_windows(train, "normalised")
    pred = model.predict_structures([ds.structure(m) for m in ids])
    assert pred.shape == w.shape and pred.min() >= 0
    assert float(np.mean((pred - w) ** 2)) < float(np.mean((w - w.mean(0)) ** 2))
    # predict --dos and evaluate take it like a DosNet checkpoint
    poscar, _ = _poscar_from_shared(tmp_path, "gpaw-0008")
    res = CliRunner().invoke(app, ["predict", str(poscar), "--dos-only", "--dos-checkpoint", str(ckpt),
                                   "-o", str(tmp_path / "p"), "--quiet"])
    assert res.exit_code == 0, res.output
    from chgdata.models.predict import UnseenElementWarning
    from chgdata.models.predict_dos import run_predict_dos
    from pymatgen.core import Lattice, Structure

    nacl = tmp_path / "NaCl.cif"
    Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5] * 3]).to(str(nacl))
    with pytest.warns(UnseenElementWarning, match="Cl, Na never occurred"):
        run_predict_dos([str(nacl)], tmp_path / "q", str(ckpt))
    written = json.loads((tmp_path / "p" / "gpaw-0008" / "dos.json").read_text())
    dos = Dos.from_dict(written)
    assert len(dos.energies) == 400 and float(dos.get_densities().max()) > 0
    # how close the structure is to the training set, and the held-out error there in cross-validation
    cal = raw["config"]["similarity_calibration"]
    assert len(cal["mse"]) == 4 and sum(cal["materials"]) == len(train) and cal["similarity_edges"] == sorted(
        cal["similarity_edges"])
    domain = written["chgdata"]["training_domain"]
    assert 0 < domain["kernel_similarity"] <= 1 and domain["cv_mse_at_this_similarity"] in cal["mse"]
    assert domain["nearest_training_formula"] in raw["config"]["train_formulas"]
    sim, row = model.nearest(torch.as_tensor(np.stack([structure_descriptors(ds.structure(m)) for m in ids])))
    assert np.allclose(sim, 1.0) and [ids[i] for i in row] == list(ids)  # each training crystal is its own closest
    res = CliRunner().invoke(app, ["evaluate", "-c", str(ckpt), "-s", dos_store, "--split", "test",
                                   "-o", str(tmp_path / "e.json")])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "e.json").read_text())["summary"]
    assert summary["kind"] == "dos" and "mse_composition_baseline" in summary


def test_fit_dos_needs_a_split_and_enough_groups(dos_store, tmp_path):  # noqa: F811
    from chgdata.cli.main import app

    res = CliRunner().invoke(app, ["fit-dos", "-s", dos_store, "-o", str(tmp_path / "k.pt"), "--folds", "9"])
    assert res.exit_code == 1
    assert "error:" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "k.pt").exists()


def test_fit_dos_offers_reduced_energies_and_refuses_bad_exponents(dos_store, tmp_path):  # noqa: F811
    from chgdata.cli.main import app

    ckpt = tmp_path / "k.pt"
    res = CliRunner().invoke(app, ["fit-dos", "-s", dos_store, "-o", str(ckpt), "--folds", "2",
                                   "--energy-exponents", "0,2"])
    assert res.exit_code == 0, res.output
    raw = torch.load(ckpt, weights_only=True)
    assert {r["energy_exponent"] for r in raw["config"]["cv"]} == {0.0, 2.0}
    assert raw["model_config"]["energy_exponent"] == raw["config"]["selected"]["energy_exponent"]
    for bad in ("two", "-1", ","):
        res = CliRunner().invoke(app, ["fit-dos", "-s", dos_store, "-o", str(tmp_path / "x.pt"), "--folds", "2",
                                       "--energy-exponents", bad])
        assert res.exit_code == 1 and "--energy-exponents" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "x.pt").exists()


def test_cross_validation_folds_of_training_replace_val_and_drop_test(dos_store):  # noqa: F811
    from chgdata.models.train_config import TrainConfig
    from chgdata.models.train_run import choose_splits

    from chgdata.store import open_dataset

    ds = open_dataset(dos_store)
    recorded, groups = ds.splits(), ds.groups()
    folds = []
    for k in range(2):
        cfg = TrainConfig(store=dos_store, target="dos", split_source="store", cv_folds=2, cv_fold=k)
        s = choose_splits(ds, ds.material_ids, cfg)
        assert s["test"] == [] and sorted(s["train"] + s["val"]) == sorted(recorded["train"])
        assert not {groups[m] for m in s["train"]} & {groups[m] for m in s["val"]}
        folds.append(set(s["val"]))
    assert folds[0] and folds[1] and not folds[0] & folds[1]
    with pytest.raises(ValueError, match="cv_fold must be in"):
        TrainConfig(store=dos_store, target="dos", cv_folds=2, cv_fold=2)
