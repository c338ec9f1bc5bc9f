"""Cross-fitted SAED references: a material's reference never sees its own fold (chgdata.crossfit)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from chgdata.crossfit import crossfit_tables
from chgdata.references import NormalEquations, solve_reference, sum_normal_equations
from chgdata.splits import grouped_folds

SIGMAS = (0.3, 0.8, 2.0)


def _normal(mid: str, elements: tuple[str, ...], rng) -> NormalEquations:
    n = len(elements) * len(SIGMAS)
    a = rng.normal(size=(40, n))
    b = rng.normal(size=40)
    return NormalEquations(elements, SIGMAS, a.T @ a, a.T @ b, float(b @ b), 40, (mid,))


@pytest.fixture
def data():
    rng = np.random.default_rng(3)
    spec = {"m1": ("Cl", "Na"), "m2": ("Cl", "Na"), "m3": ("Cl", "K"), "m4": ("Br", "K"), "m5": ("Br", "Na"),
            "m6": ("K", "Na"), "m7": ("Cl", "Cs")}  # Cs only in m7: no out-of-fold reference exists for it
    groups = {"m1": "NaCl", "m2": "NaCl", "m3": "KCl", "m4": "KBr", "m5": "NaBr", "m6": "KNa", "m7": "CsCl"}
    normal = {m: _normal(m, e, rng) for m, e in spec.items()}
    return normal, groups, {"Na": 7, "Cl": 7, "K": 9, "Br": 7, "Cs": 9}


def _fold(normal, groups, mid, n_folds=3):
    ids = sorted(normal)
    return next({ids[i] for i in f} for f in grouped_folds([groups[m] for m in ids], n_folds) if ids.index(mid) in f)


def test_each_reference_is_the_fit_of_the_other_folds(data):
    normal, groups, valence = data
    tables = crossfit_tables(normal, groups, valence, n_folds=3)
    assert set(tables) == set(normal) - {"m7"}  # m7's Cs is in no other fold
    assert tables["m1"] is tables["m2"]  # one group, one fold, one reference
    for mid, table in tables.items():
        fold = _fold(normal, groups, mid)
        rest = sum_normal_equations(normal[m] for m in normal if m not in fold)
        want = solve_reference(rest, {e: valence[e] for e in rest.elements}, dataset_version="crossfit")
        assert table.id == want.id and mid not in rest.materials


def test_a_material_own_density_never_enters_its_reference(data):
    normal, groups, valence = data
    before = crossfit_tables(normal, groups, valence, n_folds=3)
    changed = dict(normal, m3=dataclasses.replace(normal["m3"], atb=normal["m3"].atb * 5.0))  # another density
    after = crossfit_tables(changed, groups, valence, n_folds=3)
    assert after["m3"].id == before["m3"].id
    moved = [m for m in before if after[m].id != before[m].id]
    assert moved and not set(moved) & _fold(normal, groups, "m3")  # the other folds' references do change


def test_probes_train_on_rho_minus_the_override_reference(tmp_path):
    """DensityProbes with a reference override: target = ρ − ρ_SAED(override), on the whole grid and at points."""

    from chgdata.models.data import DensityProbes
    from chgdata.models.train import TrainConfig
    from chgdata.pipelines.delta import run_build_delta
    from chgdata.pipelines.ingest import run_ingest

    from chgdata.references import ReferenceTable
    from chgdata.saed import saed_for_structure
    from chgdata.store import open_dataset
    from tests.conftest import GPAW, need_shared

    need_shared()
    src = tmp_path / "src"
    for f in ("gpaw-0001", "gpaw-0008"):  # Si, C
        (src / f).mkdir(parents=True)
        for file in (GPAW / f).iterdir():
            (src / f / file.name).symlink_to(file)
    store = str(tmp_path / "store")
    assert not run_ingest(store, from_dir=str(src), workers=1, progress=False).failed
    run_build_delta(store, workers=1, progress=False)
    ds = open_dataset(store)
    other = ReferenceTable.from_coefficients({"Si": [3.0, 1.0], "C": [2.0, 2.0]}, [0.4, 1.0], {"Si": 4, "C": 4})
    plain = DensityProbes(store, ["gpaw-0001", "gpaw-0008"], "delta", 50)
    probes = DensityProbes(store, ["gpaw-0001", "gpaw-0008"], "delta", 50,
                           reference_overrides={"gpaw-0001": other.to_json()})
    grid = ds.density("gpaw-0001")
    want = (grid.rho.astype(np.float64) - saed_for_structure(ds.structure("gpaw-0001"), grid.rho.shape, other))
    np.testing.assert_allclose(probes._channels(0, None)[:, 0], want.reshape(-1), atol=1e-5)
    points = np.array([0, 7, 100, grid.rho.size - 1])
    np.testing.assert_allclose(probes._channels(0, points)[:, 0], want.reshape(-1)[points], atol=1e-5)
    assert not np.allclose(plain._channels(0, None), probes._channels(0, None))
    np.testing.assert_array_equal(plain._channels(1, None), probes._channels(1, None))  # no override: stored Δρ
    from chgdata.models.train_utils import crossfit_references

    # Si and C never share a fold's training part: neither gets an out-of-fold reference, both keep Δρ
    assert crossfit_references(store, ["gpaw-0001", "gpaw-0008"], 2) == {}
    with pytest.raises(ValueError, match="delta target only"):
        DensityProbes(store, ["gpaw-0001"], "total", 50, reference_overrides={"gpaw-0001": other.to_json()})
    with pytest.raises(ValueError, match="crossfit_folds needs target delta"):
        TrainConfig(store=store, target="total", crossfit_folds=5)
