"""Writing a store (DESIGN.md §3): partition arrays written in whole shards, the
:class:`PartitionCommit` (arrays first, index fragment last, by atomic rename) and orphaned partitions.

A material exists iff an index row names it, so a killed task leaves at most an orphaned partition that no index
row points to; :func:`orphans` lists them and :func:`remove_orphans` deletes them under the store lock.
Everything here is re-exported by :mod:`chgdata.store` (the writer lock lives in :mod:`chgdata.lock`).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr

from chgdata import contract as C
from chgdata.location import (
    CHUNK_POINTS,
    SHARD_POINTS,
    Location,
    _rows_to_table,
    array_attrs,
    read_table,
    table_bytes,
    table_names,
    utcnow,
)


@dataclass
class StageReport:
    """What a run of a stage (ingest, build-delta, build-dos) did: materials committed in this run, skipped as
    already there, failed (id -> reason); partitions written; orphaned partitions of killed runs removed."""

    committed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    partitions: int = 0
    orphans_removed: list[str] = field(default_factory=list)


class PartitionArrayWriter:
    """Append flattened grids to one 1-D float32 partition array, writing whole shards only.

    Memory: one shard buffer (``SHARD_POINTS`` float32) plus the grid being appended.
    """

    def __init__(self, zstore: zarr.abc.store.Store, name: str):
        self.name = name
        array, _, partition = name.partition("/")
        # the flat dimension is named per partition: partitions differ in length, and xarray opens a whole
        # ``arrays/<array>`` group as one Dataset only when equal names mean equal sizes
        self._array = zarr.create_array(zstore, name=name, shape=(0,), chunks=(CHUNK_POINTS,),
                                        shards=(SHARD_POINTS,), dtype="float32", overwrite=True,
                                        fill_value=np.nan, dimension_names=(f"point_{partition or array}",),
                                        attributes=array_attrs(array, C.FLAT_LAYOUT))
        self._buf = np.empty(SHARD_POINTS, dtype=np.float32)
        self._fill = 0
        self._flushed = 0

    @property
    def length(self) -> int:
        return self._flushed + self._fill

    def append(self, values: np.ndarray) -> int:
        """Append ``values`` (flattened, cast to float32); returns their offset in the array."""
        flat = np.asarray(values, dtype=np.float32).reshape(-1)
        offset = self.length
        pos = 0
        while pos < flat.size:
            take = min(flat.size - pos, SHARD_POINTS - self._fill)
            self._buf[self._fill:self._fill + take] = flat[pos:pos + take]
            self._fill += take
            pos += take
            if self._fill == SHARD_POINTS:
                self._write_buffer()
        return offset

    def _write_buffer(self) -> None:
        if self._fill == 0:
            return
        end = self._flushed + self._fill
        self._array.resize((end,))
        self._array[self._flushed:end] = self._buf[:self._fill]
        self._flushed, self._fill = end, 0

    def close(self) -> int:
        self._write_buffer()
        return self._flushed


class PartitionCommit:
    """Everything one task writes for one partition, committed index-last.

    Usage (inside a task)::

        commit = PartitionCommit(url, partition)
        off = commit.append(C.RHO, grid)         # arrays first
        commit.add_row({...})                    # rows are buffered
        commit.add_failure(mid, "ingest", why)
        commit.finish()                          # raw DOS + failures fragments, then the index fragment
    """

    def __init__(self, url: str | os.PathLike, partition: str, index_table: str = C.INDEX):
        self.loc = Location.parse(url)
        self.partition = partition
        self.index_table = index_table
        self._zstore = self.loc.zarr_store()
        self._writers: dict[str, PartitionArrayWriter] = {}
        self.rows: list[dict[str, Any]] = []
        self.failures: list[dict[str, Any]] = []
        self.extra_tables: dict[str, list[dict[str, Any]]] = {}

    def append(self, array: str, values: np.ndarray) -> int:
        if array not in self._writers:
            self._writers[array] = PartitionArrayWriter(self._zstore, f"{array}/{self.partition}")
        return self._writers[array].append(values)

    def pad_to(self, array: str, offset: int) -> None:
        """Fill ``array`` with NaN up to ``offset``: keeps a derived array in the layout of ``rho/<partition>`` when
        materials before ``offset`` left the partition (re-ingested elsewhere); their slots stay unused."""
        while (n := self._writers[array].length if array in self._writers else 0) < offset:
            self.append(array, np.full(min(offset - n, SHARD_POINTS), np.nan, np.float32))

    def write_array(self, array: str, values: np.ndarray, chunks: tuple[int, ...] | None = None,
                    dims: Sequence[str] | None = None, layout: str | None = None) -> None:
        """Write a whole N-D float32 array as ``array/<partition>`` at once (arrays first, like :meth:`append`);
        ``dims`` name its dimensions (Zarr ``dimension_names``), ``layout`` says how it is laid out."""
        values = np.ascontiguousarray(values, dtype=np.float32)
        arr = zarr.create_array(self._zstore, name=f"{array}/{self.partition}", shape=values.shape,
                                chunks=chunks or values.shape, dtype="float32", overwrite=True, fill_value=np.nan,
                                dimension_names=tuple(dims) if dims else None,
                                attributes=array_attrs(array, layout))
        arr[...] = values

    def add_row(self, row: dict[str, Any]) -> None:
        self.rows.append(row)

    def add_extra(self, table: str, row: dict[str, Any]) -> None:
        self.extra_tables.setdefault(table, []).append(row)

    def add_failure(self, material_id: str, stage: str, reason: str) -> None:
        self.failures.append({"material_id": material_id, "stage": stage,
                              "reason": " ".join(str(reason).split())[:500], "time": utcnow()})

    def finish(self) -> None:
        for writer in self._writers.values():
            writer.close()
        for table, rows in self.extra_tables.items():
            if rows:
                self._write(table, rows)
        if self.failures:  # a log: its own fragment per commit, never replacing another stage's failures
            self._write(C.FAILURES, self.failures, f"{self.partition}-{uuid.uuid4().hex[:8]}")
        if self.rows:  # the commit point
            self._write(self.index_table, self.rows)

    def _write(self, table: str, rows: list[dict[str, Any]], name: str | None = None) -> None:
        data = table_bytes(_rows_to_table(table, rows))
        self.loc.write_bytes_atomic(self.loc.path(table, f"{name or self.partition}.parquet"), data)


def referenced_partitions(loc: Location) -> set[str]:
    """Partitions named by a committed row of any table (index, build-delta, build-dos, ...)."""
    refs: set[str] = set()
    for table in table_names(loc):
        t = read_table(loc, table)
        if t is not None and C.COL_PARTITION in t.column_names:
            refs.update(t.column(C.COL_PARTITION).to_pylist())
    return refs


def orphans(loc: Location) -> list[str]:
    """Partition arrays (``array/partition``) that no committed index row references: debris of killed tasks."""
    base = loc.path(C.ARRAYS_DIR)
    loc.refresh()
    if not loc.fs.exists(base):
        return []
    refs = referenced_partitions(loc)
    out = []
    for array_dir in loc.fs.ls(base, detail=False):
        if not loc.fs.isdir(array_dir):
            continue
        for part_dir in loc.fs.ls(array_dir, detail=False):
            if loc.fs.isdir(part_dir) and os.path.basename(part_dir) not in refs:
                out.append(f"{os.path.basename(array_dir)}/{os.path.basename(part_dir)}")
    return sorted(out)


def remove_orphans(loc: Location) -> list[str]:
    """Delete orphaned partition arrays and temp files (call only while holding the store lock)."""
    gone = orphans(loc)
    for name in gone:
        loc.fs.rm(loc.path(C.ARRAYS_DIR, name), recursive=True)
    # raw-DOS fragments are named after their ingest partition; one without an index fragment is debris
    index = read_table(loc, C.INDEX)
    index_parts = set() if index is None else set(index.column(C.COL_PARTITION).to_pylist())
    for path in loc.list_fragments(C.DOS_RAW):
        if os.path.basename(path)[: -len(".parquet")] not in index_parts:
            loc.fs.rm_file(path)
            gone.append(f"{C.DOS_RAW}/{os.path.basename(path)}")
    for table in table_names(loc):
        base = loc.path(table)
        if loc.fs.exists(base):
            for p in loc.fs.ls(base, detail=False):
                if os.path.basename(p).startswith(".") and p.endswith(".tmp"):
                    loc.fs.rm_file(p)
    return gone
