"""Train a density model on a store's grouped split and report it on every split beside its SAED reference.

The store must carry a split (``chgdata split``; ``chgdata run`` makes one, grouped by formula) and Δρ built
from a reference that saw no val or test material (``build-delta``: fitted on the train split, or
``--reference gpaw-free-atoms``). Training sees the train split, validation (end of
run, EMA weights) the val split; the test split is only evaluated here, after training, and nothing is chosen
on it. The report gives, per split, the model's mean full-grid NMAE, the SAED reference's, their ratio and on
how many materials the model wins, plus magnetisation NMAE for spin-polarised materials, and per test group::

    # one member of the shipped density model (Δρ against free atoms; seeds 0-3, then chgdata ensemble)
    OMP_NUM_THREADS=1 python bench/train_grouped.py --store data/gpaw-atoms --out runs/FB0 --steps 4000 \
        --size medium --enc '{"n_layers": 2, "element_features": true}' --weight-decay 0.05 --splits val --seed 0
    python bench/train_grouped.py --store data/gpaw-all --out runs/T --steps 8000 --target total  # seed 003 test

``--size small|medium|large`` picks the model (small = the cpu preset's; large = the gpu preset's, for
``--device cuda --probes 8000 --batch 32 --max-probes 262144``, as bench/gpu_session.sh runs it).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

from chgdata.models.evaluate import format_report, run_evaluate
from chgdata.models.train import TrainConfig, steps_for_budget, train

SIZES = {
    "small": {"encoder": {"n_scalars": 16, "n_vectors": 4, "l_max": 2, "n_layers": 2, "radial_hidden": 16},
              "n_edge_layers": 1, "n_edge_scalars": 16, "mlp_hidden": 32, "probe_r_cut": 3.0},
    "medium": {"encoder": {"n_scalars": 32, "n_vectors": 8, "l_max": 2, "n_layers": 3, "radial_hidden": 32},
               "n_edge_layers": 1, "n_edge_scalars": 32, "mlp_hidden": 64, "probe_r_cut": 3.0},
    "large": {"encoder": {"n_scalars": 48, "n_vectors": 12, "l_max": 2, "n_layers": 3},
              "n_edge_layers": 1, "n_edge_scalars": 32, "mlp_hidden": 64, "probe_r_cut": 3.0},
}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--target", default="delta", choices=["delta", "total"])
    ap.add_argument("--size", default="small", choices=sorted(SIZES))
    ap.add_argument("--steps", type=int, default=16000, help="optimiser steps (at most, with --budget-s)")
    ap.add_argument("--budget-s", type=float, default=None, help="size the run to this many seconds of training "
                    "by a 20-step calibration run (device runs with a fixed lease)")
    ap.add_argument("--probes", type=int, default=200)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-probes", type=int, default=20000, help="probes per step at most (structures beyond it "
                    "wait for the next step; TrainConfig.max_probes_per_batch)")
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--weight-decay", type=float, default=1e-6, help="AdamW weight decay")
    ap.add_argument("--enc", default="{}", help='encoder overrides as JSON, e.g. \'{"n_layers": 1}\'')
    ap.add_argument("--splits", default="test,val", help="splits to evaluate after training")
    ap.add_argument("--seed", type=int, default=0, help="seed of weights, probes and batch order (ensembles)")
    ap.add_argument("--train-groups", type=float, default=1.0, help="fraction of the train split's groups used "
                    "(learning curves; a nested subset)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    model = copy.deepcopy(SIZES[args.size])
    model["encoder"].update(json.loads(args.enc))
    command = "python bench/train_grouped.py " + " ".join(argv or __import__("sys").argv[1:])

    def config_for(steps: int, run_dir) -> TrainConfig:
        return TrainConfig(store=args.store, target=args.target, out=str(run_dir), device=args.device, epochs=1,
                           max_steps=steps, probes=args.probes, batch_size=args.batch,
                           max_probes_per_batch=args.max_probes, lr=args.lr,
                           warmup_steps=max(5, steps // 20), ema_decay=min(0.999, 1 - 10 / steps),
                           split_source="store", train_group_fraction=args.train_groups, seed=args.seed, workers=0,
                           val_every=10**9, model=model, weight_decay=args.weight_decay, tensorboard=False)

    steps = args.steps
    if args.budget_s:
        steps, s_per_step = steps_for_budget(config_for, args.budget_s, out, args.steps)
        print(f"calibration: {s_per_step:.3f} s per step -> {steps} steps in {args.budget_s:g} s")
    cfg = config_for(steps, out)
    t0 = time.time()
    train(cfg)
    train_s = time.time() - t0
    res = run_evaluate(str(out / "model.pt"), args.store, args.splits, device=args.device)
    res["summary"]["train_seconds"] = train_s
    res["summary"]["command"] = command
    res["summary"]["steps"] = steps
    (out / "evaluation.json").write_text(json.dumps(res, indent=1, default=float))
    text = format_report(res)
    (out / "report.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
