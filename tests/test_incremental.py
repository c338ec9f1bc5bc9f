"""Incremental updates: rerunning ingest against a newer MP database version re-fetches only the materials whose
charge-density task changed; the new row supersedes the old one (never two visible rows); the card lists both
database versions. The MPRester boundary is a double of the real class (tests/conftest.py:fake_mprester) serving
real files from ../shared/data/gpaw."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from chgdata.pipelines.ingest import run_ingest
from pymatgen.electronic_structure.dos import CompleteDos
from pymatgen.io.vasp.outputs import Chgcar

from chgdata import contract as C
from chgdata import open_dataset
from chgdata.store import read_table
from tests.conftest import GPAW, fake_mprester, need_shared

ROOT = Path(__file__).resolve().parents[1]
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
    # the superseded row is compacted out of its fragment: a stock Parquet reader sees one row per id
    raw = [r for p in ds.loc.list_fragments(C.INDEX) for r in pq.read_table(p).to_pylist()
           if r[C.COL_ID] == "mp-1002"]
    assert [r[C.COL_TASK_ID] for r in raw] == ["mp-99002"] and second.compacted == {C.INDEX: 1, C.DOS_RAW: 1}
    assert pq.read_table(store / C.INDEX).num_rows == read_table(ds.loc, C.INDEX).num_rows == 3

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


def _recompute(chgcar: Path) -> np.ndarray:
    """Rewrite a CHGCAR as a 'recomputed' density (same grid and electron count, other values); returns the new
    total block (ρ·V)."""
    chg = Chgcar.from_file(str(chgcar))
    total = chg.data["total"]
    new = 0.8 * total + 0.2 * total.mean()
    Chgcar(chg.poscar, {**chg.data, "total": new}).write_file(str(chgcar))
    return Chgcar.from_file(str(chgcar)).data["total"]


def test_recomputed_local_chgcar_is_reingested_rebuilt_and_compacted(tmp_path):
    """A folder whose CHGCAR was recomputed is re-ingested (a touched one is not); build-delta/build-dos rebuild
    it; afterwards pandas, pyarrow and the stock example see one row per id, holding the new density."""
    import os
    import shutil

    import pandas as pd
    from chgdata.pipelines.delta import run_build_delta
    from chgdata.pipelines.dos import run_build_dos

    from chgdata.store import orphans, sha256_array
    from chgdata.verify import verify_store

    need_shared()
    src, store = tmp_path / "in", tmp_path / "s"
    ids = ["gpaw-0001", "gpaw-0002", "gpaw-0003"]
    for mid in ids:
        shutil.copytree(GPAW / mid, src / mid)
    kw = dict(workers=1, processes=False, progress=False)
    assert sorted(run_ingest(str(store), from_dir=str(src), **kw).committed) == ids
    run_build_delta(str(store), **kw)
    run_build_dos(str(store), **kw)
    old = open_dataset(store).row("gpaw-0002")

    os.utime(src / "gpaw-0001" / "CHGCAR.gz")  # touched, same bytes: hashed, found equal, skipped
    total = _recompute(src / "gpaw-0002" / "CHGCAR.gz")
    again = run_ingest(str(store), from_dir=str(src), **kw)
    assert again.committed == ["gpaw-0002"] and sorted(again.skipped) == ["gpaw-0001", "gpaw-0003"]
    assert list(again.updated) == ["gpaw-0002"] and again.updated["gpaw-0002"][0] == old[C.COL_INPUT_SHA]
    assert again.compacted[C.INDEX] == 1

    index = pd.read_parquet(store / C.INDEX)  # a stock reader, no chgdata rule
    assert sorted(index[C.COL_ID]) == ids
    row = index.set_index(C.COL_ID).loc["gpaw-0002"]
    assert row[C.COL_INPUT_SHA] == again.updated["gpaw-0002"][1] != old[C.COL_INPUT_SHA]
    assert row[C.COL_PARTITION] != old[C.COL_PARTITION]
    ds = open_dataset(store)
    rho = ds.density("gpaw-0002").rho
    assert sha256_array(rho) == row[C.COL_RHO_SHA] != old[C.COL_RHO_SHA]
    vol = ds.structure("gpaw-0002").volume
    np.testing.assert_allclose(rho * vol, total, rtol=1e-5, atol=1e-6 * np.abs(total).max())
    # the stale derived rows left with the superseded index row: nothing visible points at the old density
    assert sorted(pd.read_parquet(store / C.DELTA_INDEX)[C.COL_ID]) == ["gpaw-0001", "gpaw-0003"]

    delta = run_build_delta(str(store), **kw)
    dos = run_build_dos(str(store), **kw)
    assert delta.committed == ["gpaw-0002"] and dos.committed == ["gpaw-0002"]
    for table in (C.INDEX, C.DELTA_INDEX, C.DOS_INDEX, C.DOS_RAW):
        t = pd.read_parquet(store / table)
        assert sorted(t[C.COL_ID]) == ids, table
    drow = pd.read_parquet(store / C.DELTA_INDEX).set_index(C.COL_ID).loc["gpaw-0002"]
    assert drow[C.COL_PARTITION] == row[C.COL_PARTITION]
    np.testing.assert_array_equal(ds.read_flat(C.DELTA, "gpaw-0002"), rho.reshape(-1) - ds.read_flat(
        C.SAED, "gpaw-0002"))
    wrow = pd.read_parquet(store / C.DOS_INDEX).set_index(C.COL_ID).loc["gpaw-0002"]
    assert wrow["source_partition"] == row[C.COL_PARTITION]

    npz = tmp_path / "m.npz"  # the stock example, run as a user would
    subprocess.run([sys.executable, str(ROOT / "examples" / "read_without_chgdata.py"), "--store", str(store),
                    "--material", "gpaw-0002", "--out", str(npz)], check=True, capture_output=True)
    np.testing.assert_array_equal(np.load(npz)["rho"], rho)
    assert orphans(ds.loc) == [] and verify_store(str(store)).ok


def test_compaction_killed_midway_keeps_one_visible_current_row(tmp_path):
    """Crash window of compaction: superseded rows still in their fragments are hidden by the newest-wins rule,
    and the next compaction removes them; a fragment is replaced atomically, never left half-written."""
    from chgdata.compaction import compact
    from chgdata.store import Location

    need_shared()
    store = tmp_path / "s"
    _ingest(store, V1)
    loc = Location.parse(store)
    before = {p: Path(p).read_bytes() for p in loc.list_fragments(C.INDEX)}
    _ingest(store, V2)
    # simulate a kill before compaction: put the superseded row back into its (old) fragment
    for p, data in before.items():
        Path(p).write_bytes(data)
    assert read_table(loc, C.INDEX).num_rows == 3  # newest wins meanwhile
    assert open_dataset(store).row("mp-1002")[C.COL_TASK_ID] == "mp-99002"
    npz = tmp_path / "m.npz"  # the stock example follows the same rule in this window
    subprocess.run([sys.executable, str(ROOT / "examples" / "read_without_chgdata.py"), "--store", str(store),
                    "--material", "mp-1002", "--out", str(npz)], check=True, capture_output=True)
    np.testing.assert_array_equal(np.load(npz)["rho"], open_dataset(store).density("mp-1002").rho)
    assert compact(loc) == {C.INDEX: 1}
    assert sorted(pq.read_table(store / C.INDEX).column(C.COL_ID).to_pylist()) == ["mp-1001", "mp-1002", "mp-1003"]
    assert compact(loc) == {}  # idempotent


def test_partition_that_lost_a_reingested_material_still_builds(tmp_path):
    """Δρ keeps rho's layout when a partition's first material was re-ingested elsewhere before build-delta ran:
    the remaining material keeps its offset (earlier code appended at 0 and refused the partition forever)."""
    import shutil

    from chgdata.pipelines.delta import run_build_delta

    need_shared()
    src, store = tmp_path / "in", tmp_path / "s"
    ids = sorted(p.name for p in GPAW.glob("gpaw-*"))[:5]
    for mid in ids:
        shutil.copytree(GPAW / mid, src / mid)
    kw = dict(workers=1, processes=False, progress=False)
    run_ingest(str(store), from_dir=str(src), **kw)
    first = open_dataset(store).row(ids[0])
    mates = [m for m in ids[1:] if open_dataset(store).row(m)[C.COL_PARTITION] == first[C.COL_PARTITION]]
    assert mates and first[C.COL_RHO_OFFSET] == 0  # the premise: a partition shared with later materials
    _recompute(src / ids[0] / "CHGCAR.gz")
    assert run_ingest(str(store), from_dir=str(src), **kw).committed == [ids[0]]
    report = run_build_delta(str(store), **kw)
    assert not report.failed and sorted(report.committed) == ids
    ds = open_dataset(store)
    for mid in ids:
        np.testing.assert_array_equal(ds.read_flat(C.DELTA, mid), ds.read_flat(C.RHO, mid) - ds.read_flat(C.SAED, mid))
