"""The dataset store: Zarr v3 partition arrays addressed by a Parquet index (see :mod:`chgdata.contract`).

Commit protocol (DESIGN.md §3): a task writes its partition arrays first, then its raw-DOS and failures
fragments, and its index fragment last, by an atomic rename. A material exists iff an index row names it, so a
killed task leaves at most an orphaned partition that no index row points to; :func:`orphans` lists
them and :func:`remove_orphans` deletes them under the store lock.

Paths are local directories or fsspec URLs (``s3://bucket/prefix``); credentials come from fsspec's own
environment/config and are never stored.

The pieces live in :mod:`chgdata.location` (Location, table schemas and readers, card, hashes),
:mod:`chgdata.commit` (lock, partition writers, commit, orphans) and :mod:`chgdata.dataset` (the reader); every
public name is importable from here.
"""

from __future__ import annotations

import os

from chgdata.commit import (
    PartitionArrayWriter,
    PartitionCommit,
    StageReport,
    orphans,
    referenced_partitions,
    remove_orphans,
)
from chgdata.dataset import (
    Dataset,
    DensityGrid,
)
from chgdata.location import (
    AUGMENTATION_SCHEMA,
    CHUNK_POINTS,
    DOS_RAW_SCHEMA,
    FAILURES_SCHEMA,
    INDEX_SCHEMA,
    PAW_MATRICES_SCHEMA,
    SHARD_POINTS,
    Location,
    StoreError,
    _latest_rows,
    array_attrs,
    committed_ids,
    consolidate,
    file_sha256,
    file_stats,
    new_partition_name,
    read_card,
    read_reference,
    read_table,
    sha256_array,
    table_bytes,
    table_names,
    update_card,
    utcnow,
    write_card,
)
from chgdata.lock import StoreLock, locked

__all__ = [
    "AUGMENTATION_SCHEMA",
    "PAW_MATRICES_SCHEMA",
    "CHUNK_POINTS",
    "DOS_RAW_SCHEMA",
    "Dataset",
    "DensityGrid",
    "FAILURES_SCHEMA",
    "INDEX_SCHEMA",
    "Location",
    "PartitionArrayWriter",
    "PartitionCommit",
    "StageReport",
    "SHARD_POINTS",
    "StoreError",
    "StoreLock",
    "_latest_rows",
    "array_attrs",
    "committed_ids",
    "consolidate",
    "file_sha256",
    "file_stats",
    "locked",
    "new_partition_name",
    "open_dataset",
    "orphans",
    "read_card",
    "read_reference",
    "read_table",
    "referenced_partitions",
    "remove_orphans",
    "sha256_array",
    "table_bytes",
    "table_names",
    "update_card",
    "utcnow",
    "write_card",
]


def open_dataset(url: str | os.PathLike, catalog: str | os.PathLike | None = None, verify: bool = True,
                 check_reads: bool | None = None) -> Dataset:
    """Open a dataset directory or fsspec URL for reading; ``catalog:NAME[@VERSION]`` resolves through the
    catalogue (``catalog`` path, else ``$CHGDATA_CATALOG``, else the repo-root catalog.yaml; chgdata.catalog) and
    is checked against the published content checksum unless ``verify=False`` or ``CHGDATA_CATALOG_VERIFY=0``.
    ``check_reads``: compare every grid and DOS window read with its checksum (default on, unless
    ``CHGDATA_CHECK_READS=0``; :class:`Dataset`)."""
    if isinstance(url, str) and url.startswith("catalog:"):
        from chgdata.catalog import open_catalog_dataset

        ds = open_catalog_dataset(url, catalog, verify=verify)
        if check_reads is not None:
            ds.check_reads = bool(check_reads)
        return ds
    return Dataset(url, check_reads=check_reads)
