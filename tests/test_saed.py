"""Tests of chgdata.saed: electron counts, cell/order invariance, smoothness, fast vs naive, user references."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from chgdata.references import (
    DEFAULT_SIGMAS,
    ReferenceTable,
    material_normal_equations,
    solve_reference,
    sum_normal_equations,
)
from chgdata.saed import find_user_reference, saed_at_points, saed_density, user_reference_density
from chgdata.valences import valence_counts
from tests.conftest import SHARED_DATA as DATA
from tests.conftest import VASP_CHGCARS, chgcar_material, material_counts


def _load(chgcar: Path) -> dict:
    return chgcar_material(chgcar, f"{chgcar.parent.parent.name}/{chgcar.parent.name}")


def _dataset(name: str) -> list[dict]:
    root = DATA / name
    if not root.is_dir():
        pytest.skip(f"shared data not found at {root}")
    if name == "vasp":
        return [_load(root / n / "CHGCAR.gz") for n in VASP_CHGCARS if (root / n / "CHGCAR.gz").is_file()]
    return [_load(d / "CHGCAR.gz") for d in sorted(root.glob("gpaw-*")) if (d / "CHGCAR.gz").is_file()]


def _fitted(mats: list[dict], version: str) -> ReferenceTable:
    val = valence_counts([material_counts(m) for m in mats])
    parts = [material_normal_equations(m["lattice"], m["frac"], m["species"], m["rho"], np.random.default_rng([5, i]),
                                       n_points=2048, material_id=m["id"]) for i, m in enumerate(mats)]
    return solve_reference(sum_normal_equations(parts), val, dataset_version=version)


@pytest.fixture(scope="module")
def gpaw():
    mats = _dataset("gpaw")
    return mats, _fitted(mats, "test-gpaw")


@pytest.fixture(scope="module")
def vasp():
    mats = _dataset("vasp")
    return mats, _fitted(mats, "test-vasp")


def _synthetic_table() -> ReferenceTable:
    rng = np.random.default_rng(3)
    k = len(DEFAULT_SIGMAS)
    coef = {e: rng.dirichlet(np.ones(k)) * v for e, v in (("Si", 4), ("O", 6), ("Fe", 8))}
    return ReferenceTable.from_coefficients(coef, DEFAULT_SIGMAS, {"Si": 4, "O": 6, "Fe": 8})


LAT = np.array([[4.1, 0.0, 0.0], [0.7, 3.9, 0.0], [-0.4, 0.5, 4.6]])
FRAC = np.array([[0.1, 0.2, 0.3], [0.55, 0.45, 0.8], [0.9, 0.05, 0.6]])
SPECIES = ["Si", "O", "Fe"]


@pytest.mark.parametrize("name", ["gpaw", "vasp"])
def test_integral_equals_electron_count(name, request):
    mats, table = request.getfixturevalue(name)
    assert len(mats) >= (150 if name == "gpaw" else 8)
    for m in mats:
        s = saed_density(m["lattice"], m["frac"], m["species"], m["rho"].shape, table)
        assert s.dtype == np.float32 and s.shape == m["rho"].shape
        n_saed = float(s.astype(np.float64).mean()) * m["volume"]
        assert n_saed == pytest.approx(m["n_electrons"], rel=5e-3), m["id"]
        n_delta = float((m["rho"] - s).mean()) * m["volume"]
        assert abs(n_delta) < 5e-3 * m["n_electrons"], m["id"]
        # the fit helps: Σ|Δρ| < Σ|ρ| (in-sample)
        assert np.abs(m["rho"] - s).sum() < np.abs(m["rho"]).sum(), m["id"]


def test_supercell_and_atom_order_invariance():
    table = _synthetic_table()
    shape = (20, 18, 24)
    base = saed_density(LAT, FRAC, SPECIES, shape, table)
    lat2 = LAT.copy()
    lat2[0] *= 2
    frac2 = np.vstack([FRAC * [0.5, 1, 1], (FRAC + [1, 0, 0]) * [0.5, 1, 1]])
    sup = saed_density(lat2, frac2, SPECIES * 2, (40, 18, 24), table)
    np.testing.assert_allclose(sup, np.concatenate([base, base], axis=0), atol=2e-5 * np.abs(base).max())
    perm = [2, 0, 1]
    shuffled = saed_density(LAT, FRAC[perm], [SPECIES[i] for i in perm], shape, table)
    np.testing.assert_allclose(shuffled, base, atol=1e-5 * np.abs(base).max())
    # a rigid shift by one grid step along y is a roll of the grid; atoms outside [0, 1) are wrapped
    shifted = saed_density(LAT, FRAC + [0, 1 / 18, 0] + [-2, 1, 3], SPECIES, shape, table)
    np.testing.assert_allclose(shifted, np.roll(base, 1, axis=1), atol=1e-5 * np.abs(base).max())


def test_fast_matches_naive_on_real_structure(gpaw):
    mats, table = gpaw
    si = next(m for m in mats if m["id"].endswith("gpaw-0001"))  # Si diamond, 2 atoms
    shape = (48, 48, 48)  # ~0.08 Å spacing: every width of the table is resolved
    fast = saed_density(si["lattice"], si["frac"], si["species"], shape, table)
    rng = np.random.default_rng(0)
    idx = rng.choice(fast.size, 400, replace=False)
    frac_pts = np.stack(np.unravel_index(idx, shape), axis=-1) / np.array(shape)
    naive = saed_at_points(si["lattice"], si["frac"], si["species"], frac_pts @ si["lattice"], table)
    err = np.abs(fast.reshape(-1)[idx] - naive).max()
    assert err < 1e-4 * np.abs(naive).max(), err


def test_smooth_in_atom_position():
    table = _synthetic_table()
    shape = (24, 24, 24)
    steps = np.linspace(-0.03, 0.03, 25)  # atom 0 crosses the cell boundary along x at step 0.1 - ... wrapped
    vals = []
    for dx in steps:
        f = FRAC.copy()
        f[0, 0] = 0.0 + dx  # crosses x = 0 (wraps to 0.97..)
        vals.append(saed_density(LAT, f, SPECIES, shape, table)[1, 5, 7])
    vals = np.array(vals, dtype=np.float64)
    d1 = np.diff(vals)
    d2 = np.diff(vals, 2)
    assert np.abs(d1).max() > 0  # it does move
    assert np.abs(d2).max() < 0.2 * np.abs(d1).max()  # no jumps: second differences small against first
    # real-space points: continuous as a point passes an atom's cutoff sphere (tails < 1e-10 of peak)
    r_c = table.cutoff_radius()
    line = np.array([[x, 0.0, 0.0] for x in np.linspace(r_c - 0.05, r_c + 0.05, 11)])
    far = saed_at_points(np.eye(3) * 100.0, [[0, 0, 0]], ["O"], line, table)
    assert np.abs(np.diff(far)).max() < 1e-9 * table.density("O", np.array([0.0]))[0]


def test_user_reference_density(tmp_path):
    from pymatgen.io.vasp import Chgcar

    src = DATA / "vasp" / "Li_bcc_nospin" / "CHGCAR.gz"
    if not src.is_file():
        pytest.skip("no vasp data")
    mat = tmp_path / "m"
    mat.mkdir()
    shutil.copy(src, mat / "CHGCAR.gz")
    assert find_user_reference(mat / "CHGCAR.gz") is None
    assert user_reference_density(mat / "CHGCAR.gz") is None
    c = Chgcar.from_file(str(src))
    ref = np.random.default_rng(1).random(c.data["total"].shape) * 3.0
    Chgcar(c.poscar, {"total": ref}).write_file(str(mat / "CHGCAR.saed"))
    got = user_reference_density(mat / "CHGCAR.gz")
    assert got.dtype == np.float32 and got.shape == ref.shape
    np.testing.assert_allclose(got, ref / c.structure.volume, rtol=1e-4)
    # a reference on another grid is refused
    (mat / "CHGCAR.saed").unlink()
    Chgcar(c.poscar, {"total": ref[:, :, :16]}).write_file(str(mat / "CHGCAR.saed"))
    with pytest.raises(ValueError, match="grid"):
        user_reference_density(mat / "CHGCAR.gz")


def test_cell_volume_is_the_triple_product_and_independent_of_blas():
    """ingest divides ρ·V by this volume: plain float arithmetic, so the stored bits do not depend on the CPU's
    BLAS kernel (np.linalg.det gave another last bit under OPENBLAS_CORETYPE=Prescott than under Haswell)."""
    import subprocess
    import sys

    from chgdata.grid import cell_volume

    lat = np.array([[0.0, 2.7, 2.7], [2.7, 0.0, 2.7], [2.7, 2.7, 0.0]])
    assert cell_volume(lat) == pytest.approx(abs(np.linalg.det(lat)), rel=1e-14)
    code = ("import numpy as np; from chgdata.grid import cell_volume; rng = np.random.default_rng(0); "
            "print(repr([cell_volume(rng.normal(size=(3, 3)) + 4 * np.eye(3)) for _ in range(200)]))")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**__import__("os").environ, "OPENBLAS_CORETYPE": ct}).stdout
            for ct in ("Prescott", "Haswell")}
    assert len(outs) == 1 and outs.pop().startswith("[")
