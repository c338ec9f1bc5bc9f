"""The Materials Project path, tested at the MPRester boundary with a client serving real shared data.

The injected client returns real pymatgen objects (Chgcar, Structure, CompleteDos) read from
../shared/data/gpaw under MP-style ids; it lives only in the tests, never in the package.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from chgdata.pipelines.ingest import run_ingest
from pymatgen.electronic_structure.dos import CompleteDos
from pymatgen.io.vasp.outputs import Chgcar

from chgdata import contract as C
from chgdata import open_dataset
from chgdata.sources.mp import MPSource, Secret, is_retryable
from tests.conftest import GPAW, need_shared

KEY = "abcdefghijklmnopqrstuvwxyz012345"  # looks like a real key; must never be written anywhere

FOLDERS = {"mp-1001": "gpaw-0001", "mp-1002": "gpaw-0002", "mp-1003": "gpaw-0003", "mp-1004": "gpaw-0004"}


class MPRestError(Exception):
    """Shaped like mp_api's error: the HTTP status is in the message."""


class SharedDataMPRester:
    """MPRester's methods used by chgdata, answering from real files; ``flaky`` injects failures per call."""

    calls: list[tuple[str, str]] = []

    def __init__(self, api_key: Secret, flaky: dict | None = None):
        assert api_key.get() == KEY  # the key reaches the boundary, and only there
        self.flaky = flaky if flaky is not None else {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def _maybe_fail(self, what, mid):
        self.calls.append((what, mid))
        queue = self.flaky.get((what, mid))
        if queue:
            raise queue.pop(0)

    def _folder(self, mid) -> Path:
        if mid not in FOLDERS:
            raise MPRestError(f"REST query returned with error status code 404 on URL .../{mid}: not found")
        return GPAW / FOLDERS[mid]

    def get_database_version(self):
        return "2025.09.25"

    def get_structure_by_material_id(self, mid):
        self._maybe_fail("structure", mid)
        return Chgcar.from_file(str(self._folder(mid) / "CHGCAR.gz")).structure

    def get_charge_density_from_material_id(self, mid, inc_task_doc=False):
        self._maybe_fail("chgcar", mid)
        chg = Chgcar.from_file(str(self._folder(mid) / "CHGCAR.gz"))
        return (chg, {"task_id": f"mp-9{mid[3:]}"}) if inc_task_doc else chg

    def get_dos_by_material_id(self, mid):
        self._maybe_fail("dos", mid)
        with gzip.open(self._folder(mid) / "dos.json.gz", "rt") as fh:
            d = json.load(fh)
        d.setdefault("pdos", [])
        return CompleteDos.from_dict(d)


def _run(store, ids, flaky=None, retries=2):
    need_shared()
    SharedDataMPRester.calls = []
    return run_ingest(str(store), mp_ids=ids, api_key=KEY,
                      client_factory=lambda key: SharedDataMPRester(key, flaky), workers=1, processes=False,
                      progress=False, mp_retries=retries, mp_backoff_s=0.0)


def test_mp_ingest_records_ids_task_ids_and_data(tmp_path):
    report = _run(tmp_path / "s", ["mp-1001", "mp-1002"])
    assert sorted(report.committed) == ["mp-1001", "mp-1002"] and not report.failed
    ds = open_dataset(tmp_path / "s")
    row = ds.row("mp-1001")
    assert row[C.COL_SOURCE] == "mp" and row[C.COL_TASK_ID] == "mp-91001"
    assert row[C.COL_DB_VERSION] == "2025.09.25" and row[C.COL_HAS_DOS]
    chg = Chgcar.from_file(str(GPAW / "gpaw-0001" / "CHGCAR.gz"))
    np.testing.assert_allclose(ds.density("mp-1001").rho * chg.structure.volume, chg.data["total"], rtol=1e-6,
                               atol=1e-6 * chg.data["total"].max())
    assert ds.card["provenance"]["database_versions"] == ["2025.09.25"]


def test_malformed_ids_rejected_before_any_network_call(tmp_path):
    report = _run(tmp_path / "s", ["mp-1001", "../x", "mp-12/../../etc", "mp-", "149"])
    assert report.committed == ["mp-1001"]
    assert set(report.failed) == {"../x", "mp-12/../../etc", "mp-", "149"}
    assert all("malformed Materials Project id" in why for why in report.failed.values())
    assert {mid for _, mid in SharedDataMPRester.calls} == {"mp-1001"}
    fails = open_dataset(tmp_path / "s").failures.to_pylist()
    assert {f["material_id"] for f in fails} == set(report.failed)


def test_transient_errors_are_retried_then_succeed(tmp_path):
    flaky = {("chgcar", "mp-1001"): [MPRestError("REST query returned with error status code 429 on URL"),
                                     ConnectionError("connection reset by peer")],
             ("dos", "mp-1001"): [MPRestError("REST query returned with error status code 503")]}
    report = _run(tmp_path / "s", ["mp-1001"], flaky, retries=2)
    assert report.committed == ["mp-1001"] and not report.failed
    assert SharedDataMPRester.calls.count(("chgcar", "mp-1001")) == 3


def test_persistent_errors_fail_the_id_and_the_run_goes_on(tmp_path):
    flaky = {("chgcar", "mp-1002"): [MPRestError("error status code 502 Bad Gateway")] * 5}
    report = _run(tmp_path / "s", ["mp-1001", "mp-1002", "mp-4040"], flaky, retries=2)
    assert report.committed == ["mp-1001"]
    assert "after 3 attempts" in report.failed["mp-1002"] and "502" in report.failed["mp-1002"]
    assert "404" in report.failed["mp-4040"]  # not retried
    assert SharedDataMPRester.calls.count(("structure", "mp-4040")) == 1
    # the failed ids are retried by a later run and then committed
    again = _run(tmp_path / "s", ["mp-1001", "mp-1002"])
    assert again.committed == ["mp-1002"] and again.skipped == ["mp-1001"]


def test_api_key_never_reaches_files_or_errors(tmp_path):
    flaky = {("chgcar", "mp-1002"): [MPRestError(f"error status code 500 for key {KEY}")] * 5}
    report = _run(tmp_path / "s", ["mp-1001", "mp-1002"], flaky, retries=1)
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


@pytest.mark.parametrize(("exc", "retry"), [
    (MPRestError("REST query returned with error status code 429"), True),
    (MPRestError("status code 500"), True),
    (MPRestError("REST query returned with error status code 404"), False),
    (ConnectionError("refused"), True),
    (TimeoutError(), True),
    (ValueError("mp-500 is weird"), False),
])
def test_retry_classification(exc, retry):
    assert is_retryable(exc) is retry


def test_missing_key_is_a_clear_failure(tmp_path, monkeypatch):
    need_shared()
    monkeypatch.delenv("MP_API_KEY", raising=False)
    report = run_ingest(str(tmp_path / "s"), mp_ids=["mp-149"], workers=1, processes=False, progress=False)
    assert "no Materials Project API key" in report.failed["mp-149"]


def test_dos_missing_at_mp_keeps_density_but_dos_errors_fail_the_material(tmp_path):
    flaky = {("dos", "mp-1001"): [MPRestError("REST query returned with error status code 404: DOS not found")],
             ("dos", "mp-1002"): [MPRestError("error status code 502 Bad Gateway")] * 5}
    report = _run(tmp_path / "s", ["mp-1001", "mp-1002"], flaky, retries=1)
    assert report.committed == ["mp-1001"] and "502" in report.failed["mp-1002"]
    row = open_dataset(tmp_path / "s").row("mp-1001")
    assert not row[C.COL_HAS_DOS] and row[C.COL_RHO_OFFSET] >= 0
