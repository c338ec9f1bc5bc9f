"""``chgdata verify``: recompute what a store claims about itself and list every mismatch.

Checks (read-only; nothing is repaired):

* every stored array against the sha256 in its index row: ``rho``/``mag``/``rho_ae`` (structures.parquet),
  ``saed``/``delta`` (delta.parquet, same offsets as ``rho``), the DOS windows (dos.parquet ``dos_sha256``);
  an array that cannot be read or decoded (a corrupted chunk) is reported as unreadable;
* ∫ρ dV recomputed from the stored ``rho`` against the stored ``n_electrons``;
* duplicate material ids: within any one fragment of an index table (never legitimate), among the visible
  rows, and in the committed ``dos_raw`` fragment of a material; rows superseded by a newer fragment (an
  incremental re-ingest, see :func:`chgdata.store.read_table`) are counted, not reported;
* materials flagged ``has_dos`` without a committed raw-DOS row;
* rows of derived tables (delta, dos) whose material is not in the index;
* orphaned partitions (arrays no committed row references: debris of killed tasks; a writer's next run removes
  them);
* the dataset card's counts (``saed.materials``, ``dos.materials``/``spin_polarized``/``non_spin``) against the
  tables.
"""

from __future__ import annotations

import collections
import os
import sys
import types
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from chgdata import contract as C
from chgdata.contract import DOS_ABS, DOS_NORM
from chgdata.dos import dos_checksum
from chgdata.store import Dataset, Location, orphans, read_card, sha256_array

DOS_TABLE = Dataset.DOS_TABLE

#: ∫ρ dV may differ from the stored count by float32/float64 summation order only.
ELECTRON_RTOL = 1e-5
ELECTRON_ATOL = 1e-4


@dataclass(frozen=True)
class Problem:
    """One mismatch: what kind, in which table, for which material (or partition), and the details."""

    kind: str
    table: str
    material_id: str
    detail: str


@dataclass
class VerifyReport:
    """Everything verify looked at and found."""

    store: str
    checked: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, kind: str, table: str, material_id: str, detail: str) -> None:
        self.problems.append(Problem(kind, table, material_id, " ".join(str(detail).split())[:300]))

    def count(self, what: str, n: int = 1) -> None:
        self.checked[what] = self.checked.get(what, 0) + n


def _duplicates(ids: Iterable[str]) -> dict[str, int]:
    return {k: n for k, n in collections.Counter(ids).items() if n > 1}


def fragment_ids(loc: Location, table: str) -> dict[str, list[str]]:
    """fragment name → material ids of its rows, read raw (without read_table's newest-row-wins)."""
    out = {}
    for path in loc.list_fragments(table):
        with loc.fs.open(path, "rb") as fh:
            out[os.path.basename(path)] = pq.read_table(fh, columns=[C.COL_ID]).column(C.COL_ID).to_pylist()
    return out


def _check_fragments(loc: Location, report: VerifyReport, table: str) -> None:
    frags = fragment_ids(loc, table)
    for name, ids in frags.items():
        for mid, n in _duplicates(ids).items():
            report.add("duplicate", table, mid, f"{n} rows in fragment {name}")
    every = [m for ids in frags.values() for m in ids]
    superseded = len(every) - len(set(every))
    if superseded:
        report.count(f"superseded rows in {table}", superseded)


def _read(report: VerifyReport, table: str, mid: str, what: str, ds: Dataset, array: str, partition: str,
          start: int | None = None, stop: int | None = None) -> Any:
    """Read ``array/partition[start:stop]``; a decode/IO error becomes an ``unreadable`` problem (None returned)."""
    try:
        return ds.array(array, partition)[start:stop]
    except Exception as exc:  # noqa: BLE001 - any failure to read stored bytes is a finding, not a crash
        report.add("unreadable", table, mid, f"{what}: {type(exc).__name__}: {exc}")
        return None


