"""The dataset store: Zarr v3 partition arrays addressed by a Parquet index (see :mod:`chgdata.contract`).

Commit protocol (DESIGN.md §3): a task writes its partition arrays first, then its raw-DOS and failures
fragments, and its index fragment last, by an atomic rename. A material exists iff an index row names it, so a
killed task leaves at most an orphaned partition that no index row points to; :func:`orphans` lists
them and :func:`remove_orphans` deletes them under the store lock.

Paths are local directories or fsspec URLs (``s3://bucket/prefix``); credentials come from fsspec's own
environment/config and are never stored.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import socket
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
import zarr

from chgdata import contract as C

#: Inner chunk of the partition arrays: 2 MiB of float32.
CHUNK_POINTS = 1 << 19
#: Points per shard (one object per shard on disk): 32 MiB of float32.
SHARD_POINTS = 16 * CHUNK_POINTS


def utcnow() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def sha256_array(values: np.ndarray) -> str:
    """sha256 of the little-endian float32 bytes of ``values`` (the stored representation)."""
    return hashlib.sha256(np.ascontiguousarray(values, dtype="<f4").tobytes()).hexdigest()


def new_partition_name(prefix: str = "p") -> str:
    """A partition name that no earlier or concurrent run can have used."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")  # sorts by time (µs): newest last
    return f"{prefix}-{stamp}-{uuid.uuid4().hex[:10]}"


class StoreError(RuntimeError):
    """A store cannot be opened or written as asked (locked, missing, wrong schema)."""


# ---------------------------------------------------------------------------------------------------------
# Low-level location helpers
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Location:
    """A dataset root on some fsspec filesystem."""

    url: str
    fs: fsspec.AbstractFileSystem = field(repr=False)
    root: str

    @classmethod
    def parse(cls, url: str | os.PathLike) -> Location:
        url = os.fspath(url)
        fs, root = fsspec.core.url_to_fs(url)
        if fs.protocol in ("file", ("file", "local")) or "file" in np.atleast_1d(fs.protocol):
            root = os.path.abspath(root)
        return cls(url=url, fs=fs, root=root.rstrip("/"))

    @property
    def is_local(self) -> bool:
        return "file" in np.atleast_1d(self.fs.protocol)

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def zarr_store(self, read_only: bool = False) -> zarr.abc.store.Store:
        arrays = self.path(C.ARRAYS_DIR)
        if self.is_local:
            return zarr.storage.LocalStore(arrays, read_only=read_only)
        protocol = np.atleast_1d(self.fs.protocol)[0]
        return zarr.storage.FsspecStore.from_url(f"{protocol}://{arrays}", read_only=read_only,
                                                 storage_options=getattr(self.fs, "storage_options", None))

    def write_bytes_atomic(self, path: str, data: bytes) -> None:
        """Write ``data`` so that readers see the whole file or nothing."""
        if self.is_local:
            tmp = f"{os.path.dirname(path)}/.{os.path.basename(path)}.{uuid.uuid4().hex[:8]}.tmp"
            self.fs.makedirs(os.path.dirname(path), exist_ok=True)
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        else:  # object stores: a single PUT is atomic
            self.fs.pipe_file(path, data)

    def refresh(self) -> None:
        """Forget cached listings: on object stores other processes (Dask workers, other runs) add objects that a
        cached ``ls``/``exists`` of this process would not show. Called before every listing."""
        if not self.is_local:
            self.fs.invalidate_cache()

    def list_fragments(self, table: str) -> list[str]:
        base = self.path(table)
        self.refresh()
        if not self.fs.exists(base):
            return []
        names = [p for p in self.fs.ls(base, detail=False) if p.endswith(".parquet")]
        return sorted(p for p in names if not os.path.basename(p).startswith("."))


