"""DOS model ablation on the store's grouped split: what DosNet's attention and embedding skip buy (on val).

    python bench/dos_ablation.py --store data/gpaw-all                       # every variant, 3000 steps each
    python bench/dos_ablation.py --store data/gpaw-all --only dosnet --steps 6000 --out runs/dos-ablation

Each run: the store's split by formula (``chgdata split``), 8 structures per batch, AdamW peak lr 3e-3 with 5 %
warm-up and cosine decay, weight decay 1e-4, EMA min(0.995, 1 − 10/steps), MSE on max-normalised windows, one
CPU thread, the head's bias started at the composition baseline (``--output-bias element``); then the EMA
weights are evaluated on **val** (never test) beside the mean-window and composition
baselines fitted on train. Results are appended to ``bench/results/dos_ablation.md``. The shipped model's test
figures come from ``chgdata evaluate`` (see models/default/DOS_README.md).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from chgdata.models.checkpoint import load_checkpoint
from chgdata.models.evaluate_dos import evaluate_dos
from chgdata.models.train import TrainConfig, steps_for_budget, train

SMALL = {"n_scalars": 32, "n_vectors": 8, "l_max": 2, "n_layers": 2, "radial_hidden": 16, "r_cut": 5.0}
DOSNET = {"backbone": "dosnet", "encoder": SMALL, "mlp_hidden": 128}
VARIANTS = {  # name: model config (the CPU configuration; DosNet's own width is l_max 3, 259 channels)
    "nequip": {"backbone": "nequip", "encoder": SMALL, "mlp_hidden": 128},
    "dosnet-no-attention-no-skip": {**DOSNET, "attention": False, "embedding_skip": False},
    "dosnet-no-attention": {**DOSNET, "attention": False},
    "dosnet-no-skip": {**DOSNET, "embedding_skip": False},
    "dosnet": DOSNET,
    "dosnet-element-features": {**DOSNET, "element_features": True},
    "dosnet-lmax1": {**DOSNET, "encoder": {**SMALL, "l_max": 1}},
    "dosnet-3-layers": {**DOSNET, "encoder": {**SMALL, "n_layers": 3}},
    # DosNet's own width (l_max 3, 259 scalar channels): a GPU configuration (bench/gpu_session.sh)
    "dosnet-wide": {**DOSNET, "n_key": 16, "n_skip": 16, "mlp_hidden": 256, "encoder": {
        **SMALL, "n_scalars": 259, "n_vectors": 32, "l_max": 3, "n_layers": 3, "radial_hidden": 64}},
}


def run(store: str, name: str, steps: int, out: Path, lr: float = 3e-3, device: str = "cpu",
        output_bias: str = "element", weight_decay: float = 1e-4, val_every: int = 10**9,
        budget_s: float | None = None) -> dict:
    run_dir = out / f"{name}-{output_bias}"

    def config_for(n: int, where) -> TrainConfig:
        return TrainConfig(store=store, target="dos", out=str(where), device=device, epochs=1, max_steps=n,
                           batch_size=8, lr=lr, warmup_steps=max(5, n // 20), weight_decay=weight_decay,
                           ema_decay=min(0.995, 1 - 10 / n), split_source="store", val_every=val_every,
                           model={**VARIANTS[name], "output_bias": output_bias}, tensorboard=False)

    if budget_s:
        steps, _ = steps_for_budget(config_for, budget_s, run_dir, steps)
    cfg = config_for(steps, run_dir)
    t0 = time.perf_counter()
    train(cfg, progress=False)
    wall = time.perf_counter() - t0
    model, ckpt = load_checkpoint(run_dir / "model.pt", device=device)
    res = evaluate_dos(model, ckpt, store, ckpt["splits"]["val"], device=device)["summary"]
    return {"variant": name, "device": device, "steps": steps, "wall_s": wall, "params": ckpt["n_parameters"], **{
        k: res[k] for k in ("mse", "r2", "wasserstein_eV", "mse_mean_baseline", "mse_composition_baseline",
                            "fraction_beating_both_baselines")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default="data/gpaw-all")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW; it pulls the head's bias back to "
                    "the baseline it started at")
    ap.add_argument("--val-every", type=int, default=10**9, help="epochs between val MSE rows in metrics.csv")
    ap.add_argument("--output-bias", default="element", choices=["element", "mean", "none"],
                    help="start of the head's bias: the composition baseline (element), the mean window, or none")
    ap.add_argument("--budget-s", type=float, default=None, help="seconds of training per variant (a 20-step "
                    "calibration sizes the run; --steps is then the most)")
    ap.add_argument("--only", default=None, help="comma-separated variant names")
    ap.add_argument("--out", default="runs/dos-ablation")
    ap.add_argument("--results", default="bench/results/dos_ablation.md")
    args = ap.parse_args()
    torch.set_num_threads(1)
    names = args.only.split(",") if args.only else list(VARIANTS)
    path = Path(args.results)
    if not path.exists():
        path.write_text("# DOS ablation (val split grouped by formula; baselines fitted on train)\n\n"
                        "| variant | steps | params | wall s | val MSE | R² | W₁ eV | mean-window MSE "
                        "| composition MSE | beats both |\n|---|---|---|---|---|---|---|---|---|---|\n")
    for name in names:
        r = run(args.store, name, args.steps, Path(args.out), args.lr, args.device, args.output_bias,
                args.weight_decay, args.val_every, args.budget_s)
        print(json.dumps(r))
        with open(path, "a") as fh:
            where = f", {args.output_bias} bias, wd {args.weight_decay:g}, lr {args.lr:g}"
            where += "" if args.device == "cpu" else f" ({args.device})"
            fh.write(f"| {name}{where} | {r['steps']} | {r['params']:,} | {r['wall_s']:.0f} | {r['mse']:.4f} "
                     f"| {r['r2']:.3f} "
                     f"| {r['wasserstein_eV']:.3f} | {r['mse_mean_baseline']:.4f} | "
                     f"{r['mse_composition_baseline']:.4f} | {100 * r['fraction_beating_both_baselines']:.0f} % |\n")


if __name__ == "__main__":
    main()