def _check_sha(report: VerifyReport, table: str, mid: str, what: str, values, expected: str | None) -> None:
    if values is None:
        return
    report.count(f"{what} checksums")
    if expected is None:
        report.add("checksum missing", table, mid, f"{what}: no stored sha256")
        return
    got = sha256_array(values)
    if got != expected:
        report.add("checksum mismatch", table, mid, f"{what}: stored {expected[:12]}…, recomputed {got[:12]}…")


def _check_index(ds: Dataset, report: VerifyReport) -> list[dict[str, Any]]:
    rows = ds.index.to_pylist() if ds.index.num_rows else []
    report.count("index rows", len(rows))
    for mid, n in _duplicates(r[C.COL_ID] for r in rows).items():
        report.add("duplicate", C.INDEX, mid, f"{n} rows")
    for r in rows:
        mid = r[C.COL_ID]
        npts = r.get(C.COL_NPOINTS) or 0
        for array, off_col, sha_col in ((C.RHO, C.COL_RHO_OFFSET, C.COL_RHO_SHA),
                                        (C.MAG, C.COL_MAG_OFFSET, C.COL_MAG_SHA),
                                        (C.RHO_AE, C.COL_AE_OFFSET, C.COL_AE_SHA)):
            off = r.get(off_col)
            if off is None or off < 0:
                continue
            values = _read(report, C.INDEX, mid, array, ds, array, r[C.COL_PARTITION], off, off + npts)
            if values is not None and values.size != npts:
                report.add("truncated array", C.INDEX, mid, f"{array}: {values.size} of {npts} points stored")
                continue
            _check_sha(report, C.INDEX, mid, array, values, r.get(sha_col))
            if array == C.RHO and values is not None and r.get(C.COL_NELECT) is not None:
                report.count("electron counts")
                got = float(np.asarray(values, dtype=np.float64).mean() * float(r[C.COL_VOLUME]))
                want = float(r[C.COL_NELECT])
                if not np.isclose(got, want, rtol=ELECTRON_RTOL, atol=ELECTRON_ATOL):
                    report.add("electron count", C.INDEX, mid, f"∫ρ dV = {got:.6f} but the index says {want:.6f}")
    return rows


def _check_delta(ds: Dataset, report: VerifyReport, index: dict[str, dict[str, Any]]) -> int | None:
    t = ds.table(C.DELTA_INDEX)
    if t is None:
        return None
    rows = t.to_pylist()
    report.count("delta rows", len(rows))
    for mid, n in _duplicates(r[C.COL_ID] for r in rows).items():
        report.add("duplicate", C.DELTA_INDEX, mid, f"{n} rows")
    for r in rows:
        mid = r[C.COL_ID]
        base = index.get(mid)
        if base is None:
            report.add("not in index", C.DELTA_INDEX, mid, "delta row for a material missing from the index")
            continue
        off, npts = base[C.COL_RHO_OFFSET], base[C.COL_NPOINTS]
        for array, sha_col in ((C.SAED, "saed_sha256"), (C.DELTA, "delta_sha256")):
            values = _read(report, C.DELTA_INDEX, mid, array, ds, array, r[C.COL_PARTITION], off, off + npts)
            _check_sha(report, C.DELTA_INDEX, mid, array, values, r.get(sha_col))
    return len(rows)


def _check_dos(ds: Dataset, report: VerifyReport, index: dict[str, dict[str, Any]]) -> list[dict[str, Any]] | None:
    t = ds.table(DOS_TABLE)
    if t is None:
        return None
    rows = t.to_pylist()
    report.count("dos rows", len(rows))
    for mid, n in _duplicates(r[C.COL_ID] for r in rows).items():
        report.add("duplicate", DOS_TABLE, mid, f"{n} rows")
    cache: dict[tuple[str, str], Any] = {}
    for r in rows:
        mid = r[C.COL_ID]
        if mid not in index:
            report.add("not in index", DOS_TABLE, mid, "DOS window for a material missing from the index")
        pair = []
        for array in (DOS_ABS, DOS_NORM):
            key = (array, r[C.COL_PARTITION])
            if key not in cache:
                cache[key] = _read(report, DOS_TABLE, mid, f"{array}/{r[C.COL_PARTITION]}", ds, array,
                                   r[C.COL_PARTITION])
            arr = cache[key]
            pair.append(None if arr is None or int(r["row"]) >= arr.shape[0] else arr[int(r["row"])])
        if any(p is None for p in pair):
            if all(cache.get((a, r[C.COL_PARTITION])) is not None for a in (DOS_ABS, DOS_NORM)):
                report.add("truncated array", DOS_TABLE, mid, f"row {r['row']} beyond the stored windows")
            continue
        report.count("dos checksums")
        got = dos_checksum(pair[0], pair[1])
        if got != r.get("dos_sha256"):
            report.add("checksum mismatch", DOS_TABLE, mid,
                       f"dos windows: stored {str(r.get('dos_sha256'))[:12]}…, recomputed {got[:12]}…")
    return rows


