"""Short CPU training runs of the Δρ model that compare one choice at a time (held-out full-grid NMAE).

    python bench/train_ablation.py --store data/gpaw                      # every variant, 3000 steps each
    python bench/train_ablation.py --store data/gpaw --only medium,medium-rc3 --steps 3000

Each run: split (0.8, 0.2, 0.0) by material id (seed 0), 200 probes per structure, 8 structures per batch, AdamW
peak lr 5e-3 with 5 % warm-up and cosine decay, EMA min(0.99, 1 − 10/steps), one CPU thread, then the full-grid
NMAE of the EMA weights over all held-out materials (ρ̂ = ρ_SAED + Δρ̂; SAED alone for comparison). A variant
takes 3–7 minutes at 3000 steps on this machine's cores.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from chgdata.models.train import TrainConfig, train

TINY = {"encoder": {"n_scalars": 8, "n_vectors": 2, "l_max": 1, "n_layers": 1, "radial_hidden": 8},
        "n_edge_layers": 1, "n_edge_scalars": 8, "mlp_hidden": 16, "probe_r_cut": 4.0}
MEDIUM = {"encoder": {"n_scalars": 16, "n_vectors": 4, "l_max": 2, "n_layers": 2, "radial_hidden": 16},
          "n_edge_layers": 1, "n_edge_scalars": 16, "mlp_hidden": 32, "probe_r_cut": 4.0}
VARIANTS = {  # name: (model, TrainConfig overrides)
    "tiny-unweighted": (TINY, {"weighting": "none"}),
    "tiny": (TINY, {}),
    "medium-1-block": ({**MEDIUM, "encoder": {**MEDIUM["encoder"], "n_layers": 1}}, {}),
    "medium": (MEDIUM, {}),
    "medium-rc3": ({**MEDIUM, "probe_r_cut": 3.0}, {}),
    "medium-rc2.5": ({**MEDIUM, "probe_r_cut": 2.5}, {}),
}


def run(store: str, name: str, steps: int, out: Path) -> dict:
    model, extra = VARIANTS[name]
    cfg = TrainConfig(store=store, target="delta", out=str(out / name), device="cpu", epochs=1, max_steps=steps,
                      probes=200, max_probes_per_batch=None, batch_size=8, lr=5e-3, warmup_steps=max(5, steps // 20),
                      ema_decay=min(0.99, 1 - 10 / steps), split=(0.8, 0.2, 0.0), val_every=10**9, model=model,
                      tensorboard=False, **extra)
    t0 = time.perf_counter()
    res = train(cfg, progress=False)
    return {"variant": name, "steps": steps, "wall_s": time.perf_counter() - t0, **res}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--only", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    ap.add_argument("--out", default="/tmp/train-ablation")
    a = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    print("| variant | steps | wall s | val NMAE % | SAED alone % | final train loss |\n|---|---|---|---|---|---|")
    for name in a.only.split(","):
        r = run(a.store, name.strip(), a.steps, Path(a.out))
        rows.append(r)
        print(f"| {r['variant']} | {r['steps']} | {r['wall_s']:.0f} | {r['val_nmae']:.3f} | "
              f"{r['val_nmae_saed']:.3f} | {r['train_loss']:.4g} |", flush=True)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "ablation.json").write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
