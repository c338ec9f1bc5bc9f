"""build-delta on the real shared data: electron counts, Δρ ≈ 0 on integration, layout, resume, reuse."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from chgdata.pipelines.delta import run_build_delta
from chgdata.pipelines.ingest import run_ingest

from chgdata import contract as C
from chgdata import open_dataset
from chgdata.contract import REFERENCE_FILE
from chgdata.free_atoms import SHIPPED_REFERENCES
from chgdata.references import ReferenceTable
from chgdata.store import StoreError, orphans
from tests.conftest import GPAW, need_shared


@pytest.fixture(scope="module")
def delta_stores(gpaw_store, vasp_store, tmp_path_factory):
    """Copies of the session stores with build-delta run on them (the session stores stay untouched)."""
    out = {}
    for name, src in (("gpaw", gpaw_store), ("vasp", vasp_store)):
        dst = str(tmp_path_factory.mktemp("delta") / name)
        shutil.copytree(src, dst)
        report = run_build_delta(dst, workers=2, progress=False)
        assert not report.failed, report.failed
        out[name] = (dst, report)
    return out


@pytest.mark.parametrize("name", ["gpaw", "vasp"])
def test_saed_carries_the_electron_count_and_delta_integrates_to_zero(delta_stores, name):
    store, report = delta_stores[name]
    ds = open_dataset(store)
    rows = {r[C.COL_ID]: r for r in ds.table(C.DELTA_INDEX).to_pylist()}
    with_rho = [r for r in ds.index.to_pylist() if r[C.COL_RHO_OFFSET] >= 0]
    assert set(rows) == {r[C.COL_ID] for r in with_rho} and len(rows) == ds.table(C.DELTA_INDEX).num_rows
    for r in with_rho:
        d = rows[r[C.COL_ID]]
        assert d["saed_electrons"] == pytest.approx(r[C.COL_NELECT], rel=5e-3), r[C.COL_ID]
        assert abs(d["delta_integral"]) < 5e-3 * r[C.COL_NELECT], r[C.COL_ID]
        assert d["reference_id"] == report.reference_id


def test_arrays_share_rho_layout_and_checksums(delta_stores):
    from chgdata.store import sha256_array

    store, _ = delta_stores["gpaw"]
    ds = open_dataset(store)
    rows = {r[C.COL_ID]: r for r in ds.table(C.DELTA_INDEX).to_pylist()}
    for mid in ds.material_ids[:20]:
        rho = ds.read_flat(C.RHO, mid)
        saed = ds.read_flat(C.SAED, mid)
        delta = ds.read_flat(C.DELTA, mid)
        np.testing.assert_array_equal(delta, rho - saed)
        assert sha256_array(saed) == rows[mid]["saed_sha256"] and sha256_array(delta) == rows[mid]["delta_sha256"]
    assert orphans(ds.loc) == []


def test_saed_explains_most_of_the_density(delta_stores):
    """Σ|Δρ| < Σ|ρ| for every material; card and info report the fraction and mean ratio."""
    store, _ = delta_stores["gpaw"]
    card = open_dataset(store).card["saed"]
    assert card["fraction_abs_delta_lt_abs_rho"] == 1.0
    assert card["mean_abs_delta_over_abs_rho"] < 0.1
    from chgdata.cli.main import app
    from typer.testing import CliRunner

    res = CliRunner().invoke(app, ["info", "--store", store])
    assert res.exit_code == 0 and "fraction_abs_delta_lt_abs_rho" in res.output
    # which SAED, said in words (issue: info's fitted id and evaluate's free-atom id were both bare ids)
    assert "SAED reference (the store's)" in res.output and "train-fitted reference" in res.output


def test_rerun_resumes_and_reference_is_reused(delta_stores, tmp_path):
    store, report = delta_stores["gpaw"]
    again = run_build_delta(store, workers=1, processes=False, progress=False)
    assert again.committed == [] and again.reference_kind == "stored" and again.reference_id == report.reference_id
    # another dataset predicts with the same reference: --reference FILE
    need_shared()
    calcs = tmp_path / "calcs"
    for mid in ("gpaw-0001", "gpaw-0002", "gpaw-0003"):
        shutil.copytree(GPAW / mid, calcs / mid)
    other = str(tmp_path / "other")
    run_ingest(other, from_dir=str(calcs), workers=1, processes=False, progress=False)
    ref_file = tmp_path / "ref.json"
    ref_file.write_text((open_dataset(store).loc.fs.cat_file(f"{store}/{REFERENCE_FILE}")).decode())
    rep = run_build_delta(other, reference=str(ref_file), workers=1, processes=False, progress=False)
    assert rep.reference_id == report.reference_id and rep.reference_kind == "file" and len(rep.committed) == 3
    assert ReferenceTable.load(ref_file).id == report.reference_id


def test_reference_missing_an_element_is_refused(delta_stores, tmp_path):
    gpaw_store, _ = delta_stores["gpaw"]
    vasp_store, _ = delta_stores["vasp"]
    target = tmp_path / "v"
    shutil.copytree(vasp_store, target)
    for p in target.glob("delta.parquet"):
        shutil.rmtree(p)
    (target / REFERENCE_FILE).unlink()
    with pytest.raises(StoreError, match="has no entry for"):
        run_build_delta(str(target), reference=f"{gpaw_store}/{REFERENCE_FILE}", workers=1, processes=False,
                        progress=False)


def test_nonnegative_references(tmp_path):
    """--nonnegative gives ρ_Z(r) ≥ 0 everywhere, still integrating to the valence counts."""
    need_shared()
    calcs = tmp_path / "calcs"
    for mid in ("gpaw-0001", "gpaw-0002", "gpaw-0003", "gpaw-0004"):
        shutil.copytree(GPAW / mid, calcs / mid)
    store = str(tmp_path / "s")
    run_ingest(store, from_dir=str(calcs), workers=1, processes=False, progress=False)
    rep = run_build_delta(store, workers=1, processes=False, progress=False, nonnegative=True)
    assert rep.reference_kind == "fitted-nonnegative" and len(rep.committed) == 4
    table = ReferenceTable.load(f"{store}/{REFERENCE_FILE}")
    for el in table.elements:
        assert (table.rho[el] >= 0).all()
        integral = 4 * np.pi * np.trapezoid(table.r**2 * table.rho[el], table.r)
        assert integral == pytest.approx(table.valence[el], rel=1e-3)


def test_fit_does_not_depend_on_how_materials_fell_into_partitions(tmp_path):
    """The same materials ingested in one run and in two halves (as an interrupted run resumed would) land in
    different partitions; the fitted reference and every Δρ checksum must still be identical."""
    need_shared()
    ids = sorted(p.name for p in GPAW.glob("gpaw-*"))[:10]
    whole, halves = tmp_path / "whole", tmp_path / "halves"
    for mid in ids:
        shutil.copytree(GPAW / mid, whole / mid)
        shutil.copytree(GPAW / mid, (halves / "a" if mid < ids[5] else halves / "b") / mid)
    kw = dict(workers=1, processes=False, progress=False)
    run_ingest(str(tmp_path / "s1"), from_dir=str(whole), **kw)
    run_ingest(str(tmp_path / "s2"), from_dir=str(halves / "a"), **kw)
    run_ingest(str(tmp_path / "s2"), from_dir=str(halves / "b"), workers=3, processes=False, progress=False)
    d1, d2 = open_dataset(tmp_path / "s1"), open_dataset(tmp_path / "s2")

    def grouping(ds):
        by = {}
        for r in ds.index.to_pylist():
            by.setdefault(r[C.COL_PARTITION], []).append(r[C.COL_ID])
        return sorted(sorted(v) for v in by.values())

    assert sorted(d1.material_ids) == sorted(d2.material_ids) == ids
    assert grouping(d1) != grouping(d2)  # the premise: different partitions
    r1, r2 = run_build_delta(str(tmp_path / "s1"), **kw), run_build_delta(str(tmp_path / "s2"), **kw)
    assert r1.reference_kind == r2.reference_kind == "fitted"
    assert r1.reference_id == r2.reference_id
    sums = [{r[C.COL_ID]: (r["saed_sha256"], r["delta_sha256"]) for r in d.table(C.DELTA_INDEX).to_pylist()}
            for d in (d1, d2)]
    assert sums[0] == sums[1] and len(sums[0]) == len(ids)


def test_shipped_free_atom_reference_by_name(tmp_path):
    """``build-delta --reference gpaw-free-atoms``: the shipped free-atom table, named as such in the card; an
    unknown name is one clear error line."""
    from chgdata.cli.main import app
    from typer.testing import CliRunner

    need_shared()
    calcs = tmp_path / "calcs"
    for mid in ("gpaw-0001", "gpaw-0002"):
        shutil.copytree(GPAW / mid, calcs / mid)
    store = str(tmp_path / "s")
    run_ingest(store, from_dir=str(calcs), workers=1, processes=False, progress=False)
    bad = CliRunner().invoke(app, ["build-delta", "--store", store, "--reference", "no-such-table", "-q", "-w", "1"])
    assert bad.exit_code == 1 and "gpaw-free-atoms" in bad.output
    rep = run_build_delta(store, reference="gpaw-free-atoms", workers=1, processes=False, progress=False)
    assert rep.reference_kind == "shipped gpaw-free-atoms" and len(rep.committed) == 2
    saed = open_dataset(store).card["saed"]
    assert saed["reference_id"] == ReferenceTable.load(SHIPPED_REFERENCES["gpaw-free-atoms"]).id
    assert saed["description"].startswith("superposition of isolated neutral-atom densities")
    assert 0.0 < saed["mean_nmae_saed_percent"] < 20.0