def _check_dos_raw(loc: Location, report: VerifyReport, index: dict[str, dict[str, Any]]) -> None:
    """Each material's raw DOS lives in the dos_raw fragment of its index partition: exactly one row there when
    ``has_dos``. Other fragments (debris of killed tasks, superseded partitions) are never read."""
    found: collections.Counter = collections.Counter()
    committed = {r[C.COL_PARTITION] for r in index.values()}
    for name, ids in fragment_ids(loc, C.DOS_RAW).items():
        partition = name[: -len(".parquet")]
        if partition not in committed:
            report.add("orphan", C.DOS_RAW, name, "raw-DOS fragment of a partition no index row references "
                                                  "(an ingest task killed before its index fragment)")
        found.update(m for m in ids if m in index and index[m][C.COL_PARTITION] == partition)
    for mid, row in index.items():
        if found[mid] > 1:
            report.add("duplicate", C.DOS_RAW, mid, f"{found[mid]} rows in fragment {row[C.COL_PARTITION]}")
        elif row.get(C.COL_HAS_DOS) and found[mid] == 0:
            report.add("missing raw DOS", C.DOS_RAW, mid, f"has_dos but no row in {row[C.COL_PARTITION]}")


def _check_card(loc: Location, report: VerifyReport, n_delta: int | None, dos_rows) -> None:
    card = read_card(loc)
    want: dict[str, int] = {}
    if n_delta is not None and isinstance(card.get("saed"), dict) and "materials" in card["saed"]:
        want["saed.materials"] = n_delta
    if dos_rows is not None and isinstance(card.get("dos"), dict):
        want["dos.materials"] = len(dos_rows)
        want["dos.spin_polarized"] = sum(bool(r["spin_polarized"]) for r in dos_rows)
        want["dos.non_spin"] = sum(not r["spin_polarized"] for r in dos_rows)
    for key, n in want.items():
        section, name = key.split(".")
        if name not in card[section]:
            continue
        report.count("card counts")
        if card[section][name] != n:
            report.add("card count", C.CARD, "-", f"{key} = {card[section][name]} but the table has {n}")


def verify_store(url: str | os.PathLike) -> VerifyReport:
    """Check a store end to end; raises StoreError only when there is no dataset at ``url``."""
    ds = Dataset(url)
    report = VerifyReport(store=ds.url)
    rows = _check_index(ds, report)
    index = {r[C.COL_ID]: r for r in rows}
    n_delta = _check_delta(ds, report, index)
    dos_rows = _check_dos(ds, report, index)
    _check_dos_raw(ds.loc, report, index)
    for table in (C.INDEX, C.DELTA_INDEX, DOS_TABLE):
        _check_fragments(ds.loc, report, table)
    for name in orphans(ds.loc):
        report.add("orphan", C.ARRAYS_DIR, name, "partition array that no committed row references")
    _check_card(ds.loc, report, n_delta, dos_rows)
    return report


class _CallableModule(types.ModuleType):
    """``chgdata.verify`` is this module and the API function at once: ``chgdata.verify(store)`` runs
    :func:`verify_store` (the submodule import would otherwise shadow a function of that name in ``chgdata``)."""

    def __call__(self, store: str | os.PathLike) -> VerifyReport:
        return verify_store(store)


sys.modules[__name__].__class__ = _CallableModule
