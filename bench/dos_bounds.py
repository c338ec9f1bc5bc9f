"""What the training data can support for DOS on unseen formulas: learning curve, oracle floors, resolution.

    python bench/dos_bounds.py --store data/gpaw-all            # ~2 minutes on one core

Everything runs inside the store's **train** split, in folds of whole formulas (`chgdata.splits.grouped_folds`,
seed 0); val and test are not read. Reported, as MSE on max-normalised windows (mean over held-out materials):

* **learning curve** of the kernel DOS model (each cell of the grid it was chosen from is not re-chosen: the
  given (γ, λ, p)) when each fold's training part keeps only a random fraction of its formulas (5 draws), and
  the power law MSE ≈ a·N^(−α) through it, N the training formulas;
* **oracle floors** for models whose prediction is a combination of training windows (the kernel model, the
  composition and mean baselines): for each held-out material the single best training window, and the best
  non-negative combination of all of them fitted to that held-out window itself (non-negative least squares);
  no model of that family can do better;
* **resolution**: the MSE between each window and itself smeared further by a Gaussian of σ eV, i.e. the error
  of a model that is right except for features finer than σ.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from chgdata.models.dos_kernel import fit_kernel
from scipy.ndimage import gaussian_filter1d
from scipy.optimize import nnls

from chgdata.descriptors import structure_descriptors
from chgdata.metrics import dos_mse
from chgdata.splits import grouped_folds
from chgdata.store import open_dataset


def kernel_cv(x, w, groups, gamma, lam, p, keep_fraction=1.0, draw=0, folds=5) -> float:
    """Grouped-CV MSE of the kernel model, each fold's training part cut to ``keep_fraction`` of its formulas."""
    errors = []
    for held in grouped_folds(list(groups), folds, 0):
        train = np.setdiff1d(np.arange(len(w)), held)
        names = sorted(set(groups[train]))
        kept = set(np.random.default_rng(draw).permutation(names)[: max(2, round(keep_fraction * len(names)))])
        train = np.array([i for i in train if groups[i] in kept])
        model = fit_kernel(x[train], w[train], gamma, lam, energy_exponent=p)
        with torch.no_grad():
            pred = model(torch.as_tensor(x[held])).numpy()
        errors += [dos_mse(q, w[i]) for q, i in zip(pred, held, strict=True)]
    return float(np.mean(errors))


def oracle_floors(w, groups, folds=5) -> tuple[float, float]:
    """Mean held-out MSE of the best single training window and of the best non-negative combination."""
    best_one, best_mix = [], []
    for held in grouped_folds(list(groups), folds, 0):
        train = np.setdiff1d(np.arange(len(w)), held)
        basis = w[train].reshape(len(train), -1).T
        for i in held:
            best_one.append(min(dos_mse(w[j], w[i]) for j in train))
            coef, _ = nnls(basis, w[i].ravel())
            best_mix.append(dos_mse((basis @ coef).reshape(w[i].shape), w[i]))
    return float(np.mean(best_one)), float(np.mean(best_mix))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default="data/gpaw-all")
    ap.add_argument("--gamma", type=float, default=0.5)
    ap.add_argument("--lam", type=float, default=1.0)
    ap.add_argument("--p", type=float, default=0.0, help="reduced-energy exponent of the kernel model (shipped: 0)")
    ap.add_argument("--target", type=float, default=0.01, help="MSE the power law is solved for")
    ap.add_argument("--results", default="bench/results/dos_cv.md")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    ds = open_dataset(args.store)
    have = set(ds.dos_ids())
    ids, w, energies = ds.dos_windows([m for m in ds.splits()["train"] if m in have], "normalised")
    group_of = ds.groups()
    groups = np.array([group_of.get(m, m) for m in ids])
    x = np.stack([structure_descriptors(ds.structure(m)) for m in ids])
    n_formulas = len(set(groups)) * 4 / 5  # formulas in a fold's training part (5 folds)

    curve = []
    for frac in (0.25, 0.5, 0.75, 1.0):
        draws = [kernel_cv(x, w, groups, args.gamma, args.lam, args.p, frac, d) for d in range(5 if frac < 1 else 1)]
        curve.append((frac, frac * n_formulas, float(np.mean(draws)), float(np.std(draws))))
    slope, intercept = np.polyfit(np.log([c[1] for c in curve]), np.log([c[2] for c in curve]), 1)
    needed = np.exp((np.log(args.target) - intercept) / slope)
    one, mix = oracle_floors(w, groups)
    h = float(energies[1] - energies[0])
    blur = {s: float(np.mean((gaussian_filter1d(w, s / h, axis=-1, mode="constant") - w) ** 2))
            for s in (0.2, 0.5, 1.0)}

    lines = [f"\n## {time.strftime('%Y-%m-%d')}: what the train split can support "
             f"(`python bench/dos_bounds.py --store {args.store}`, {time.time() - t0:.0f} s)\n",
             f"{len(ids)} train materials, {len(set(groups))} formulas, 5 grouped folds; kernel model "
             f"γ {args.gamma:g}, λ {args.lam:g}, p {args.p:g}.\n",
             "| training formulas per fold (fraction) | kernel held-out MSE (± over 5 draws) |", "|---|---|"]
    lines += [f"| {n:.0f} ({f:.0%}) | {m:.4f} ± {s:.4f} |" for f, n, m, s in curve]
    lines += ["", f"Power law through it: MSE ≈ {np.exp(intercept):.3f} · N^{slope:.2f}; MSE {args.target:g} at "
              f"N ≈ {needed:,.0f} training formulas.", "",
              "| floor (held-out materials of the same folds) | MSE |", "|---|---|",
              f"| best single training window, chosen with the answer known | {one:.4f} |",
              f"| best non-negative combination of all training windows, fitted to the answer | {mix:.4f} |"]
    lines += [f"| the true window smeared further by σ = {s:g} eV (right except for finer features) | {v:.4f} |"
              for s, v in blur.items()]
    text = "\n".join(lines) + "\n"
    print(text)
    with Path(args.results).open("a") as fh:
        fh.write(text)


if __name__ == "__main__":
    main()