#: Arrow schema of structures.parquet (types fixed so fragments concatenate and other tools read them).
INDEX_SCHEMA = pa.schema([
    (C.COL_ID, pa.string()), (C.COL_SOURCE, pa.string()), (C.COL_TASK_ID, pa.string()),
    (C.COL_DB_VERSION, pa.string()), (C.COL_FORMULA, pa.string()), (C.COL_NSITES, pa.int32()),
    (C.COL_LATTICE, pa.list_(pa.float64())), (C.COL_SPECIES, pa.list_(pa.string())),
    (C.COL_Z, pa.list_(pa.int32())),
    (C.COL_FRAC, pa.list_(pa.float64())), (C.COL_VOLUME, pa.float64()), (C.COL_GRID, pa.list_(pa.int32())),
    (C.COL_NPOINTS, pa.int64()), (C.COL_SPIN, pa.bool_()), (C.COL_NELECT, pa.float64()),
    (C.COL_MAGMOM, pa.float64()), (C.COL_EFERMI, pa.float64()), (C.COL_HAS_DOS, pa.bool_()),
    (C.COL_PARTITION, pa.string()), (C.COL_RHO_OFFSET, pa.int64()), (C.COL_MAG_OFFSET, pa.int64()),
    (C.COL_AE_OFFSET, pa.int64()), (C.COL_RHO_SHA, pa.string()), (C.COL_MAG_SHA, pa.string()),
    (C.COL_AE_SHA, pa.string()), (C.COL_INPUT_SHA, pa.string()), (C.COL_FILES, pa.list_(pa.string())),
    (C.COL_RETRIEVED, pa.string()), (C.COL_STATUS, pa.string()), (C.COL_PROTOTYPE, pa.string()),
    (C.COL_DFT_CODE, pa.string()), (C.COL_DFT_SETTINGS, pa.string()), (C.COL_INPUT_STAT, pa.list_(pa.string())),
])

#: Raw DOS as ingested (absolute energies in eV, states/eV/cell; non-spin data has dos_down null).
DOS_RAW_SCHEMA = pa.schema([
    (C.COL_ID, pa.string()), ("efermi", pa.float64()), ("natoms", pa.int32()), ("spin_polarized", pa.bool_()),
    ("energies", pa.list_(pa.float64())), ("dos_up", pa.list_(pa.float64())), ("dos_down", pa.list_(pa.float64())),
])

FAILURES_SCHEMA = pa.schema([(name, pa.string()) for name in C.FAIL_COLUMNS])

#: PAW augmentation occupancies of a VASP CHGCAR (chgdata.grid.augmentation_to_json), one fragment per partition.
AUGMENTATION_SCHEMA = pa.schema([(C.COL_ID, pa.string()), ("data_aug", pa.string())])

TABLE_SCHEMAS: dict[str, pa.Schema] = {C.INDEX: INDEX_SCHEMA, C.DOS_RAW: DOS_RAW_SCHEMA, C.FAILURES: FAILURES_SCHEMA,
                                       C.AUGMENTATION: AUGMENTATION_SCHEMA}


def register_table_schema(table: str, schema: pa.Schema) -> None:
    """Derived stages (build-delta, build-dos) declare the schema of their own index tables here."""
    TABLE_SCHEMAS[table] = schema


def array_attrs(array: str, layout: str | None = None) -> dict[str, Any]:
    """Zarr attributes of a stage array: ``long_name``, ``units`` and ``layout`` (CF names, read by xarray)."""
    attrs = {"long_name": C.LONG_NAMES.get(array, array), "units": C.ARRAY_ATTR_UNITS.get(array, "")}
    if layout:
        attrs["layout"] = layout
    return attrs


def consolidate(loc: Location) -> None:
    """Write Zarr v3 consolidated metadata of ``arrays/`` (call at the end of a stage, under the store lock), so
    ``xarray.open_zarr(<store>/arrays, group="rho")`` opens a whole array family with one metadata read."""
    loc.refresh()
    if loc.fs.exists(loc.path(C.ARRAYS_DIR, "zarr.json")):
        with warnings.catch_warnings():  # "not part of the v3 spec yet": zarr-python and xarray read it
            warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
            zarr.consolidate_metadata(loc.zarr_store())


def _rows_to_table(table: str, rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=TABLE_SCHEMAS.get(table))


def table_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def _arrow_fs(loc: Location):
    """The filesystem handed to :mod:`pyarrow.dataset` (pyarrow's own for local paths, else the fsspec one)."""
    import pyarrow.fs as pafs

    return pafs.LocalFileSystem() if loc.is_local else loc.fs


