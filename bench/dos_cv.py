"""Grouped cross-validation of DOS models inside the train split: the kernel model against DosNet and both baselines.

    OMP_NUM_THREADS=1 python bench/dos_cv.py --store data/gpaw-all --folds 5 --steps 600 --out runs/dos-cv

The store's train split (grouped by formula, ``chgdata split``) is cut into ``--folds`` folds of whole formulas
(:func:`chgdata.splits.grouped_folds`, seed 0). For every fold: DosNet with the shipped recipe (the small CPU
width, output bias started at the composition baseline, AdamW lr 1e-3, weight decay 1.0, ``--steps`` steps) is
trained on the other folds; the kernel model (:mod:`chgdata.models.dos_kernel`) is fitted on the same folds
at each (γ, λ) of its grid; the mean-window and composition baselines are refitted there. All are scored on the
held-out fold. val and test are never read. This gives 57 held-out formulas instead of val's 4 (15 of whose 26
materials are Co polymorphs), so it is the basis for choosing a DOS model. The table is appended to
``bench/results/dos_cv.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from chgdata.models.checkpoint import load_checkpoint
from chgdata.models.dos_kernel import kernel_grid
from chgdata.models.evaluate_dos import element_fractions, predict_windows
from chgdata.models.fit_dos import cv_rows, fold_errors
from chgdata.models.train import TrainConfig, train

from chgdata.descriptors import structure_descriptors
from chgdata.metrics import dos_mse
from chgdata.store import open_dataset

DOSNET = {"backbone": "dosnet", "mlp_hidden": 128, "output_bias": "element",
          "encoder": {"n_scalars": 32, "n_vectors": 8, "l_max": 2, "n_layers": 2, "radial_hidden": 16, "r_cut": 5.0}}


def dosnet_fold(store: str, fold: int, folds: int, steps: int, out: Path) -> dict[str, float]:
    """Train DosNet with fold ``fold`` of the train split held out; its per-material MSE there."""
    cfg = TrainConfig(store=store, target="dos", out=str(out / f"dosnet-fold{fold}"), device="cpu", epochs=1,
                      max_steps=steps, batch_size=8, lr=1e-3, weight_decay=1.0, warmup_steps=max(5, steps // 20),
                      ema_decay=min(0.995, 1 - 10 / steps), split_source="store", cv_folds=folds, cv_fold=fold,
                      val_every=10**9, workers=0, seed=0, model=DOSNET, tensorboard=False)
    train(cfg)
    model, ckpt = load_checkpoint(Path(cfg.out) / "model.pt")
    ds = open_dataset(store)
    ids, w, _ = ds.dos_windows(ckpt["splits"]["val"], "normalised")
    pred = predict_windows(model, [ds.structure(m) for m in ids])
    return {m: dos_mse(p, t) for m, p, t in zip(ids, pred, w, strict=True)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--energy-exponents", default="0,1,2", help="reduced-energy exponents p in the kernel grid")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--out", default="runs/dos-cv")
    ap.add_argument("--skip-dosnet", action="store_true", help="kernel model and baselines only (seconds)")
    ap.add_argument("--results", default="bench/results/dos_cv.md")
    args = ap.parse_args()
    out = Path(args.out)
    ds = open_dataset(args.store)
    have = set(ds.dos_ids())
    train_ids = [m for m in ds.splits()["train"] if m in have]
    ids, w, _ = ds.dos_windows(train_ids, "normalised")
    groups = [ds.groups().get(m, m) for m in ids]
    structures = [ds.structure(m) for m in ids]
    x = np.stack([structure_descriptors(s) for s in structures])
    fractions = [element_fractions(s) for s in structures]

    t0 = time.time()
    grid = kernel_grid([float(v) for v in args.energy_exponents.split(",")])
    errors = fold_errors(x, w, fractions, groups, grid, args.folds)
    kernel_s = time.time() - t0
    kernel_rows = cv_rows(errors, grid, len(set(groups)), args.folds)
    best = min(kernel_rows, key=lambda r: r["mse"])
    kern, comp, mean = (dict(zip(ids, errors[key].tolist(), strict=True))
                        for key in ((best["gamma"], best["lam"], best["energy_exponent"]), "composition", "mean"))
    rows = [("mean training window", mean, 0.0), ("composition", comp, 0.0),
            (f"kernel (γ {best['gamma']}, λ {best['lam']}, p {best['energy_exponent']:g}, chosen by this CV)", kern,
             kernel_s)]
    if not args.skip_dosnet:
        dosnet, t0 = {}, time.time()
        for fold in range(args.folds):
            dosnet.update(dosnet_fold(args.store, fold, args.folds, args.steps, out))
        rows.append((f"DosNet, shipped recipe, {args.steps} steps", dosnet, time.time() - t0))
    lines = [f"\n## {time.strftime('%Y-%m-%d')}: {len(ids)} train materials, {len(set(groups))} formulas, "
             f"{args.folds} grouped folds\n",
             "| model | held-out MSE | vs composition | vs mean window | beats both baselines | fit s (all folds) |",
             "|---|---|---|---|---|---|"]
    for name, errs, secs in rows:
        e = np.array([errs[m] for m in ids])
        cm, mm = np.array([comp[m] for m in ids]), np.array([mean[m] for m in ids])
        beats = float(((e < cm) & (e < mm)).mean())
        lines.append(f"| {name} | {e.mean():.4f} | {e.mean() / cm.mean():.2f}× | {e.mean() / mm.mean():.2f}× | "
                     f"{beats:.0%} | {secs:.0f} |")
    lams = sorted({r["lam"] for r in kernel_rows})
    for p in sorted({r["energy_exponent"] for r in kernel_rows}):
        lines += ["", f"Kernel grid, reduced-energy exponent p = {p:g} (grouped-CV MSE):", "",
                  "| γ \\ λ | " + " | ".join(str(lam) for lam in lams) + " |", "|---" * (1 + len(lams)) + "|"]
        for g in sorted({r["gamma"] for r in kernel_rows}):
            cells = {r["lam"]: r["mse"] for r in kernel_rows if r["gamma"] == g and r["energy_exponent"] == p}
            lines.append(f"| {g} | " + " | ".join(f"{cells[lam]:.4f}" for lam in lams) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    path = Path(args.results)
    if not path.exists():
        path.write_text("# DOS models in grouped cross-validation inside the train split\n\n"
                        "`python bench/dos_cv.py --store data/gpaw-all` (see its docstring). Held-out folds are "
                        "whole formulas of the train split; val and test are not read. MSE on max-normalised "
                        "windows, mean over materials; baselines refitted on each fold's training part.\n")
    with path.open("a") as fh:
        fh.write(text)
    (out / "dos_cv.json").parent.mkdir(parents=True, exist_ok=True)
    (out / "dos_cv.json").write_text(json.dumps({"kernel_grid": kernel_rows, "per_material": {
        name: errs for name, errs, _ in rows}}, indent=1))


if __name__ == "__main__":
    main()
