"""The Materials Project path, tested at the MPRester boundary with a client serving real shared data.

The injected client returns real pymatgen objects (Chgcar, Structure, CompleteDos) read from
../shared/data/gpaw under MP-style ids; it lives only in the tests, never in the package.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
from chgdata.pipelines.ingest import run_ingest
from pymatgen.electronic_structure.dos import CompleteDos
from pymatgen.io.vasp.outputs import Chgcar

from chgdata import contract as C
from chgdata import open_dataset
from chgdata.sources.mp import MPSource, Secret
from tests.conftest import GPAW, fake_mprester, need_shared

KEY = "abcdefghijklmnopqrstuvwxyz012345"  # looks like a real key; must never be written anywhere

FOLDERS = {"mp-1001": "gpaw-0001", "mp-1002": "gpaw-0002", "mp-1003": "gpaw-0003", "mp-1004": "gpaw-0004"}


class MPRestError(Exception):
    """Shaped like mp_api's error: the HTTP status is in the message."""


#: MP task documents per material: the current static task, an older static one and a relaxation (both ignored).
def _tasks(mid: str) -> list[dict]:
    n = mid[3:]
    calc = "GGA+U Static" if mid == "mp-1003" else "GGA Static"
    return [{"task_id": f"mp-9{n}", "last_updated": "2025-06-01T00:00:00", "calc_type": calc,
             "run_type": calc.split()[0]},
            {"task_id": f"mp-8{n}", "last_updated": "2024-01-01T00:00:00", "calc_type": calc,
             "run_type": calc.split()[0]},
            {"task_id": f"mp-7{n}", "last_updated": "2026-01-01T00:00:00", "calc_type": "GGA Structure Optimization",
             "run_type": "GGA"}]


CALLS: list[tuple[str, str]] = []


def shared_data_client(api_key: Secret, flaky: dict | None = None):
    """An MPRester double (:func:`tests.conftest.fake_mprester`) answering from real files; ``flaky`` injects
    failures per (call, material id)."""
    assert api_key.get() == KEY  # the key reaches the boundary, and only there
    flaky = flaky if flaky is not None else {}

    def maybe_fail(what, mid):
        CALLS.append((what, mid))
        queue = flaky.get((what, mid))
        if queue:
            raise queue.pop(0)

    def folder(mid) -> Path:
        if mid not in FOLDERS:
            raise MPRestError(f"REST query returned with error status code 404 on URL .../{mid}: not found")
        return GPAW / FOLDERS[mid]

    def structure(material_id, final=True, conventional_unit_cell=False):
        maybe_fail("structure", material_id)
        return Chgcar.from_file(str(folder(material_id) / "CHGCAR.gz")).structure

    def materials_search(material_ids=None, fields=None, **kw):
        for mid in material_ids:
            maybe_fail("tasks", mid)
        return [{"material_id": m, "calc_types": {t["task_id"]: t["calc_type"] for t in _tasks(m)}}
                for m in material_ids if m in FOLDERS]

    def tasks_search(task_ids=None, fields=None, **kw):
        docs = [t for m in FOLDERS for t in _tasks(m) if t["task_id"] in task_ids]
        return [{f: d[f] for f in fields} for d in docs]

    def chgcar(task_id, inc_task_doc=False):
        mid = "mp-" + task_id[4:]
        maybe_fail("chgcar", mid)
        assert task_id == f"mp-9{mid[3:]}", task_id  # the newest static task, not a relaxation
        return Chgcar.from_file(str(folder(mid) / "CHGCAR.gz"))

    def dos(material_id):
        maybe_fail("dos", material_id)
        with gzip.open(folder(material_id) / "dos.json.gz", "rt") as fh:
            d = json.load(fh)
        d.setdefault("pdos", [])
        return CompleteDos.from_dict(d)

    return fake_mprester({"get_structure_by_material_id": structure, "materials.search": materials_search,
                          "materials.tasks.search": tasks_search, "get_charge_density_from_task_id": chgcar,
                          "get_dos_by_material_id": dos}, db_version="2025.09.25")


def _run(store, ids, flaky=None):
    need_shared()
    CALLS.clear()
    return run_ingest(str(store), mp_ids=ids, api_key=KEY, client_factory=lambda key: shared_data_client(key, flaky),
                      workers=1, processes=False, progress=False)