def _fragments_dataset(loc: Location, table: str, paths: Sequence[str]):
    """A :class:`pyarrow.dataset.Dataset` over ``paths`` in the given order, with the table's declared schema
    (fragments written before a column existed read it as null) or, for undeclared tables, the union of theirs."""
    import pyarrow.dataset as pads

    fs = _arrow_fs(loc)
    schema = TABLE_SCHEMAS.get(table)
    if schema is None:
        found = pads.dataset(list(paths), format="parquet", filesystem=fs)
        schema = pa.unify_schemas([f.physical_schema for f in found.get_fragments()],
                                  promote_options="permissive")
    return pads.dataset(list(paths), schema=schema, format="parquet", filesystem=fs)


def read_table(loc: Location, table: str, raw: bool = False) -> pa.Table | None:
    """The committed rows of ``table`` through :mod:`pyarrow.dataset` (None when it has no fragment).

    One row per material in every table but the failures log (see :func:`_latest_rows`); ``raw=True`` returns
    every row of every fragment in fragment order, with the fragment's position in a ``__fragment`` column.
    """
    paths = loc.list_fragments(table)
    if not paths:
        return None
    dataset = _fragments_dataset(loc, table, paths)
    parts = [frag.to_table(schema=dataset.schema) for frag in dataset.get_fragments()]  # in path order
    out = pa.concat_tables(parts)
    if raw:
        pos = np.repeat(np.arange(len(parts), dtype=np.int32), [p.num_rows for p in parts])
        return out.append_column("__fragment", pa.array(pos, pa.int32()))
    return out if table == C.FAILURES else _latest_rows(out)


def _latest_rows(index: pa.Table) -> pa.Table:
    """One row per material in every per-material table (all but the failures log): a material re-ingested by an
    incremental update (pipelines/ingest.py), or rebuilt by build-delta/build-dos after it, has a newer row in a
    newer partition; fragments are read in name order and partition names start with a UTC timestamp, so the
    last row of an id supersedes the earlier ones. :func:`chgdata.compaction.compact` removes superseded rows
    from the fragments at the end of every stage, so stock Parquet readers see one row per id too; this rule
    covers the window between a new fragment's commit and the compaction (and a run killed in it)."""
    ids = index.column(C.COL_ID).to_pylist()
    last = {mid: pos for pos, mid in enumerate(ids)}
    if len(last) == len(ids):
        return index
    return index.take(pa.array(sorted(last.values()), pa.int64()))


# ---------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------


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


class StoreLock:
    """An advisory lock file: one writer per store. A lock whose holder process is gone is taken over."""

    def __init__(self, loc: Location, owner: str):
        self.loc = loc
        self.path = loc.path(C.LOCK)
        self.owner = owner
        self.token = uuid.uuid4().hex

    def _holder(self) -> dict | None:
        try:
            return json.loads(self.loc.fs.cat_file(self.path))
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    @staticmethod
    def _alive(holder: dict) -> bool:
        if holder.get("host") != socket.gethostname():
            return True  # cannot check another host: assume alive
        try:
            os.kill(int(holder["pid"]), 0)
        except ProcessLookupError:
            return False
        except (PermissionError, KeyError, ValueError):
            return True
        return True

    def acquire(self) -> None:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "owner": self.owner,
                "since": utcnow(), "token": self.token}
        holder = self._holder()
        if holder is not None and self._alive(holder):
            raise StoreError(
                f"store {self.loc.url} is locked by '{holder.get('owner')}' (pid {holder.get('pid')} on "
                f"{holder.get('host')} since {holder.get('since')}); wait for it to finish or remove "
                f"{C.LOCK} if that process is gone")
        if self.loc.is_local:
            self.loc.fs.makedirs(self.loc.root, exist_ok=True)
            if holder is not None:  # stale lock of a dead process
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.path)
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError as exc:
                raise StoreError(f"store {self.loc.url} was locked by another writer just now") from exc
            with os.fdopen(fd, "w") as fh:
                json.dump(info, fh)
        else:  # object stores: conditional create (S3 If-None-Match: *), so of two racing writers one fails
            if holder is not None:
                with contextlib.suppress(FileNotFoundError):
                    self.loc.fs.rm_file(self.path)
            try:
                self.loc.fs.pipe_file(self.path, json.dumps(info).encode(), mode="create")
            except FileExistsError as exc:
                raise StoreError(f"store {self.loc.url} was locked by another writer just now") from exc
        if (self._holder() or {}).get("token") != self.token:
            raise StoreError(f"store {self.loc.url} was locked by another writer just now")

    def release(self) -> None:
        holder = self._holder()
        if holder is not None and holder.get("token") == self.token:
            self.loc.fs.rm_file(self.path)


