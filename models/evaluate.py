"""Evaluate a checkpoint on a store: full-grid NMAE per material (and of the SAED baseline), or DOS metrics.

Density errors are kept as additive pieces (:class:`chgdata.metrics.DensityErrorSums`) per material; the
reported NMAE is the mean over materials of 100·Σ|ρ̂ − ρ|/Σ|ρ| (ChargE3Net). For a Δ model ρ̂ = ρ_SAED + Δρ̂ with
ρ_SAED from the checkpoint's reference table (the store's saed array when its reference id is the same).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from chgdata import contract as C
from chgdata.metrics import DensityErrorSums, density_error_sums, mean_nmae

from .checkpoint import load, reference_table
from .density import predict_grid
from .evaluate_dos import evaluate_dos  # noqa: F401 - DOS evaluation lives in its own module
from .kinds import is_density
from .predict import atomic_numbers

SPLIT_NAMES = ("train", "val", "test")


def select_materials(ckpt: dict[str, Any], store_ids: Sequence[str], split: str = "test",
                     materials: Sequence[str] | None = None,
                     store_splits: dict[str, list[str]] | None = None) -> list[str]:
    """Materials to evaluate: ``materials`` if given; every material of the store for ``all``; else the
    ``split`` (train|val|test) recorded in the store (``chgdata split``), or the checkpoint's own when the store
    records none. Refuses a held-out split that holds materials the checkpoint was trained on."""
    have = set(store_ids)
    if materials:
        missing = [m for m in materials if m not in have]
        if missing:
            raise KeyError(f"materials not in the store: {missing[:5]}")
        return list(materials)
    if split == "all":
        return list(store_ids)
    if split not in SPLIT_NAMES:
        raise ValueError(f"unknown split {split!r} (train, val, test or all)")
    if store_splits and any(store_splits.values()):
        ids = [m for m in store_splits.get(split, []) if m in have]
        source = "store"
    else:
        splits = ckpt.get("splits") or {}
        if split not in splits:
            raise ValueError(f"the store records no split and the checkpoint no {split!r} split (has "
                             f"{sorted(splits)}); use --split all or --materials")
        ids = [m for m in splits[split] if m in have]
        source = "checkpoint"
    if not ids:
        raise ValueError(f"the {split!r} split of the {source} has no material in this store "
                         "(evaluating on other data? use --split all)")
    if split != "train":
        seen = sorted(set(ids) & set((ckpt.get("splits") or {}).get("train", [])))
        if seen:
            raise ValueError(f"the checkpoint was trained on {len(seen)} of the {len(ids)} {split!r} materials "
                             f"(e.g. {seen[0]}): its figures there would not be held out; use --split all to "
                             "evaluate anyway")
    return ids


def split_source(store_splits: dict[str, list[str]] | None, materials: Sequence[str] | None = None) -> str:
    """Where the evaluated materials come from, in words (printed beside the counts)."""
    if materials:
        return "the --materials given"
    if store_splits and any(store_splits.values()):
        return "the store's recorded split (chgdata split)"
    return "the checkpoint's own split (the store records none)"


def split_disagreement(store_splits: dict[str, list[str]] | None, ckpt: dict[str, Any],
                       store_ids: Sequence[str]) -> str | None:
    """A warning when the store's recorded split and the checkpoint's assign this store's materials differently
    (counts of both, over ``store_ids`` only, so each adds up to the materials evaluated), else None."""
    theirs = ckpt.get("splits") or {}
    if not store_splits or not any(store_splits.values()) or not any(theirs.values()):
        return None
    have = set(store_ids)
    mine = {m: k for k in SPLIT_NAMES for m in store_splits.get(k, []) if m in have}
    other = {m: k for k in SPLIT_NAMES for m in theirs.get(k, []) if m in have}
    differ = sorted(m for m in have if mine.get(m) != other.get(m))
    if not differ:
        return None

    def counts(assign: dict[str, str]) -> str:
        n = {k: sum(v == k for v in assign.values()) for k in SPLIT_NAMES}
        rest = len(have) - sum(n.values())
        return " / ".join(f"{k} {n[k]}" for k in SPLIT_NAMES) + (f" / none {rest}" if rest else "")

    return (f"the store's split ({counts(mine)}) and the checkpoint's ({counts(other)}) differ on {len(differ)} "
            f"of this store's {len(have)} materials (e.g. {differ[0]}): rows follow the store's; a held-out split "
            "holding any checkpoint training material is refused")


def evaluate_density(model, ckpt: dict[str, Any], store: str, material_ids: Sequence[str], device: str = "cpu",
                     chunk_size: int | None = None,
                     progress: Callable[[str, int, int], None] | None = None,
                     matmul_dtype=None) -> dict[str, Any]:
    """Per-material error sums of the model (raw, and with the Δ net charge removed) and of the SAED baseline
    (``matmul_dtype``: the one-pass head's product dtype, :func:`~chgdata.models.density.member_grids`)."""
    from chgdata.saed import saed_for_structure
    from chgdata.store import open_dataset

    ds = open_dataset(store)
    target = model.config.target
    reference = reference_table(ckpt, store) if target == "delta" else None
    store_ref = (ds.card.get("saed") or {}).get("reference_id")
    rows = []
    for i, mid in enumerate(material_ids):
        grid = ds.density(mid)
        s = ds.structure(mid)
        out = predict_grid(model, s.cart_coords, atomic_numbers(s), s.lattice.matrix, grid.rho.shape, chunk_size,
                           device, matmul_dtype=matmul_dtype).numpy().astype(np.float64)
        pred = out.sum(-1)
        rho = grid.rho.astype(np.float64)
        saed = None
        if reference is not None and store_ref == reference.id:
            saed = ds.grid(C.SAED, mid).reshape(rho.shape).astype(np.float64)
        elif reference is not None:
            saed = saed_for_structure(s, rho.shape, reference).astype(np.float64)
        elif store_ref:
            saed = ds.grid(C.SAED, mid).reshape(rho.shape).astype(np.float64)
        row: dict[str, Any] = {"material_id": mid, "formula": s.composition.reduced_formula, "natoms": len(s),
                               "grid_points": int(rho.size)}
        if target == "delta":
            model_sums = density_error_sums(saed + pred, rho)
            cons_sums = density_error_sums(saed + pred - pred.mean(), rho)
        else:
            model_sums = density_error_sums(pred, rho)
            cons_sums = model_sums
        row.update(abs_err=model_sums.abs_err, abs_ref=model_sums.abs_ref, abs_err_conserved=cons_sums.abs_err,
                   nmae=model_sums.nmae, nmae_conserved=cons_sums.nmae)
        if saed is not None:
            base = density_error_sums(saed, rho)
            row.update(abs_err_saed=base.abs_err, nmae_saed=base.nmae, beats_saed=bool(model_sums.nmae < base.nmae))
        if grid.mag is not None and out.shape[-1] == 2:
            mag = grid.mag.astype(np.float64)
            sums = density_error_sums(out[..., 0] - out[..., 1], mag)
            row["mag_mae"], row["mag_nmae"] = sums.mae, sums.nmae
        rows.append(row)
        if progress is not None:
            progress(mid, i + 1, len(material_ids))
    return {"summary": {"kind": "density", "target": target, **density_summary(rows)}, "per_material": rows}


def density_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean NMAE of the model and of its SAED reference over ``rows``, their ratio, wins, magnetisation NMAE."""
    out: dict[str, Any] = {
        "materials": len(rows),
        "nmae_mean": mean_nmae(DensityErrorSums(r["abs_err"], r["abs_ref"]) for r in rows),
        "nmae_conserved_mean": mean_nmae(DensityErrorSums(r["abs_err_conserved"], r["abs_ref"]) for r in rows),
    }
    with_base = [r for r in rows if "nmae_saed" in r]
    if with_base:
        out["nmae_saed_mean"] = mean_nmae(DensityErrorSums(r["abs_err_saed"], r["abs_ref"]) for r in with_base)
        out["ratio_to_saed"] = out["nmae_mean"] / out["nmae_saed_mean"]
        out["beats_saed"] = int(sum(r["beats_saed"] for r in with_base))
        out["fraction_beating_saed"] = out["beats_saed"] / len(with_base)
    mags = [r["mag_nmae"] for r in rows if "mag_nmae" in r]
    if mags:
        out["mag_nmae_mean"] = float(np.mean(mags))
        out["spin_materials"] = len(mags)
    return out


def group_summaries(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """:func:`density_summary` per ``group`` of the rows (the split's held-out compositions or prototypes)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r.get("group") or r["formula"], []).append(r)
    return {g: density_summary(rs) for g, rs in sorted(groups.items())}


def run_evaluate(checkpoint: str | None, store: str, split: str = "test", materials: Sequence[str] | None = None,
                 device: str = "cpu", chunk_size: int | None = None,
                 progress: Callable[[str, int, int], None] | None = None,
                 plot: str | None = None) -> dict[str, Any]:
    """``chgdata evaluate``: load, select materials, evaluate; result dict with ``summary`` and ``per_material``.

    ``split``: one of train|val|test|all or several joined by commas ("test,val,train"); density results then
    carry ``by_split`` (summary per split) and ``by_group`` (per group of the first split), and the top-level
    figures are those of the first split. ``plot``: DOS models, PNG grid of the worst and median materials."""
    from chgdata.store import open_dataset

    model, ckpt = load(checkpoint, device)
    ds = open_dataset(store)
    is_dos = not is_density(model)
    if is_dos:
        store_ids = ds.dos_ids()
    else:
        store_ids = [r[C.COL_ID] for r in ds.index.to_pylist()
                     if r.get(C.COL_RHO_OFFSET) is not None and r[C.COL_RHO_OFFSET] >= 0]
    store_splits, groups = ds.splits(), ds.groups()
    names = ["materials"] if materials else [s.strip() for s in split.split(",") if s.strip()]
    selected = {name: select_materials(ckpt, store_ids, name, materials, store_splits) for name in names}
    if is_dos:
        ids = list(dict.fromkeys(m for name in names for m in selected[name]))
        res = evaluate_dos(model, ckpt, store, ids, device, plot=plot)
        label = {m: name for name in reversed(names) for m in selected[name]}
        for r in res["per_material"]:
            r["split"] = label[r["material_id"]]
    else:
        rows = []
        for name in names:
            part = evaluate_density(model, ckpt, store, selected[name], device, chunk_size, progress)
            for r in part["per_material"]:
                r.update(split=name, group=groups.get(r["material_id"], r["formula"]))
            rows += part["per_material"]
        first = [r for r in rows if r["split"] == names[0]]
        res = {"summary": {"kind": "density", "target": model.config.target, **density_summary(first)},
               "per_material": rows}
        res["summary"]["by_split"] = {n: density_summary([r for r in rows if r["split"] == n]) for n in names}
        res["summary"]["by_group"] = group_summaries(first)
    counts = {name: sum(r["split"] == name for r in res["per_material"]) for name in names}
    res["summary"].update(checkpoint=str(checkpoint or "default"), store=str(store),
                          split="materials" if materials else ",".join(names),
                          split_counts=counts,
                          split_source=split_source(store_splits, materials),
                          split_warning=None if materials else split_disagreement(store_splits, ckpt, store_ids),
                          group_by=(ds.card.get("split") or {}).get("group_by") if store_splits["train"] else None,
                          saed_reference_id=(ckpt.get("data_version") or {}).get("saed_reference_id"))
    if res["summary"]["saed_reference_id"]:
        from chgdata.free_atoms import reference_kind

        res["summary"]["saed_reference"] = (f"the model's: {reference_kind(res['summary']['saed_reference_id'])} "
                                            "(the SAED NMAE column is this reference alone)")
    return res


def format_report(res: dict[str, Any]) -> str:
    """Markdown tables of a density evaluation: per split (model vs SAED) and per group of the first split."""
    s = res["summary"]
    lines = [f"checkpoint `{s['checkpoint']}`, store `{s['store']}`, split grouped by {s.get('group_by')}", "",
             "| split | materials | model NMAE % | SAED NMAE % | ratio | beats SAED | magnetisation NMAE % |",
             "|---|---|---|---|---|---|---|"]

    def cells(d: dict[str, Any]) -> str:
        mag = f"{d['mag_nmae_mean']:.2f} ({d['spin_materials']})" if "mag_nmae_mean" in d else "—"
        if "nmae_saed_mean" not in d:
            return f"{d['materials']} | {d['nmae_mean']:.3f} | — | — | — | {mag}"
        return (f"{d['materials']} | {d['nmae_mean']:.3f} | {d['nmae_saed_mean']:.3f} | {d['ratio_to_saed']:.2f} | "
                f"{d['beats_saed']}/{d['materials']} | {mag}")

    for name, d in s.get("by_split", {}).items():
        lines.append(f"| {name} | {cells(d)} |")
    first = s["split"].split(",")[0]
    lines += ["", f"Per group of the {first} split:", "",
              "| group | materials | model NMAE % | SAED NMAE % | ratio | beats SAED | magnetisation NMAE % |",
              "|---|---|---|---|---|---|---|"]
    for g, d in s.get("by_group", {}).items():
        lines.append(f"| {g} | {cells(d)} |")
    return "\n".join(lines) + "\n"


def write_results(res: dict[str, Any], path: str | os.PathLike) -> list[Path]:
    """JSON (summary + per material) at ``path`` and a per-material CSV next to it (same stem)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1, default=float))
    csv_path = path.with_suffix(".csv")
    rows = res["per_material"]
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(csv_path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return [path, csv_path]
