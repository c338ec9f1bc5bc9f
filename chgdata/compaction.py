"""Compaction: the published tables hold one current row per material, for any Parquet reader.

Why: a re-ingested material (a newer MP task, a recomputed local CHGCAR) is committed as a new row in a new
fragment, and build-delta/build-dos then write new rows for it. chgdata reads the newest fragment's row
(:func:`chgdata.store.read_table`), but stock readers (``pandas.read_parquet``, ``pyarrow.dataset``) see every
row. So every writing stage ends, under the store lock, with :func:`finish_stage`: :func:`compact`, then
:func:`chgdata.store.remove_orphans`.

Why in place rather than by a new fragment plus deletion of the old: one atomic replace (a rename locally, a
single PUT on object stores) has no window in which a reader sees both copies or neither; the newest-wins rule
remains the fallback for the window between a stage's commits and its compaction (and for a kill inside it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from chgdata import contract as C
from chgdata.store import Location, read_table, remove_orphans, table_bytes, table_names

#: Derived per-material tables and the column naming the ingest partition a row was built from (``None``: the
#: fragment's own name is that partition, as for ``dos_raw``). A row built from another partition than the
#: material's current index row is stale: its material was re-ingested since.
DERIVED_SOURCE: dict[str, str | None] = {C.DOS_RAW: None, C.DELTA_INDEX: C.COL_PARTITION,
                                         C.DOS_INDEX: "source_partition"}


def _stale_positions(table: str, raw: pa.Table, paths: Sequence[str],
                     current: dict[str, str] | None) -> np.ndarray:
    """Boolean mask over ``raw`` (fragment order) of the rows to drop: superseded by a later row of the same id,
    or (derived tables) built from another ingest partition than the material's current one."""
    ids = raw.column(C.COL_ID).to_pylist()
    last = {mid: pos for pos, mid in enumerate(ids)}
    drop = np.ones(len(ids), dtype=bool)
    drop[list(last.values())] = False
    if current is not None and table in DERIVED_SOURCE:
        column = DERIVED_SOURCE[table]
        if column is None:
            names = [os.path.basename(p)[: -len(".parquet")] for p in paths]
            sources = [names[i] for i in raw.column("__fragment").to_pylist()]
        elif column in raw.column_names:
            sources = raw.column(column).to_pylist()
        else:
            sources = [None] * len(ids)
        for pos, (mid, src) in enumerate(zip(ids, sources)):
            if src is not None and mid in current and current[mid] != src:
                drop[pos] = True
    return drop


def compact(loc: Location) -> dict[str, int]:
    """Make the published tables unambiguous for any Parquet reader (call only while holding the store lock).

    Per-material tables get one row per material: a row superseded by a newer row of its id (a re-ingest, a
    rebuilt Δρ or DOS window) and a derived row (delta, dos, dos_raw) built from an older ingest partition of
    its material are removed from their fragments. The index is compacted first, the derived tables against it.

    Crash safety: each affected fragment is rewritten *in place* by one atomic replace (a temp file renamed over
    it locally, a single PUT on object stores) with the rows it keeps, or deleted when it keeps none. Before and
    after every such step the published state is valid: a fragment holds either its old rows (the superseded
    ones still lose to newer fragments by :func:`_latest_rows`) or its new ones, and no row that is current is
    ever absent. A kill leaves some fragments uncompacted; the next stage's compaction finishes them. Arrays
    that only dropped rows referenced become orphans, swept by :func:`remove_orphans`. Returns rows dropped per
    table.
    """
    dropped: dict[str, int] = {}
    current: dict[str, str] | None = None
    tables = [C.INDEX] + [t for t in table_names(loc) if t not in (C.INDEX, C.FAILURES)]
    for table in tables:
        paths = loc.list_fragments(table)
        if not paths:
            continue
        raw = read_table(loc, table, raw=True)
        if C.COL_ID not in raw.column_names:
            continue
        drop = _stale_positions(table, raw, paths, current)
        if drop.any():
            frag = raw.column("__fragment").to_numpy()
            for i in sorted(set(frag[drop].tolist())):
                keep = raw.filter(pa.array((frag == i) & ~drop)).drop_columns(["__fragment"])
                if keep.num_rows:
                    loc.write_bytes_atomic(paths[i], table_bytes(keep))
                else:
                    loc.fs.rm_file(paths[i])
            dropped[table] = int(drop.sum())
        if table == C.INDEX:
            kept = raw.filter(pa.array(~drop))
            current = dict(zip(kept.column(C.COL_ID).to_pylist(), kept.column(C.COL_PARTITION).to_pylist()))
    return dropped


def finish_stage(loc: Location) -> dict[str, int]:
    """End of a writing stage, under its lock: :func:`compact` the tables, then sweep the arrays and fragments
    no row references any more (:func:`remove_orphans`)."""
    dropped = compact(loc)
    remove_orphans(loc)
    return dropped