def test_mp_ingest_records_ids_task_ids_and_data(tmp_path):
    report = _run(tmp_path / "s", ["mp-1001", "mp-1002", "mp-1003"])
    assert sorted(report.committed) == ["mp-1001", "mp-1002", "mp-1003"] and not report.failed
    ds = open_dataset(tmp_path / "s")
    row = ds.row("mp-1001")
    assert row[C.COL_SOURCE] == "mp" and row[C.COL_TASK_ID] == "mp-91001"  # newest static, not the relaxation
    assert (row[C.COL_CALC_TYPE], row[C.COL_RUN_TYPE]) == ("GGA Static", "GGA")
    assert (ds.row("mp-1003")[C.COL_CALC_TYPE], ds.row("mp-1003")[C.COL_RUN_TYPE]) == ("GGA+U Static", "GGA+U")
    assert row[C.COL_DB_VERSION] == "2025.09.25" and row[C.COL_HAS_DOS]
    chg = Chgcar.from_file(str(GPAW / "gpaw-0001" / "CHGCAR.gz"))
    np.testing.assert_allclose(ds.density("mp-1001").rho * chg.structure.volume, chg.data["total"], rtol=1e-6,
                               atol=1e-6 * chg.data["total"].max())
    assert ds.card["provenance"]["database_versions"] == ["2025.09.25"]


OPENED: list = []


def counting_client(key):
    """:func:`shared_data_client`, remembering every client opened (module level: Dask pickles it by name)."""
    OPENED.append(shared_data_client(key))
    return OPENED[-1]


def test_one_client_per_partition_and_one_database_version_per_run(tmp_path):
    need_shared()
    from chgdata.pipelines.ingest import ingest_partition
    from chgdata.pipelines.ingest_items import Item

    from chgdata.store import new_partition_name

    OPENED.clear()
    mp = MPSource(api_key=Secret(KEY), client_factory=counting_client)
    items = [Item(m) for m in ("mp-1001", "mp-1002", "mp-1003")]
    res = ingest_partition(str(tmp_path / "p"), new_partition_name(), items, mp, "2025.09.25")
    assert len(res["committed"]) == 3 and len(OPENED) == 1  # one client for the partition, not one per material
    assert OPENED[0].materials.search.call_count == 1  # and one batched task lookup
    assert OPENED[0].materials.tasks.search.call_count == 1

    OPENED.clear()
    report = run_ingest(str(tmp_path / "s"), mp_ids=["mp-1001", "mp-1002", "mp-1003", "mp-1004"], api_key=KEY,
                        client_factory=counting_client, workers=1, processes=False, progress=False)
    assert len(report.committed) == 4
    assert len(OPENED) == 1 + report.partitions  # the driver's (database version, update check) + one per task
    for mpr in OPENED:
        mpr.get_database_version.assert_not_called()  # deprecated in mp-api; the driver reads db_version once


def test_malformed_ids_rejected_before_any_network_call(tmp_path):
    report = _run(tmp_path / "s", ["mp-1001", "../x", "mp-12/../../etc", "mp-", "149"])
    assert report.committed == ["mp-1001"]
    assert set(report.failed) == {"../x", "mp-12/../../etc", "mp-", "149"}
    assert all("malformed Materials Project id" in why for why in report.failed.values())
    assert {mid for _, mid in CALLS} == {"mp-1001"}
    fails = open_dataset(tmp_path / "s").failures.to_pylist()
    assert {f["material_id"] for f in fails} == set(report.failed)


def test_one_retry_layer_errors_from_the_client_are_not_retried_again(tmp_path):
    """mp-api's session retries 429/502/504 and honours Retry-After; an error that still reaches chgdata fails the
    material at once (a second layer would multiply the requests), and a later run retries it."""
    from mp_api.client.core.client import _Rester

    retry = _Rester._create_session("k" * 32, False, {}).get_adapter("https://api.materialsproject.org").max_retries
    assert {429, 502, 504} <= set(retry.status_forcelist) and retry.respect_retry_after_header and retry.total >= 1
    flaky = {("chgcar", "mp-1001"): [MPRestError("REST query returned with error status code 429 on URL")],
             ("chgcar", "mp-1002"): [ConnectionError("connection reset by peer")]}
    report = _run(tmp_path / "s", ["mp-1001", "mp-1002", "mp-4040"], flaky)
    assert not report.committed and "429" in report.failed["mp-1001"] and "reset" in report.failed["mp-1002"]
    assert "404" in report.failed["mp-4040"]
    assert CALLS.count(("chgcar", "mp-1001")) == 1 and CALLS.count(("structure", "mp-4040")) == 1
    again = _run(tmp_path / "s", ["mp-1001", "mp-1002"])  # the failed ids are retried by a later run
    assert sorted(again.committed) == ["mp-1001", "mp-1002"]


