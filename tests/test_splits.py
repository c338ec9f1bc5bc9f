"""Grouped splits: whole groups held out, element coverage, stability when the dataset grows, and the store's
split used by build-delta (its SAED reference is fitted on the train split only)."""

from __future__ import annotations

import json

import pytest

from chgdata import contract as C
from chgdata.splits import SplitError, assign_splits
from tests.conftest import GPAW, need_shared


def _rows():
    """Index-like rows of every crystal of ../shared/data/gpaw (formula, species and prototype from meta.json)."""
    need_shared()
    rows = []
    for meta in sorted(GPAW.glob("*/meta.json")):
        m = json.loads(meta.read_text())
        species = [s["species"][0]["element"] for s in m["structure"]["sites"]]
        rows.append({C.COL_ID: m["id"], C.COL_FORMULA: m["reduced_formula"], C.COL_SPECIES: species,
                     C.COL_PROTOTYPE: m["prototype"]})
    return rows


@pytest.mark.parametrize("group_by", ["formula", "chemsys", "prototype"])
def test_groups_are_held_out_whole_and_elements_covered(group_by):
    rows = _rows()
    a = assign_splits(rows, group_by)
    groups = {s: {a.group[m] for m in a.ids(s)} for s in ("train", "val", "test")}
    assert not groups["train"] & groups["val"] and not groups["train"] & groups["test"]
    assert not groups["val"] & groups["test"]
    assert a.ids("val") + a.ids("test") and len(a.ids("train")) > len(rows) / 2
    species = {r[C.COL_ID]: set(r[C.COL_SPECIES]) for r in rows}
    train_el = set().union(*(species[m] for m in a.ids("train")))
    for m in a.ids("val") + a.ids("test"):
        assert species[m] <= train_el, m
    assert a == assign_splits(list(reversed(rows)), group_by)  # order-free, deterministic


def test_random_split_is_by_material_and_named_so():
    rows = _rows()
    a = assign_splits(rows, "random")
    assert a.card_section()["group_by"] == "random"
    formulas = {r[C.COL_ID]: r[C.COL_FORMULA] for r in rows}
    test_f = {formulas[m] for m in a.ids("test")}
    assert test_f & {formulas[m] for m in a.ids("train")}  # siblings in training: why it is not the default


def test_growth_keeps_recorded_assignments():
    rows = _rows()
    half = rows[: len(rows) // 2]
    first = assign_splits(half, "formula")
    existing = {m: (first.group[m], first.split[m]) for m in first.split}
    grown = assign_splits(rows, "formula", existing=existing)
    assert all(grown.split[m] == s for m, (_, s) in existing.items())
    by_group = {}
    for m, g in grown.group.items():
        by_group.setdefault(g, set()).add(grown.split[m])
    assert all(len(s) == 1 for s in by_group.values())  # a group never straddles splits


def test_bad_requests_are_clear():
    rows = _rows()
    with pytest.raises(SplitError, match="unknown grouping 'element'"):
        assign_splits(rows, "element")
    with pytest.raises(SplitError, match="summing to 1"):
        assign_splits(rows, "formula", (0.5, 0.1, 0.1))
    no_proto = [{**r, C.COL_PROTOTYPE: None} for r in rows[:3]]
    with pytest.raises(SplitError, match="no prototype recorded"):
        assign_splits(no_proto, "prototype")


def test_evaluate_uses_the_store_split_and_refuses_leaks():
    pytest.importorskip("torch")
    from chgdata.models.evaluate import select_materials

    store_splits = {"train": ["a", "b"], "val": ["c"], "test": ["d", "e"]}
    ids = ["a", "b", "c", "d", "e"]
    ckpt = {"splits": {"train": ["a", "b", "c"], "val": ["d"], "test": ["e"]}}
    assert select_materials({"splits": {"train": ["a", "b"]}}, ids, "test", store_splits=store_splits) == ["d", "e"]
    assert select_materials(ckpt, ids, "test") == ["e"]  # no split in the store: the checkpoint's own
    with pytest.raises(ValueError, match="trained on 1 of the 1 'val' materials"):
        select_materials(ckpt, ids, "val", store_splits=store_splits)
    assert select_materials(ckpt, ids, "all", store_splits=store_splits) == ids


def test_coverage_is_judged_on_materials_with_a_density():
    """Fe only in a DOS-only material of the train split does not cover a held-out Fe crystal with a density."""
    rows = [{C.COL_ID: f"m{i}", C.COL_FORMULA: f, C.COL_SPECIES: sp, C.COL_RHO_OFFSET: off}
            for i, (f, sp, off) in enumerate([("LiFePO4", ["Li", "Fe", "P", "O"], -1), ("Fe", ["Fe"], 0),
                                              ("Si", ["Si"], 0), ("Al", ["Al"], 0), ("NaCl", ["Na", "Cl"], 0)])]
    for seed in range(20):
        a = assign_splits(rows, "formula", (0.4, 0.3, 0.3), seed)
        with_rho = [r for r in rows if r[C.COL_RHO_OFFSET] >= 0]
        train_el = set().union(*(set(r[C.COL_SPECIES]) for r in with_rho if a.split[r[C.COL_ID]] == "train"))
        assert all(set(r[C.COL_SPECIES]) <= train_el for r in with_rho if a.split[r[C.COL_ID]] != "train")
