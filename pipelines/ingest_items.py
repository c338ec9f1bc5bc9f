"""What an ingest run is asked to do: the materials (calculation folders under one or several roots, MP ids),
the ids rejected before any I/O, and the committed materials that changed since (a newer MP task, local input
files with other contents)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

from chgdata import contract as C
from chgdata.sources import vasp_dir
from chgdata.sources.mp import MPSource
from chgdata.sources.records import SourceError, validate_mp_id
from chgdata.store import file_sha256, file_stats

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Item:
    """One material to ingest: a local folder or an MP id."""

    material_id: str
    calc: vasp_dir.LocalCalc | None = None
    points: int = 0


def changed_mp_materials(index, items: Sequence[Item], mp: MPSource, mpr) -> dict[str, tuple[str | None, str]]:
    """Committed MP items whose current charge-density task differs from the indexed one: {id: (old, new)}.

    Metadata only, batched (:meth:`MPSource.current_tasks`); when MP cannot be asked, the committed versions are
    kept and a warning says so."""
    if index is None or not items:
        return {}
    stored = dict(zip(index.column(C.COL_ID).to_pylist(), index.column(C.COL_TASK_ID).to_pylist()))
    try:
        now = mp.current_tasks(mpr, [it.material_id for it in items])
    except SourceError as exc:
        log.warning("cannot check the Materials Project for updated charge densities (%s); committed versions "
                    "kept", exc)
        return {}
    return {mid: (stored.get(mid), task.task_id) for mid, task in now.items() if task.task_id != stored.get(mid)}


def changed_local_materials(index, items: Sequence[Item]) -> dict[str, tuple[str | None, str]]:
    """Committed local folders whose input files changed since they were ingested: {id: (old, new input sha256)}.

    Cheap first: the same files with the same size and mtime (ns) as recorded at ingest are unchanged without
    being read; otherwise they are hashed and compared with the recorded ``input_sha256`` (a touched or moved
    but identical folder is not re-ingested). A folder that cannot be read now keeps its committed version."""
    if index is None or not items:
        return {}
    cols = [c for c in (C.COL_ID, C.COL_FILES, C.COL_INPUT_SHA, C.COL_INPUT_STAT) if c in index.column_names]
    stored = {r[C.COL_ID]: r for r in index.select(cols).to_pylist()}
    changed = {}
    for it in items:
        row = stored.get(it.material_id)
        if row is None or it.calc is None:
            continue
        files = it.calc.files
        try:
            if row.get(C.COL_INPUT_STAT) and row.get(C.COL_FILES) == files \
                    and row[C.COL_INPUT_STAT] == file_stats(files):
                continue
            now = file_sha256(files)
        except OSError:
            continue
        if now != row.get(C.COL_INPUT_SHA):
            changed[it.material_id] = (row.get(C.COL_INPUT_SHA), now)
    return changed


def from_dir_roots(from_dir: str | os.PathLike | Sequence[str | os.PathLike] | None) -> list[str]:
    """One folder, several, or none, as a list of paths."""
    if from_dir is None:
        return []
    if isinstance(from_dir, (str, os.PathLike)):
        return [os.fspath(from_dir)]
    return [os.fspath(r) for r in from_dir]


def collect_items(from_dir: str | Sequence[str] | None,
                  mp_ids: Sequence[str] | None) -> tuple[list[Item], dict[str, str]]:
    """Materials to ingest and the ids rejected before any I/O (malformed ids, bad folders). ``from_dir``: one
    folder tree or several; a material id found in two of them is rejected as a duplicate."""
    items: list[Item] = []
    rejected: dict[str, str] = {}
    for root in from_dir_roots(from_dir):
        calcs, bad = vasp_dir.discover(root)
        rejected.update(dict(bad))
        items += [Item(c.material_id, c, c.grid_points()) for c in calcs]
        if not calcs and not bad:
            raise SourceError(f"--from-dir {root}: no calculation folders (CHGCAR, AECCAR or DOS files) found")
    for raw in mp_ids or []:
        try:
            items.append(Item(validate_mp_id(raw)))
        except SourceError as exc:
            rejected[str(raw)[:60]] = str(exc)
    seen: set[str] = set()
    unique = []
    for it in items:
        if it.material_id in seen:
            first = next(o for o in unique if o.material_id == it.material_id)
            where = f": {first.calc.folder} and {it.calc.folder}" if first.calc and it.calc else " in the input"
            rejected.setdefault(it.material_id, f"duplicate material id {it.material_id!r}{where}")
            continue
        seen.add(it.material_id)
        unique.append(it)
    return unique, rejected
