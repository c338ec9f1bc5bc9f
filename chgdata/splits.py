"""Train/val/test splits as a property of the dataset: whole groups (a composition, a chemical system or a
prototype) are held out, so test figures measure prediction for materials the model never saw a sibling of.

Design
------
* ``group_by``: ``formula`` (reduced composition, the default), ``chemsys`` (the set of elements),
  ``prototype`` (as the source records it, e.g. GPAW ``meta.json``), or ``random`` — one group per material, the
  random split by material, named as such (strained siblings of a test crystal then sit in training).
* A group's split is decided by a hash of ``(seed, group)`` mapped to [0, 1) and cut at the cumulative
  fractions. The assignment of a group therefore never changes when the dataset grows, so a test group never
  drifts into training between dataset versions.
* Element coverage: every element of a val/test material must occur in training (the SAED reference is fitted
  on the training split only, and an element embedding that never trained is noise). When some materials
  carry a density, coverage is judged on those (materials with only a DOS do not enter the SAED fit).
  Uncovered val/test groups move to training one at a time, smallest hash first, until every held-out
  element is covered; the moved groups are recorded.
* Stored as ``splits.parquet`` (``material_id``, ``group``, ``split``) plus the card's ``split`` section
  (``group_by``, ``seed``, fractions, counts, moved groups). Existing rows are kept when new materials arrive:
  a new material of a known group takes that group's split, a new group is hashed.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from chgdata import contract as C

GROUP_BY = ("formula", "chemsys", "prototype", "random")
SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)

SPLIT_SCHEMA = pa.schema([(C.COL_ID, pa.string()), ("group", pa.string()), ("split", pa.string())])


class SplitError(ValueError):
    """A split cannot be made or changed as asked (unknown grouping, missing prototypes, conflicting split)."""


def elements_of(row: dict[str, Any]) -> set[str]:
    """The elements of an index row (from its per-site species)."""
    return set(row.get(C.COL_SPECIES) or re.findall(r"[A-Z][a-z]?", row[C.COL_FORMULA]))


def group_of(row: dict[str, Any], group_by: str) -> str:
    """The group label of one index row under ``group_by``."""
    if group_by == "formula":
        return row[C.COL_FORMULA]
    if group_by == "chemsys":
        return "-".join(sorted(elements_of(row)))
    if group_by == "prototype":
        proto = row.get(C.COL_PROTOTYPE)
        if not proto:
            raise SplitError(f"{row[C.COL_ID]}: no prototype recorded by its source (group by formula or chemsys)")
        return proto
    if group_by == "random":
        return row[C.COL_ID]
    raise SplitError(f"unknown grouping {group_by!r} (choose from {', '.join(GROUP_BY)})")


def hash_unit(seed: int, key: str) -> float:
    """A uniform number in [0, 1) fixed by ``(seed, key)``: the same on every machine and Python version."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    f = tuple(float(x) for x in fractions)
    if len(f) != 3 or min(f) < 0 or not math.isclose(sum(f), 1.0, abs_tol=1e-9) or f[0] == 0:
        raise SplitError(f"split fractions {fractions} must be three non-negative numbers (train > 0) summing to 1")
    return f  # type: ignore[return-value]


@dataclass
class SplitAssignment:
    """Which split every material and group is in."""

    group_by: str
    seed: int
    fractions: tuple[float, float, float]
    split: dict[str, str] = field(default_factory=dict)  # material id -> train|val|test
    group: dict[str, str] = field(default_factory=dict)  # material id -> group label
    moved: list[str] = field(default_factory=list)  # groups moved to train for element coverage

    def ids(self, split: str) -> list[str]:
        return sorted(m for m, s in self.split.items() if s == split)

    def as_dict(self) -> dict[str, list[str]]:
        return {s: self.ids(s) for s in SPLITS}

    def rows(self) -> list[dict[str, str]]:
        return [{C.COL_ID: m, "group": self.group[m], "split": self.split[m]} for m in sorted(self.split)]

    def card_section(self) -> dict[str, Any]:
        groups = defaultdict(set)
        for m, s in self.split.items():
            groups[s].add(self.group[m])
        counts = Counter(self.split.values())
        return {
            "group_by": self.group_by, "seed": self.seed, "fractions": list(self.fractions),
            "rule": "split of a group = sha256(seed:group) in [0,1) cut at the cumulative fractions; "
                    "held-out groups with an element absent from train moved to train",
            "materials": {s: counts.get(s, 0) for s in SPLITS},
            "groups": {s: len(groups[s]) for s in SPLITS},
            "moved_to_train_for_element_coverage": sorted(self.moved),
            "table": C.SPLITS_TABLE,
        }


def assign_splits(rows: Iterable[dict[str, Any]], group_by: str = "formula",
                  fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 0,
                  existing: dict[str, tuple[str, str]] | None = None) -> SplitAssignment:
    """Assign every index row to train/val/test by group (see the module docstring).

    ``existing``: material id -> (group, split) already recorded; those materials and their groups keep their
    split, so a grown dataset keeps its held-out groups held out.
    """
    if group_by not in GROUP_BY:
        raise SplitError(f"unknown grouping {group_by!r} (choose from {', '.join(GROUP_BY)})")
    f = check_fractions(fractions)
    rows = list(rows)
    out = SplitAssignment(group_by, int(seed), f)
    elements: dict[str, set[str]] = defaultdict(set)
    # coverage counts the materials that carry a density when there are any (the SAED fit needs those)
    dense = any(r.get(C.COL_RHO_OFFSET, 0) >= 0 for r in rows)
    for r in rows:
        g = group_of(r, group_by)
        out.group[r[C.COL_ID]] = g
        elements[g] |= elements_of(r) if (not dense or r.get(C.COL_RHO_OFFSET, 0) >= 0) else set()
    fixed = {}
    for mid, (g, s) in (existing or {}).items():
        if mid in out.group:
            if out.group[mid] != g:
                raise SplitError(f"{mid}: recorded in group {g!r} but is now {out.group[mid]!r} (make a new split)")
            fixed[g] = s
    cuts = (f[0], f[0] + f[1])
    group_split = {}
    for g in elements:
        if g in fixed:
            group_split[g] = fixed[g]
        else:
            u = hash_unit(seed, g)
            group_split[g] = "train" if u < cuts[0] else "val" if u < cuts[1] else "test"
    while True:  # element coverage, moving the fewest groups in a fixed order
        train_el = set().union(*(elements[g] for g, s in group_split.items() if s == "train"))
        uncovered = sorted((hash_unit(seed, g), g) for g, s in group_split.items()
                           if s != "train" and g not in fixed and not elements[g] <= train_el)
        if not uncovered:
            break
        g = uncovered[0][1]
        group_split[g] = "train"
        out.moved.append(g)
    out.split = {m: group_split[g] for m, g in out.group.items()}
    return out


def grouped_folds(groups: Sequence[str], n_folds: int, seed: int = 0) -> list[np.ndarray]:
    """Indices of ``n_folds`` folds that each hold whole groups (a seeded shuffle of the sorted group names)."""
    names = sorted(set(groups))
    if len(names) < n_folds:
        raise ValueError(f"{len(names)} groups cannot make {n_folds} folds")
    order = np.random.default_rng(seed).permutation(len(names))
    fold_of = {names[j]: i % n_folds for i, j in enumerate(order)}
    g = np.array([fold_of[x] for x in groups])
    return [np.flatnonzero(g == f) for f in range(n_folds)]


def split_table(assignment: SplitAssignment) -> pa.Table:
    return pa.Table.from_pylist(assignment.rows(), schema=SPLIT_SCHEMA)