@contextlib.contextmanager
def locked(url: str | os.PathLike, owner: str) -> Iterator[Location]:
    """Hold the store's writer lock for the duration of a run."""
    loc = Location.parse(url)
    lock = StoreLock(loc, owner)
    lock.acquire()
    try:
        yield loc
    finally:
        lock.release()


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


def committed_ids(url: str | os.PathLike, table: str = C.INDEX) -> set[str]:
    t = read_table(Location.parse(url), table)
    return set() if t is None else set(t.column(C.COL_ID).to_pylist())


def table_names(loc: Location) -> list[str]:
    """Every Parquet table of the dataset (``*.parquet`` directories at its root)."""
    loc.refresh()
    if not loc.fs.exists(loc.root):
        return []
    return sorted(os.path.basename(p) for p in loc.fs.ls(loc.root, detail=False)
                  if p.endswith(".parquet") and loc.fs.isdir(p))


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


# ---------------------------------------------------------------------------------------------------------
# Dataset card
# ---------------------------------------------------------------------------------------------------------


def read_card(loc: Location) -> dict[str, Any]:
    path = loc.path(C.CARD)
    if not loc.fs.exists(path):
        return {}
    return yaml.safe_load(loc.fs.cat_file(path)) or {}


def write_card(loc: Location, card: dict[str, Any]) -> None:
    loc.write_bytes_atomic(loc.path(C.CARD), yaml.safe_dump(card, sort_keys=False, allow_unicode=True).encode())


def update_card(loc: Location, **sections: Any) -> dict[str, Any]:
    """Merge ``sections`` into the card (nested dicts merged one level deep) and write it back."""
    card = read_card(loc)
    card.setdefault("schema_version", C.SCHEMA_VERSION)
    card.setdefault("units", {**C.ARRAY_UNITS, "lattice_vectors": "Å", "efermi": "eV",
                              "n_electrons": "electrons", "total_magnetization": "μB per cell"})
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(card.get(key), dict):
            card[key] = {**card[key], **value}
        else:
            card[key] = value
    write_card(loc, card)
    return card


# ---------------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------------


@dataclass
class DensityGrid:
    """One material's grids in e/Å³, shaped (nx, ny, nz); ``mag`` is None for non-spin materials."""

    material_id: str
    rho: np.ndarray
    mag: np.ndarray | None
    lattice: np.ndarray  # (3, 3) Å, row vectors

    @property
    def volume(self) -> float:
        return float(abs(np.linalg.det(self.lattice)))

    def electrons(self) -> float:
        """∫ρ dV over the cell (electrons)."""
        return float(self.rho.astype(np.float64).mean() * self.volume)

    def to_chgcar(self, structure, data_aug: dict | None = None):
        """A pymatgen ``Chgcar``: ``total`` = ρ·V and, when spin-polarised, ``diff`` = (ρ↑−ρ↓)·V (VASP units);
        ``data_aug`` (PAW augmentation occupancies, pymatgen's dict of text lines) is carried as given."""
        from pymatgen.io.vasp import Chgcar, Poscar

        vol = float(structure.volume)
        data = {"total": self.rho.astype(np.float64) * vol}
        if self.mag is not None:
            data["diff"] = self.mag.astype(np.float64) * vol
        return Chgcar(Poscar(structure), data, data_aug=data_aug)


