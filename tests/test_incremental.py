"""Incremental updates: rerunning ingest against a newer MP database version re-fetches only the materials whose
charge-density task changed; the new row supersedes the old one (never two visible rows); the card lists both
database versions. The MPRester boundary is a double of the real class (tests/conftest.py:fake_mprester) serving
real files from ../shared/data/gpaw."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pyarrow.parquet as pq
from chgdata.pipelines.ingest import run_ingest
from pymatgen.electronic_structure.dos import CompleteDos
from pymatgen.io.vasp.outputs import Chgcar

from chgdata import contract as C
from chgdata import open_dataset
from chgdata.store import read_table
from tests.conftest import GPAW, fake_mprester, need_shared

KEY = "abcdefghijklmnopqrstuvwxyz012345"

#: Two database versions: mp-1002's charge density is recomputed (new task, other data) in the second.
V1 = {"version": "2025.09.25", "mp-1001": ("gpaw-0001", "mp-91001"), "mp-1002": ("gpaw-0002", "mp-91002"),
      "mp-1003": ("gpaw-0003", "mp-91003")}
V2 = {**V1, "version": "2026.02.01", "mp-1002": ("gpaw-0006", "mp-99002")}


CALLS: list[tuple[str, str]] = []


def versioned_client(db: dict):
    """An MPRester double (:func:`tests.conftest.fake_mprester`, so only real mp-api names) for one database
    version; records which materials were looked up ("task") and fetched."""
    by_task = {db[mid][1]: (mid, db[mid][0]) for mid in db if mid != "version"}

    def materials_search(material_ids=None, fields=None, **kw):
        CALLS.extend(("task", m) for m in material_ids)
        return [{"material_id": m, "calc_types": {db[m][1]: "GGA Static"}} for m in material_ids]

    def tasks_search(task_ids=None, fields=None, **kw):
        return [{"task_id": t, "last_updated": db["version"], "calc_type": "GGA Static", "run_type": "GGA"}
                for t in task_ids]

    def structure(material_id, final=True, conventional_unit_cell=False):
        CALLS.append(("structure", material_id))
        return Chgcar.from_file(str(GPAW / db[material_id][0] / "CHGCAR.gz")).structure

    def chgcar(task_id, inc_task_doc=False):
        mid, folder = by_task[task_id]
        CALLS.append(("chgcar", mid))
        return Chgcar.from_file(str(GPAW / folder / "CHGCAR.gz"))

    def dos(material_id):
        with gzip.open(GPAW / db[material_id][0] / "dos.json.gz", "rt") as fh:
            d = json.load(fh)
        d.setdefault("pdos", [])
        return CompleteDos.from_dict(d)

    return fake_mprester({"materials.search": materials_search, "materials.tasks.search": tasks_search,
                          "get_structure_by_material_id": structure, "get_charge_density_from_task_id": chgcar,
                          "get_dos_by_material_id": dos}, db_version=db["version"])


def _ingest(store, db):
    CALLS.clear()
    return run_ingest(str(store), mp_ids=["mp-1001", "mp-1002", "mp-1003"], api_key=KEY,
                      client_factory=lambda key: versioned_client(db), workers=1, processes=False, progress=False)


def test_newer_database_refetches_only_changed_materials(tmp_path):
    need_shared()
    store = tmp_path / "s"
    first = _ingest(store, V1)
    assert sorted(first.committed) == ["mp-1001", "mp-1002", "mp-1003"]
    old = open_dataset(store)
    old_rows = {m: old.row(m) for m in old.material_ids}

    same = _ingest(store, V1)  # same version: nothing fetched again
    assert same.committed == [] and not same.updated and sorted(same.skipped) == sorted(first.committed)
    assert not [c for c in CALLS if c[0] != "task"]

    second = _ingest(store, V2)
    assert second.committed == ["mp-1002"] and second.updated == {"mp-1002": ("mp-91002", "mp-99002")}
    assert sorted(second.skipped) == ["mp-1001", "mp-1003"]
    assert {mid for what, mid in CALLS if what != "task"} == {"mp-1002"}

    ds = open_dataset(store)
    assert sorted(ds.material_ids) == ["mp-1001", "mp-1002", "mp-1003"]  # one visible row per id
    new = ds.row("mp-1002")
    assert new[C.COL_TASK_ID] == "mp-99002" and new[C.COL_DB_VERSION] == "2026.02.01"
    assert new[C.COL_PARTITION] != old_rows["mp-1002"][C.COL_PARTITION]
    for mid in ("mp-1001", "mp-1003"):
        assert ds.row(mid) == old_rows[mid]
    chg = Chgcar.from_file(str(GPAW / "gpaw-0006" / "CHGCAR.gz"))
    rho = ds.density("mp-1002").rho
    assert rho.shape == chg.data["total"].shape
    np.testing.assert_allclose(rho * chg.structure.volume, chg.data["total"], rtol=1e-6,
                               atol=1e-6 * np.abs(chg.data["total"]).max())
    assert ds.card["provenance"]["database_versions"] == ["2025.09.25", "2026.02.01"]
    # the superseded row is kept in its fragment (history) but is not visible
    raw = [r for p in ds.loc.list_fragments(C.INDEX) for r in pq.read_table(p).to_pylist()
           if r[C.COL_ID] == "mp-1002"]
    assert sorted(r[C.COL_TASK_ID] for r in raw) == ["mp-91002", "mp-99002"]
    assert read_table(ds.loc, C.INDEX).num_rows == 3

    again = _ingest(store, V2)  # the update is itself resumable: nothing more to do
    assert again.committed == [] and not again.updated


def test_derived_stages_rebuild_a_reingested_material(tmp_path):
    """After an update, build-delta and build-dos rebuild the changed material (its old rows are stale)."""
    from chgdata.pipelines.delta import run_build_delta
    from chgdata.pipelines.dos import run_build_dos

    store = tmp_path / "s"
    _ingest(store, V1)
    kw = dict(workers=1, processes=False, progress=False)
    run_build_delta(str(store), **kw)
    run_build_dos(str(store), **kw)
    _ingest(store, V2)
    delta = run_build_delta(str(store), **kw)
    dos = run_build_dos(str(store), **kw)
    assert delta.committed == ["mp-1002"] and dos.committed == ["mp-1002"]
    ds = open_dataset(store)
    part = ds.row("mp-1002")[C.COL_PARTITION]
    drow = {r[C.COL_ID]: r for r in ds.table(C.DELTA_INDEX).to_pylist()}["mp-1002"]
    assert drow[C.COL_PARTITION] == part and ds.table(C.DELTA_INDEX).num_rows == 3
    wrow = {r[C.COL_ID]: r for r in ds.table(C.DOS_INDEX).to_pylist()}["mp-1002"]
    assert wrow["source_partition"] == part and ds.table(C.DOS_INDEX).num_rows == 3
    rho = ds.read_flat(C.RHO, "mp-1002")
    np.testing.assert_array_equal(ds.read_flat(C.DELTA, "mp-1002"), rho - ds.read_flat(C.SAED, "mp-1002"))
