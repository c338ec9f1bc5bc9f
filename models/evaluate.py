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

from .evaluate_dos import evaluate_dos  # noqa: F401 - DOS evaluation lives in its own module
from .predict import atomic_numbers, load, predict_grid, reference_table


def select_materials(ckpt: dict[str, Any], store_ids: Sequence[str], split: str = "test",
                     materials: Sequence[str] | None = None) -> list[str]:
    """Materials to evaluate: ``materials`` if given, else the checkpoint's ``split`` (val|test|train) that is
    in the store, or every material of the store for ``all``."""
    have = set(store_ids)
    if materials:
        missing = [m for m in materials if m not in have]
        if missing:
            raise KeyError(f"materials not in the store: {missing[:5]}")
        return list(materials)
    if split == "all":
        return list(store_ids)
    splits = ckpt.get("splits") or {}
    if split not in splits:
        raise ValueError(f"the checkpoint records no {split!r} split (has {sorted(splits)}); use --split all "
                         "or --materials")
    ids = [m for m in splits[split] if m in have]
    if not ids:
        raise ValueError(f"none of the {len(splits[split])} {split!r} materials of the checkpoint is in the store "
                         "(evaluating on other data? use --split all)")
    return ids


def evaluate_density(model, ckpt: dict[str, Any], store: str, material_ids: Sequence[str], device: str = "cpu",
                     chunk_size: int | None = None,
                     progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Per-material error sums of the model (raw, and with the Δ net charge removed) and of the SAED baseline."""
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
                           device).numpy().astype(np.float64)
        pred = out.sum(-1)
        rho = grid.rho.astype(np.float64)
        saed = None
        if reference is not None and store_ref == reference.id:
            saed = ds.read_flat(C.SAED, mid).reshape(rho.shape).astype(np.float64)
        elif reference is not None:
            saed = saed_for_structure(s, rho.shape, reference).astype(np.float64)
        elif store_ref:
            saed = ds.read_flat(C.SAED, mid).reshape(rho.shape).astype(np.float64)
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
            row["mag_mae"] = float(np.abs(out[..., 0] - out[..., 1] - mag).mean())
        rows.append(row)
        if progress is not None:
            progress(mid, i + 1, len(material_ids))
    summary: dict[str, Any] = {
        "kind": "density", "target": target, "materials": len(rows),
        "nmae_mean": mean_nmae(DensityErrorSums(r["abs_err"], r["abs_ref"]) for r in rows),
        "nmae_conserved_mean": mean_nmae(DensityErrorSums(r["abs_err_conserved"], r["abs_ref"]) for r in rows),
    }
    with_base = [r for r in rows if "nmae_saed" in r]
    if with_base:
        summary["nmae_saed_mean"] = mean_nmae(DensityErrorSums(r["abs_err_saed"], r["abs_ref"]) for r in with_base)
        summary["fraction_beating_saed"] = float(np.mean([r["beats_saed"] for r in with_base]))
    return {"summary": summary, "per_material": rows}


def run_evaluate(checkpoint: str | None, store: str, split: str = "test", materials: Sequence[str] | None = None,
                 device: str = "cpu", chunk_size: int | None = None,
                 progress: Callable[[str, int, int], None] | None = None,
                 plot: str | None = None) -> dict[str, Any]:
    """``chgdata evaluate``: load, select materials, evaluate; result dict with ``summary`` and ``per_material``
    (``plot``: DOS models, PNG grid of the worst and median materials)."""
    from chgdata.store import open_dataset

    model, ckpt = load(checkpoint, device)
    ds = open_dataset(store)
    is_dos = not hasattr(model.config, "probe_r_cut")
    if is_dos:
        t = ds.table(C.DOS_INDEX)
        store_ids = [m for m in ds.material_ids if t is not None and m in set(t.column(C.COL_ID).to_pylist())]
    else:
        store_ids = [r[C.COL_ID] for r in ds.index.to_pylist()
                     if r.get(C.COL_RHO_OFFSET) is not None and r[C.COL_RHO_OFFSET] >= 0]
    ids = select_materials(ckpt, store_ids, split, materials)
    if is_dos:
        res = evaluate_dos(model, ckpt, store, ids, device, plot=plot)
    else:
        res = evaluate_density(model, ckpt, store, ids, device, chunk_size, progress)
    res["summary"].update(checkpoint=str(checkpoint or "default"), store=str(store),
                          split="materials" if materials else split,
                          saed_reference_id=(ckpt.get("data_version") or {}).get("saed_reference_id"))
    return res


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