class Dataset:
    """Read access to a store: the index as an Arrow table and grids of single materials."""

    def __init__(self, url: str | os.PathLike):
        self.loc = Location.parse(url)
        self.loc.refresh()
        if not self.loc.fs.exists(self.loc.root):
            raise StoreError(f"no dataset at {self.loc.url}")
        self._zstore = self.loc.zarr_store(read_only=True)
        self._rows: dict[str, dict[str, Any]] = {}
        self._positions: dict[str, int] | None = None
        self._arrays: dict[str, zarr.Array] = {}
        self._index: pa.Table | None = None

    @property
    def url(self) -> str:
        return self.loc.url

    @property
    def card(self) -> dict[str, Any]:
        return read_card(self.loc)

    @property
    def index(self) -> pa.Table:
        if self._index is None:
            t = read_table(self.loc, C.INDEX)  # one chunk: a row is then sliced in O(1), not per fragment
            self._index = t.combine_chunks() if t is not None else pa.table({C.COL_ID: pa.array([], pa.string())})
        return self._index

    def table(self, name: str) -> pa.Table | None:
        return read_table(self.loc, name)

    @property
    def failures(self) -> pa.Table | None:
        return read_table(self.loc, C.FAILURES)

    @property
    def material_ids(self) -> list[str]:
        return self.index.column(C.COL_ID).to_pylist()

    def __len__(self) -> int:
        return self.index.num_rows

    def splits(self) -> dict[str, list[str]]:
        """The recorded grouped split (``chgdata split``): {"train"|"val"|"test": sorted material ids}; empty when
        none is recorded. The grouping is in ``card["split"]``."""
        t = read_table(self.loc, C.SPLITS_TABLE)
        out: dict[str, list[str]] = {"train": [], "val": [], "test": []}
        if t is not None:
            have = set(self.material_ids)
            for r in t.select([C.COL_ID, "split"]).to_pylist():
                if r[C.COL_ID] in have:
                    out[r["split"]].append(r[C.COL_ID])
        return {k: sorted(v) for k, v in out.items()}

    def groups(self) -> dict[str, str]:
        """material id -> group label of the recorded split (empty when none is recorded)."""
        t = read_table(self.loc, C.SPLITS_TABLE)
        return {} if t is None else dict(zip(t.column(C.COL_ID).to_pylist(), t.column("group").to_pylist()))

    def row(self, material_id: str) -> dict[str, Any]:
        """The index row of one material as a dict. The first call maps ids to row positions (the id column
        only); each row is converted when first asked for, then cached (not the whole index: that took 2.6 s
        at 100k rows, BENCHMARKS.md)."""
        if self._positions is None:
            self._positions = {mid: pos for pos, mid in enumerate(self.index.column(C.COL_ID).to_pylist())}
        row = self._rows.get(material_id)
        if row is None:
            try:
                pos = self._positions[material_id]
            except KeyError:
                raise KeyError(f"material {material_id!r} is not in {self.url}") from None
            row = self._rows[material_id] = self.index.slice(pos, 1).to_pylist()[0]
        return row

    def array(self, array: str, partition: str) -> zarr.Array:
        """A partition array, opened once per Dataset (its metadata is not re-read on every material)."""
        key = f"{array}/{partition}"
        if key not in self._arrays:
            self._arrays[key] = zarr.open_array(self._zstore, path=key, mode="r")
        return self._arrays[key]

    def read_flat(self, array: str, material_id: str, offset_column: str | None = None,
                  points: np.ndarray | None = None, row: dict[str, Any] | None = None) -> np.ndarray:
        """The flattened grid of ``array`` for one material, or only the flat indices ``points``.

        ``row``: the material's index row when the caller has it (Dask tasks get theirs from the driver), so the
        index is not read at all."""
        row = self.row(material_id) if row is None else row
        offset = row[offset_column or C.COL_RHO_OFFSET]
        if offset is None or offset < 0:
            raise KeyError(f"material {material_id!r} has no {array!r} grid")
        arr = self.array(array, row[C.COL_PARTITION])
        if points is None:
            return arr[offset:offset + row[C.COL_NPOINTS]]
        return arr.get_coordinate_selection(np.asarray(points, dtype=np.int64) + offset)

    def density(self, material_id: str) -> DensityGrid:
        """Total density and magnetisation of one material (e/Å³), reading nothing of other materials."""
        row = self.row(material_id)
        if not row.get(C.COL_NPOINTS):
            raise KeyError(f"material {material_id!r} has no charge density (DOS only)")
        shape = tuple(row[C.COL_GRID])
        rho = self.read_flat(C.RHO, material_id).reshape(shape)
        mag = None
        if row.get(C.COL_MAG_OFFSET, -1) >= 0:
            mag = self.read_flat(C.MAG, material_id, C.COL_MAG_OFFSET).reshape(shape)
        lattice = np.asarray(row[C.COL_LATTICE], dtype=np.float64).reshape(3, 3)
        return DensityGrid(material_id, rho, mag, lattice)

    #: build-dos index table and partition arrays (written by chgdata.pipelines.dos).
    DOS_TABLE = C.DOS_INDEX
    DOS_VARIANTS = {"absolute": C.DOS_ABS, "normalised": C.DOS_NORM}

    def dos_windows(self, material_ids: Sequence[str] | None = None,
                    variant: str = "normalised") -> tuple[list[str], np.ndarray, np.ndarray]:
        """DOS windows built by ``chgdata build-dos``: ``(ids, values (N, 2, npoints) float32, energies)``.

        ``variant`` is "absolute" (states/eV/atom) or "normalised" (max = 1; absolute = normalised * norm_const
        of the dos.parquet row). ``energies`` are E - E_F in eV. Without ``material_ids``: every material with a
        window, in index order; with them: in the order given (KeyError for one without a window).
        """
        if variant not in self.DOS_VARIANTS:
            raise ValueError(f"variant must be one of {sorted(self.DOS_VARIANTS)}, got {variant!r}")
        t = self.table(self.DOS_TABLE)
        if t is None or t.num_rows == 0:
            raise KeyError(f"no DOS windows in {self.url}: run chgdata build-dos first")
        meta = {r[C.COL_ID]: r for r in t.select([C.COL_ID, C.COL_PARTITION, "row", "emin", "emax",
                                                   "npoints"]).to_pylist()}
        if material_ids is None:
            ids = [m for m in self.material_ids if m in meta]
        else:
            ids = list(material_ids)
            missing = [m for m in ids if m not in meta]
            if missing:
                raise KeyError(f"no DOS window for {missing[:5]} in {self.url}")
        first = meta[ids[0]] if ids else next(iter(meta.values()))
        npoints = int(first["npoints"])
        out = np.empty((len(ids), 2, npoints), dtype=np.float32)
        groups: dict[str, list[tuple[int, int]]] = {}
        for pos, mid in enumerate(ids):
            groups.setdefault(meta[mid][C.COL_PARTITION], []).append((pos, int(meta[mid]["row"])))
        for partition, pairs in groups.items():
            pos, rows = (np.array(x, dtype=np.int64) for x in zip(*pairs))
            arr = self.array(self.DOS_VARIANTS[variant], partition)
            out[pos] = arr.get_orthogonal_selection((rows, slice(None), slice(None)))
        return ids, out, np.linspace(float(first["emin"]), float(first["emax"]), npoints)

    def raw_dos(self, material_id: str):
        """The raw DOS kept at ingest (:class:`chgdata.dos.RawDos`, validated; ValueError if unusable)."""
        from chgdata.dos import raw_from_row

        partition = self.row(material_id)[C.COL_PARTITION]
        path = self.loc.path(C.DOS_RAW, f"{partition}.parquet")
        if not self.loc.fs.exists(path):
            raise KeyError(f"material {material_id!r} has no raw DOS in {self.url}")
        with self.loc.fs.open(path, "rb") as fh:
            t = pq.read_table(fh, filters=[(C.COL_ID, "==", material_id)])
        if t.num_rows == 0:
            raise KeyError(f"material {material_id!r} has no raw DOS in {self.url}")
        return raw_from_row(t.to_pylist()[0])

    def to_xarray(self, material_id: str):
        """One material as an ``xarray.Dataset``: grids on dims (x, y, z) in e/Å³ (rho, mag, rho_ae, saed, delta,
        those present), the lattice (Å), sites and, after build-dos, its DOS window (spin, energy)."""
        from chgdata.xarray_io import material_dataset

        return material_dataset(self, material_id)

    def dos_xarray(self, material_ids: Sequence[str] | None = None, variant: str = "normalised"):
        """The DOS windows as an ``xarray.DataArray`` on dims (material, spin, energy); energy is E − E_F in eV."""
        from chgdata.xarray_io import dos_dataarray

        ids, values, energies = self.dos_windows(material_ids, variant)
        return dos_dataarray(ids, values, energies, variant)

    def summary(self) -> dict[str, Any]:
        """Counts and provenance at a glance: materials, with density/DOS/spin, sources, codes, store tables."""
        t = self.index

        def col(name: str) -> list:
            return t.column(name).to_pylist() if name in t.column_names else []
        card = self.card
        status = col(C.COL_STATUS)
        return {
            "url": self.url, "schema_version": card.get("schema_version"), "materials": len(self),
            "with_density": sum(bool(n) for n in col(C.COL_NPOINTS)), "with_dos": sum(map(bool, col(C.COL_HAS_DOS))),
            "spin_polarized": sum(map(bool, col(C.COL_SPIN))),
            "flagged": sum(str(s).startswith("flagged") for s in status),
            "sources": sorted({s for s in col(C.COL_SOURCE) if s}),
            "dft_codes": sorted({s for s in col(C.COL_DFT_CODE) if s}),
            "tables": table_names(self.loc), "built": [k for k in ("saed", "dos") if k in card],
        }

    def __repr__(self) -> str:
        s = self.summary()
        return (f"<chgdata.Dataset {s['url']}: {s['materials']} materials ({s['with_density']} with density, "
                f"{s['with_dos']} with DOS, {s['spin_polarized']} spin-polarised); sources "
                f"{', '.join(s['sources']) or '-'}; built {', '.join(s['built']) or 'ingest only'}>")

    def paw_augmentation(self, material_id: str) -> dict | None:
        """The PAW augmentation occupancies kept at ingest from a VASP CHGCAR (pymatgen ``data_aug``), or None."""
        from chgdata.grid import augmentation_from_json

        partition = self.row(material_id)[C.COL_PARTITION]
        path = self.loc.path(C.AUGMENTATION, f"{partition}.parquet")
        if not self.loc.fs.exists(path):
            return None
        with self.loc.fs.open(path, "rb") as fh:
            t = pq.read_table(fh, filters=[(C.COL_ID, "==", material_id)])
        return augmentation_from_json(t.column("data_aug")[0].as_py()) if t.num_rows else None

    def structure(self, material_id: str):
        """The pymatgen Structure of one material."""
        from pymatgen.core import Lattice, Structure

        row = self.row(material_id)
        lattice = Lattice(np.asarray(row[C.COL_LATTICE], dtype=np.float64).reshape(3, 3))
        frac = np.asarray(row[C.COL_FRAC], dtype=np.float64).reshape(-1, 3)
        return Structure(lattice, row[C.COL_SPECIES], frac)


