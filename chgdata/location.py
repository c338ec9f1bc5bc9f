"""Where a store lives and how its tables and card are read: the fsspec :class:`Location`, the Parquet
table schemas and readers, the dataset card (``dataset.yaml``), and the hashing helpers of the commit protocol.

Paths are local directories or fsspec URLs (``s3://bucket/prefix``); credentials come from fsspec's own
environment/config and are never stored. Everything here is re-exported by :mod:`chgdata.store`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
import zarr

from chgdata import contract as C
from chgdata.references import ReferenceTable

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
    # added later; fragments written before lack them and read as nulls (read_table promotes)
    (C.COL_CALC_TYPE, pa.string()), (C.COL_RUN_TYPE, pa.string()),
])

#: Raw DOS as ingested (absolute energies in eV, states/eV/cell; non-spin data has dos_down null).
DOS_RAW_SCHEMA = pa.schema([
    (C.COL_ID, pa.string()), ("efermi", pa.float64()), ("natoms", pa.int32()), ("spin_polarized", pa.bool_()),
    ("energies", pa.list_(pa.float64())), ("dos_up", pa.list_(pa.float64())), ("dos_down", pa.list_(pa.float64())),
])

FAILURES_SCHEMA = pa.schema([(name, pa.string()) for name in C.FAIL_COLUMNS])

#: PAW augmentation occupancies of a VASP CHGCAR (chgdata.grid.augmentation_to_json), one fragment per partition.
AUGMENTATION_SCHEMA = pa.schema([(C.COL_ID, pa.string()), ("data_aug", pa.string())])

#: GPAW's PAW atomic density matrices D_asii (``paw.npz`` of a ``chgdata compute`` folder; electrons), one row per
#: material: ``D[a]`` is atom a's (nspins, ni[a], ni[a]) matrix flattened in C order.
PAW_MATRICES_SCHEMA = pa.schema([(C.COL_ID, pa.string()), ("nspins", pa.int32()), ("ni", pa.list_(pa.int32())),
                                 ("D", pa.list_(pa.list_(pa.float64())))])

#: delta.parquet (build-delta): one row per material with its SAED and Δρ checksums and errors.
DELTA_SCHEMA = pa.schema([
    (C.COL_ID, pa.string()), (C.COL_PARTITION, pa.string()), ("reference_id", pa.string()),
    ("reference_kind", pa.string()), ("saed_sha256", pa.string()), ("delta_sha256", pa.string()),
    ("saed_electrons", pa.float64()), ("delta_integral", pa.float64()), ("abs_delta_over_abs_rho", pa.float64()),
    ("nmae_saed", pa.float64()), ("built_at", pa.string()),
])

#: dos.parquet: one row per window. States are per atom, both spins summed, in the window cells
#: E - E_F in [emin - h/2, emax + h/2] (h = spacing); see chgdata.dos.
DOS_SCHEMA = pa.schema([
    (C.COL_ID, pa.string()), (C.COL_PARTITION, pa.string()), ("row", pa.int64()),
    ("efermi", pa.float64()), ("band_gap", pa.float64()), ("natoms", pa.int32()), ("spin_polarized", pa.bool_()),
    ("states_raw", pa.float64()), ("states_smeared", pa.float64()), ("conservation_error", pa.float64()),
    ("norm_const", pa.float64()), ("sigma", pa.float64()), ("emin", pa.float64()), ("emax", pa.float64()),
    ("npoints", pa.int32()), ("spacing", pa.float64()), ("truncated", pa.bool_()),
    ("raw_emin", pa.float64()), ("raw_emax", pa.float64()), ("dos_sha256", pa.string()), ("built_at", pa.string()),
    ("source_partition", pa.string()),  # the ingest partition whose raw DOS was smeared
])

TABLE_SCHEMAS: dict[str, pa.Schema] = {C.INDEX: INDEX_SCHEMA, C.DOS_RAW: DOS_RAW_SCHEMA, C.FAILURES: FAILURES_SCHEMA,
                                       C.AUGMENTATION: AUGMENTATION_SCHEMA, C.PAW_MATRICES: PAW_MATRICES_SCHEMA,
                                       C.DELTA_INDEX: DELTA_SCHEMA, C.DOS_INDEX: DOS_SCHEMA}


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


def read_reference(where: Location | str | os.PathLike) -> ReferenceTable | None:
    """The SAED reference table of a store (a path, fsspec URL or :class:`Location`), read from its
    ``saed_reference.json`` (:data:`~chgdata.contract.REFERENCE_FILE`), or of a reference JSON file. None when a
    store holds none; ValueError for a file that is not a reference table. The one reader of the table
    (build-delta, predict, attach_reference)."""
    loc = where if isinstance(where, Location) else Location.parse(where)
    path = loc.root if loc.fs.isfile(loc.root) else loc.path(C.REFERENCE_FILE)
    if not loc.fs.exists(path):
        return None
    return ReferenceTable.from_json(loc.fs.cat_file(path).decode())


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