def test_api_key_never_reaches_files_or_errors(tmp_path):
    flaky = {("chgcar", "mp-1002"): [MPRestError(f"error status code 500 for key {KEY}")]}
    report = _run(tmp_path / "s", ["mp-1001", "mp-1002"], flaky)
    assert KEY not in repr(report) and "****" in report.failed["mp-1002"]
    import pyarrow.parquet as pq

    files = [p for p in (tmp_path / "s").rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files)
    for path in files:  # Parquet is compressed: check its decoded values, and every file's raw bytes
        data = path.read_bytes()
        if path.suffix == ".parquet":
            data += str(pq.read_table(path).to_pylist()).encode()
        assert KEY[:12].encode() not in data, path
    assert KEY not in repr(Secret(KEY)) and KEY not in str(MPSource(api_key=Secret(KEY)))


def test_missing_key_is_one_clear_failure_per_id(tmp_path, monkeypatch):
    need_shared()
    from pymatgen.core import SETTINGS

    monkeypatch.delenv("MP_API_KEY", raising=False)
    monkeypatch.delitem(SETTINGS, "PMG_MAPI_KEY", raising=False)
    report = run_ingest(str(tmp_path / "s"), mp_ids=["mp-149", "mp-13"], workers=1, processes=False,
                        progress=False)
    assert report.committed == [] and set(report.failed) == {"mp-149", "mp-13"}
    assert all(why.startswith("no Materials Project API key") for why in report.failed.values())


def test_key_from_pymatgen_settings_is_honoured(monkeypatch):
    """PMG_MAPI_KEY in ~/.config/.pmgrc.yaml (pymatgen's SETTINGS) is used when MP_API_KEY is unset, as MPRester
    does; --api-key and MP_API_KEY win over it."""
    from pymatgen.core import SETTINGS

    monkeypatch.delenv("MP_API_KEY", raising=False)
    monkeypatch.setitem(SETTINGS, "PMG_MAPI_KEY", KEY)
    assert Secret.from_env().get() == KEY
    monkeypatch.setenv("MP_API_KEY", "e" * 32)
    assert Secret.from_env().get() == "e" * 32 and Secret.from_env("f" * 32).get() == "f" * 32


def test_dos_missing_at_mp_keeps_density_but_dos_errors_fail_the_material(tmp_path):
    flaky = {("dos", "mp-1001"): [MPRestError("No density of states data found for mp-1001")],
             ("dos", "mp-1002"): [MPRestError("error status code 502 Bad Gateway")]}
    report = _run(tmp_path / "s", ["mp-1001", "mp-1002"], flaky)
    assert report.committed == ["mp-1001"] and "502" in report.failed["mp-1002"]
    row = open_dataset(tmp_path / "s").row("mp-1001")
    assert not row[C.COL_HAS_DOS] and row[C.COL_RHO_OFFSET] >= 0


def test_old_index_fragments_without_calc_type_still_read(tmp_path):
    """Stores written before the calc_type/run_type columns read with nulls there."""
    import pyarrow.parquet as pq

    from chgdata.store import read_table

    _run(tmp_path / "s", ["mp-1001"])
    ds = open_dataset(tmp_path / "s")
    (frag,) = ds.loc.list_fragments(C.INDEX)
    old = pq.read_table(frag).drop_columns([C.COL_CALC_TYPE, C.COL_RUN_TYPE])
    pq.write_table(old, frag)
    _run(tmp_path / "s", ["mp-1002"])
    rows = {r[C.COL_ID]: r for r in read_table(open_dataset(tmp_path / "s").loc, C.INDEX).to_pylist()}
    assert rows["mp-1001"][C.COL_CALC_TYPE] is None and rows["mp-1002"][C.COL_CALC_TYPE] == "GGA Static"


def offline_client(key):
    raise ConnectionError("HTTPSConnectionPool(host='api.materialsproject.org'): Failed to resolve")


def test_no_network_fails_new_ids_in_one_line_and_keeps_committed_ones(tmp_path, caplog):
    _run(tmp_path / "s", ["mp-1001"])
    report = run_ingest(str(tmp_path / "s"), mp_ids=["mp-1001", "mp-1002"], api_key=KEY,
                        client_factory=offline_client, workers=1, processes=False, progress=False)
    assert report.skipped == ["mp-1001"] and not report.committed and not report.partitions
    assert report.failed["mp-1002"].startswith("cannot open a Materials Project client (ConnectionError: ")
    assert "committed MP materials kept" in caplog.text
    assert open_dataset(tmp_path / "s").material_ids == ["mp-1001"]