def open_dataset(url: str | os.PathLike, catalog: str | os.PathLike | None = None, verify: bool = True) -> Dataset:
    """Open a dataset directory or fsspec URL for reading; ``catalog:NAME[@VERSION]`` resolves through the
    catalogue (``catalog`` path, else ``$CHGDATA_CATALOG``, else the repo-root catalog.yaml; chgdata.catalog) and
    is checked against the published content checksum unless ``verify=False`` or ``CHGDATA_CATALOG_VERIFY=0``."""
    if isinstance(url, str) and url.startswith("catalog:"):
        from chgdata.catalog import open_catalog_dataset

        return open_catalog_dataset(url, catalog, verify=verify)
    return Dataset(url)


def file_stats(paths: Sequence[str | os.PathLike]) -> list[str]:
    """``"size:mtime_ns"`` of each of ``paths`` in the given order (the cheap pre-check of :func:`file_sha256`)."""
    out = []
    for p in paths:
        st = os.stat(p)
        out.append(f"{st.st_size}:{st.st_mtime_ns}")
    return out


def file_sha256(paths: Sequence[str | os.PathLike]) -> str:
    """sha256 over the bytes of ``paths`` in sorted order (the raw inputs of one material)."""
    h = hashlib.sha256()
    for p in sorted(map(os.fspath, paths)):
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()
