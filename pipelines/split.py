"""``chgdata split``: record the dataset's grouped train/val/test assignment (rules in :mod:`chgdata.splits`).

Runs under the store lock, after ingest and before build-delta (which fits its SAED reference on the train split
only, and makes the default split itself when none is recorded). A rerun keeps every recorded assignment and
adds the materials ingested since. Changing the grouping, seed or fractions of a store whose SAED reference
was fitted on the old train split is refused: the reference would have seen held-out materials.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from chgdata import contract as C
from chgdata.splits import DEFAULT_FRACTIONS, SplitAssignment, SplitError, assign_splits, check_fractions, split_table
from chgdata.store import Location, locked, read_card, read_table, table_bytes, update_card, utcnow

log = logging.getLogger(__name__)


def recorded_split(loc: Location) -> tuple[dict, dict[str, tuple[str, str]]]:
    """The card's ``split`` section and the recorded {material id: (group, split)}."""
    section = read_card(loc).get("split") or {}
    t = read_table(loc, C.SPLITS_TABLE)
    rows = {} if t is None else {r[C.COL_ID]: (r["group"], r["split"]) for r in t.to_pylist()}
    return section, rows


def ensure_split(loc: Location, group_by: str | None = None, fractions: Sequence[float] | None = None,
                 seed: int | None = None) -> SplitAssignment:
    """Assign the store's materials (keeping recorded assignments) and write the table and card section.

    Call while holding the store lock. ``None`` arguments take the recorded values, else the defaults
    (formula, 0.8/0.1/0.1, seed 0).
    """
    section, existing = recorded_split(loc)
    want = {"group_by": group_by or section.get("group_by") or "formula",
            "fractions": list(check_fractions(fractions or section.get("fractions") or DEFAULT_FRACTIONS)),
            "seed": int(seed if seed is not None else section.get("seed", 0))}
    if section and any(section.get(k) != v for k, v in want.items()):
        if read_table(loc, C.DELTA_INDEX) is not None:
            raise SplitError(
                f"{loc.url} is split by {section.get('group_by')} (seed {section.get('seed')}, fractions "
                f"{section.get('fractions')}) and its SAED reference was fitted on that train split; a new split "
                "needs a fresh store (chgdata ingest into another --store)")
        existing = {}
    index = read_table(loc, C.INDEX)
    if index is None:
        raise SplitError(f"{loc.url}: no material to split (run chgdata ingest first)")
    rows = index.select([c for c in (C.COL_ID, C.COL_FORMULA, C.COL_SPECIES, C.COL_PROTOTYPE, C.COL_RHO_OFFSET)
                         if c in index.column_names]).to_pylist()
    assignment = assign_splits(rows, want["group_by"], want["fractions"], want["seed"], existing=existing)
    new = {m for m in assignment.split if existing.get(m) != (assignment.group[m], assignment.split[m])}
    if new or not section:
        name = f"{utcnow().replace(':', '').replace('-', '')}-split.parquet"
        loc.write_bytes_atomic(loc.path(C.SPLITS_TABLE, name), table_bytes(split_table(assignment)))
        update_card(loc, split=assignment.card_section())
        log.info("split %s: %s", loc.url, assignment.card_section()["materials"])
    return assignment


def run_split(store: str, *, group_by: str | None = None, fractions: Sequence[float] | None = None,
              seed: int | None = None) -> SplitAssignment:
    """``chgdata split``: take the lock and :func:`ensure_split`."""
    with locked(store, owner="chgdata split") as loc:
        return ensure_split(loc, group_by, fractions, seed)
