"""``chgdata fit-dos``: the kernel DOS model, its (γ, λ) chosen by grouped cross-validation inside the train split,
fitted on that split and written as a checkpoint."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from chgdata.descriptors import DESCRIPTOR_NAMES, structure_descriptors
from chgdata.metrics import dos_mse
from chgdata.splits import grouped_folds

from .checkpoint import CHECKPOINT_FORMAT, save_checkpoint
from .dos_kernel import DEFAULT_GRID, fit_kernel, max_similarity
from .evaluate_dos import element_fractions, fit_baselines
from .registry import config_to_dict
from .train_utils import code_version, data_version

log = logging.getLogger(__name__)


def fold_errors(descriptors: np.ndarray, windows: np.ndarray, fractions: Sequence[dict[str, float]],
                groups: Sequence[str], grid: Sequence[tuple[float, float, float]] = DEFAULT_GRID, n_folds: int = 5,
                seed: int = 0) -> dict[Any, np.ndarray]:
    """Held-out MSE of every material (n,) in folds of whole groups: under ``"mean"`` and ``"composition"`` the
    baselines refitted on each fold's training part, under each (γ, λ, p) of ``grid`` the kernel model (p the
    reduced-energy exponent of :func:`fit_kernel`)."""
    w = np.asarray(windows, np.float64)
    out = {key: np.empty(len(w)) for key in ("mean", "composition", *grid)}
    for held in grouped_folds(groups, n_folds, seed):
        train = np.setdiff1d(np.arange(len(w)), held)
        base = fit_baselines(w[train], [fractions[i] for i in train])
        out["mean"][held] = [dos_mse(base.mean, w[i]) for i in held]
        out["composition"][held] = [dos_mse(base.composition(fractions[i]), w[i]) for i in held]
        for gamma, lam, p in grid:
            model = fit_kernel(descriptors[train], w[train], gamma, lam, energy_exponent=p)
            with torch.no_grad():
                pred = model(torch.as_tensor(descriptors[held])).numpy()
            out[(gamma, lam, p)][held] = [dos_mse(q, w[i]) for q, i in zip(pred, held, strict=True)]
    return out


def cv_rows(errors: dict[Any, np.ndarray], grid: Sequence[tuple[float, float, float]], n_groups: int,
            n_folds: int) -> list[dict[str, Any]]:
    """Per (γ, λ, p) of ``grid``, from :func:`fold_errors`: the mean held-out MSE beside the mean-window and
    composition baselines', and the fraction of held-out materials beating both."""
    mse_m, mse_c = errors["mean"], errors["composition"]
    rows = []
    for gamma, lam, p in grid:
        e = errors[(gamma, lam, p)]
        rows.append({"gamma": gamma, "lam": lam, "energy_exponent": p, "mse": float(e.mean()),
                     "mse_mean_baseline": float(mse_m.mean()),
                     "mse_composition_baseline": float(mse_c.mean()),
                     "fraction_beating_both_baselines": float(((e < mse_m) & (e < mse_c)).mean()),
                     "materials": len(e), "groups": n_groups, "folds": n_folds})
    return rows


def similarity_calibration(descriptors: np.ndarray, errors: np.ndarray, groups: Sequence[str], gamma: float,
                           n_folds: int = 5, seed: int = 0, n_bins: int = 4) -> dict[str, list[float]]:
    """How held-out error falls with similarity to the training set, from the same grouped folds as
    :func:`fold_errors`: each material's kernel similarity to its closest crystal in the other folds, cut at its
    quantiles into ``n_bins`` bins, and the mean held-out MSE (``errors``, (n,)) of each bin."""
    sim = np.empty(len(descriptors))
    for held in grouped_folds(groups, n_folds, seed):
        train = np.setdiff1d(np.arange(len(descriptors)), held)
        sim[held] = max_similarity(descriptors[train], descriptors[held], gamma)
    edges = np.quantile(sim, np.arange(1, n_bins) / n_bins)
    bins = np.searchsorted(edges, sim, side="right")
    return {"similarity_edges": edges.tolist(), "mse": [float(errors[bins == b].mean()) for b in range(n_bins)],
            "materials": [int((bins == b).sum()) for b in range(n_bins)]}


def fit_dos_kernel(store: str, out: str | os.PathLike, grid: Sequence[tuple[float, float, float]] = DEFAULT_GRID,
                   n_folds: int = 5, seed: int = 0) -> dict[str, Any]:
    """Fit the kernel DOS model on a store's train split and write a checkpoint to ``out``.

    (γ, λ, p) is the cell of ``grid`` with the lowest :func:`cv_rows` MSE over the train split's groups (the
    store's split, ``chgdata split``); val and test are not read. The checkpoint holds the model, the split,
    the cross-validation table and the training split's baselines, and loads with ``weights_only=True``.
    Returns ``{"cv": rows, "selected": row, "checkpoint": path}``."""
    from chgdata.store import open_dataset

    ds = open_dataset(store)
    splits = ds.splits()
    if not splits.get("train"):
        raise ValueError(f"{store} has no train split: run `chgdata split --store {store}` first")
    have = set(ds.dos_ids())
    train = [m for m in splits["train"] if m in have]
    if len(train) < 2 * n_folds:
        raise ValueError(f"only {len(train)} training materials have a DOS window (run chgdata build-dos)")
    ids, windows, energies = ds.dos_windows(train, "normalised")
    group_of = ds.groups()
    groups = [group_of.get(m, m) for m in ids]
    structures = [ds.structure(m) for m in ids]
    x = np.stack([structure_descriptors(s) for s in structures])
    fractions = [element_fractions(s) for s in structures]
    errors = fold_errors(x, windows, fractions, groups, grid, n_folds, seed)
    rows = cv_rows(errors, grid, len(set(groups)), n_folds)
    best = min(rows, key=lambda r: r["mse"])
    calibration = similarity_calibration(x, errors[(best["gamma"], best["lam"], best["energy_exponent"])], groups,
                                         best["gamma"], n_folds, seed)
    model = fit_kernel(x, windows, best["gamma"], best["lam"], (float(energies[0]), float(energies[-1])),
                       best["energy_exponent"])
    base = fit_baselines(windows, fractions)
    state = {
        "format": CHECKPOINT_FORMAT, "model_config": config_to_dict(model.config), "model": model.state_dict(),
        "ema": None,
        "config": {"dos_variant": "normalised", "descriptors": list(DESCRIPTOR_NAMES), "cv": rows, "selected": best,
                   "n_folds": n_folds, "seed": seed, "store": str(store), "similarity_calibration": calibration,
                   "train_ids": list(ids), "train_formulas": [s.composition.reduced_formula for s in structures]},
        "splits": {k: list(v) for k, v in splits.items()}, "train_elements": sorted({e for f in fractions for e in f}),
        "data_version": data_version(store), "code_version": code_version(), "n_parameters": 0,
        "torch": str(torch.__version__),
        "baselines": {"mean": torch.tensor(base.mean, dtype=torch.float32), "n_materials": base.n_materials,
                      "elements": {e: torch.tensor(v, dtype=torch.float32) for e, v in base.elements.items()}},
    }
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, state)
    log.debug("kernel DOS model: gamma %s, lam %s, p %s, grouped-CV MSE %.4f (composition %.4f, mean %.4f) -> %s",
              best["gamma"], best["lam"], best["energy_exponent"], best["mse"], best["mse_composition_baseline"],
              best["mse_mean_baseline"], path)
    return {"cv": rows, "selected": best, "checkpoint": str(path)}
