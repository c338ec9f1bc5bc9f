"""Ingest of every real material in ../shared/data: the stored grids give back pymatgen's CHGCAR data."""

from __future__ import annotations

import numpy as np
import pytest
from chgdata.pipelines.ingest import run_ingest
from pymatgen.io.vasp.outputs import Chgcar

from chgdata import contract as C
from chgdata import open_dataset
from tests.conftest import GPAW, VASP


def _check_material(ds, folder):
    mid = folder.name
    row = ds.row(mid)
    chg = Chgcar.from_file(str(folder / "CHGCAR.gz"))
    grid = ds.density(mid)
    vol = chg.structure.volume
    assert grid.rho.shape == chg.data["total"].shape
    # stored ρ (e/Å³, float32) × V equals pymatgen's ρ·V to float32 precision
    np.testing.assert_allclose(grid.rho.astype(np.float64) * vol, chg.data["total"],
                               rtol=2e-7, atol=2e-7 * np.abs(chg.data["total"]).max())
    if "diff" in chg.data:
        assert row[C.COL_SPIN] and grid.mag is not None
        np.testing.assert_allclose(grid.mag.astype(np.float64) * vol, chg.data["diff"],
                                   rtol=2e-7, atol=2e-7 * np.abs(chg.data["total"]).max())
    else:
        assert grid.mag is None and not row[C.COL_SPIN]
    # ∫ρ dV equals the stored electron count, and pymatgen's own count
    assert grid.electrons() == pytest.approx(row[C.COL_NELECT], rel=1e-6)
    assert row[C.COL_NELECT] == pytest.approx(chg.data["total"].mean(), rel=1e-5)
    np.testing.assert_allclose(np.asarray(row[C.COL_LATTICE]).reshape(3, 3), chg.structure.lattice.matrix)


def test_vasp_roundtrip(vasp_store):
    ds = open_dataset(vasp_store)
    folders = sorted(p.parent for p in VASP.glob("*/CHGCAR.gz"))
    assert len(folders) >= 8
    for folder in folders:
        _check_material(ds, folder)
    # every folder is a material: DOS-only folders are committed with their DOS, AECCAR-only with rho_ae
    assert set(ds.material_ids) == {p.name for p in VASP.iterdir() if p.is_dir() and p.name != "LICENSES"}
    h2o = ds.row("H2O_molecule")
    assert h2o[C.COL_RHO_OFFSET] == -1 and h2o[C.COL_AE_OFFSET] >= 0 and h2o[C.COL_HAS_DOS]


def test_gpaw_roundtrip(gpaw_store):
    ds = open_dataset(gpaw_store)
    folders = sorted(p.parent for p in GPAW.glob("*/CHGCAR.gz"))
    assert len(ds) == len(folders) > 100
    rng = np.random.default_rng(0)
    for folder in rng.choice(folders, size=40, replace=False):  # pymatgen parsing dominates: a seeded 40
        _check_material(ds, folder)
    spin = [r for r in ds.index.to_pylist() if r[C.COL_SPIN]]
    assert spin and all(r[C.COL_MAG_OFFSET] >= 0 for r in spin)
    assert all(abs(r[C.COL_NELECT] - round(r[C.COL_NELECT])) < 1e-3 for r in ds.index.to_pylist())


def test_density_reads_only_its_material(gpaw_store, monkeypatch):
    """density() slices one material out of its partition: no other material's points are read."""
    ds = open_dataset(gpaw_store)
    mid = ds.material_ids[3]
    row = ds.row(mid)
    arr = ds.array(C.RHO, row[C.COL_PARTITION])
    assert arr.shape[0] > row[C.COL_NPOINTS]  # partitions hold several materials
    seen = []
    orig = type(arr).__getitem__

    def spy(self, sel):
        seen.append(sel)
        return orig(self, sel)

    monkeypatch.setattr(type(arr), "__getitem__", spy)
    ds.density(mid)
    assert seen[0] == slice(row[C.COL_RHO_OFFSET], row[C.COL_RHO_OFFSET] + row[C.COL_NPOINTS])


def test_rerun_resumes_without_duplicates(tmp_path):
    from tests.conftest import need_shared

    need_shared()
    store = str(tmp_path / "s")
    first = run_ingest(store, from_dir=str(VASP), workers=1, processes=False, progress=False)
    again = run_ingest(store, from_dir=str(VASP), workers=1, processes=False, progress=False)
    assert again.committed == [] and sorted(again.skipped) == sorted(first.committed)
    ids = open_dataset(store).material_ids
    assert len(ids) == len(set(ids)) == len(first.committed)


def test_card_and_partition_layout(gpaw_store):
    ds = open_dataset(gpaw_store)
    card = ds.card
    assert card["schema_version"] == C.SCHEMA_VERSION and card["units"]["rho"] == "e/Å^3"
    assert card["provenance"]["sources"] == ["gpaw"] and card["provenance"]["code_version"]
    arr = ds.array(C.RHO, ds.row(ds.material_ids[0])[C.COL_PARTITION])
    assert arr.dtype == np.float32 and arr.ndim == 1
    assert 1 << 20 <= arr.chunks[0] * 4 <= 4 << 20 and arr.shards is not None
