"""Index look-ups on a large synthetic store: what a Dask task paid to find its materials' rows.

    python bench/index_lookup.py [--rows 10000 100000] [--per-fragment 64] [--out bench/results/index_lookup.md]

The store holds only a Parquet index (``structures.parquet``, one fragment per 64-material partition as ingest
writes them) with rows of realistic width (8-atom structures, input file list, checksums). Timed, each in a
fresh :class:`chgdata.store.Dataset` (as each Dask task opened one):

* **before**: the earlier code: every fragment read with ``pyarrow.parquet``, concatenated, newest row per id,
  then the whole index turned into a dict of row dicts on the first ``Dataset.row``;
* **after**: the current ``Dataset.row``: fragments through ``pyarrow.dataset`` (its "read index" part is shown
  separately), id → position from the id column, one row converted on demand;
* **next row()**: a further look-up in the same Dataset;
* a build-delta task now gets its rows from the driver and reads no index at all (``read_flat(..., row=row)``):
  its cost per task went from the "before" column to 0 (the driver reads the index once per stage).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from chgdata import contract as C
from chgdata.store import INDEX_SCHEMA, Dataset, _latest_rows, read_table


def synthetic_index(root: str, rows: int, per_fragment: int) -> None:
    rng = np.random.default_rng(0)
    os.makedirs(os.path.join(root, C.INDEX), exist_ok=True)
    for start in range(0, rows, per_fragment):
        n = min(per_fragment, rows - start)
        part = f"p-{start:09d}"
        recs = [{
            C.COL_ID: f"mp-{start + i}", C.COL_SOURCE: "mp", C.COL_TASK_ID: f"mp-{9_000_000 + start + i}",
            C.COL_DB_VERSION: "2025.09.25", C.COL_FORMULA: "Si2O4", C.COL_NSITES: 8,
            C.COL_LATTICE: rng.normal(size=9).tolist(), C.COL_SPECIES: ["Si"] * 4 + ["O"] * 4,
            C.COL_Z: [14] * 4 + [8] * 4, C.COL_FRAC: rng.random(24).tolist(), C.COL_VOLUME: 40.0,
            C.COL_GRID: [48, 48, 48], C.COL_NPOINTS: 48 ** 3, C.COL_SPIN: False, C.COL_NELECT: 32.0,
            C.COL_MAGMOM: None, C.COL_EFERMI: 1.0, C.COL_HAS_DOS: True, C.COL_PARTITION: part,
            C.COL_RHO_OFFSET: i * 48 ** 3, C.COL_MAG_OFFSET: -1, C.COL_AE_OFFSET: -1, C.COL_RHO_SHA: "0" * 64,
            C.COL_MAG_SHA: None, C.COL_AE_SHA: None, C.COL_INPUT_SHA: "1" * 64,
            C.COL_FILES: ["mp-api:chgcar", "mp-api:dos"], C.COL_RETRIEVED: "2026-11-30T00:00:00+00:00",
            C.COL_STATUS: "ok", C.COL_INPUT_STAT: None} for i in range(n)]
        pq.write_table(pa.Table.from_pylist(recs, schema=INDEX_SCHEMA),
                       os.path.join(root, C.INDEX, f"{part}.parquet"), compression="zstd")


def old_read(ds: Dataset) -> pa.Table:
    """The previous read_table: pyarrow.parquet per fragment, concatenated, newest row per id."""
    parts = []
    for path in ds.loc.list_fragments(C.INDEX):
        with ds.loc.fs.open(path, "rb") as fh:
            parts.append(pq.read_table(fh))
    return _latest_rows(pa.concat_tables(parts, promote_options="permissive"))


def old_lookup(index: pa.Table, mid: str) -> dict:
    """The previous Dataset.row on a read index: the whole index as row dicts, then one look-up."""
    return {r[C.COL_ID]: r for r in index.to_pylist()}[mid]


def new_lookup(index: pa.Table, mid: str) -> dict:
    """The current Dataset.row on a read index (what ``Dataset.row`` does after ``Dataset.index``)."""
    index = index.combine_chunks()
    pos = {m: i for i, m in enumerate(index.column(C.COL_ID).to_pylist())}
    return index.slice(pos[mid], 1).to_pylist()[0]


def clock(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--per-fragment", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    p.add_argument("--out")
    a = p.parse_args()
    load = os.getloadavg()[0]
    lines = [f"# Index look-ups on a synthetic store ({dt.date.today()}, {platform.machine()}, {os.cpu_count()} "
             f"cores, load average {load:.1f} at start; `python bench/index_lookup.py`; medians of {a.rounds} "
             "interleaved rounds)", "",
             "| index rows | fragments | read, before: pyarrow.parquet per fragment (s) | read, after: "
             "pyarrow.dataset (s) | row(), before: whole index to dicts (s) | row(), after: id map + one row (s) | "
             "next row(), after (µs) | first row() total before → after (s) | per build-delta task before → after "
             "(s) |", "|---|---|---|---|---|---|---|---|---|"]
    for n in a.rows:
        with tempfile.TemporaryDirectory() as root:
            synthetic_index(root, n, a.per_fragment)
            mid = f"mp-{n // 2}"
            times: dict[str, list[float]] = {k: [] for k in ("old_read", "new_read", "old_row", "new_row")}
            for _ in range(a.rounds):
                t, old_index = clock(old_read, Dataset(root))
                times["old_read"].append(t)
                t, new_index = clock(read_table, Dataset(root).loc, C.INDEX)
                times["new_read"].append(t)
                t, r_old = clock(old_lookup, old_index, mid)
                times["old_row"].append(t)
                t, r_new = clock(new_lookup, new_index, mid)
                times["new_row"].append(t)
                assert r_old == r_new
            med = {k: float(np.median(v)) for k, v in times.items()}
            ds = Dataset(root)
            ds.row(mid)
            others = [f"mp-{i}" for i in np.random.default_rng(1).integers(0, n, 1000)]
            t0 = time.perf_counter()
            for m in others:
                ds.row(m)
            t_next = (time.perf_counter() - t0) / len(others) * 1e6
            before, after = med["old_read"] + med["old_row"], med["new_read"] + med["new_row"]
            lines.append(f"| {n:,} | {-(-n // a.per_fragment):,} | {med['old_read']:.2f} | {med['new_read']:.2f} | "
                         f"{med['old_row']:.2f} | {med['new_row']:.3f} | {t_next:.0f} | {before:.2f} → {after:.2f} | "
                         f"{before:.2f} → 0 (rows from the driver) |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        with open(a.out, "w", encoding="utf-8") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
