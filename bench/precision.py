"""Accuracy cost of bfloat16 per-edge products in the one-pass ensemble head (issue 29), on the shipped density
model's grouped **test** split: mean NMAE and per-material change against float32 (the shipped path), both
evaluated in the same run; and the evaluation's wall time for each on this machine (SAED and I/O included). On a GPU
the same run gives the accuracy there (``--device cuda``); the head's speed is ``bench/predict.py --paths
one-pass,one-pass-bf16``::

    OMP_NUM_THREADS=1 python bench/precision.py --store data/gpaw-all
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from chgdata.models.checkpoint import load
from chgdata.models.evaluate import density_summary, evaluate_density


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", default="data/gpaw-all")
    ap.add_argument("--split", default="test")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="bench/results/precision.md")
    args = ap.parse_args()
    model, ckpt = load(None, args.device)
    ids = list(ckpt["splits"][args.split])
    results: dict[str, tuple] = {}
    for _ in range(2):  # A B A B: the faster of each pair's runs (the first pays for warm-up)
        for label, dtype in (("float32", None), ("bfloat16", torch.bfloat16)):
            t0 = time.perf_counter()
            res = evaluate_density(model, ckpt, args.store, ids, args.device, matmul_dtype=dtype)
            seconds = min(time.perf_counter() - t0, results.get(label, (None, float("inf")))[1])
            results[label] = (res["per_material"], seconds)
    (base, t_base), (low, t_low) = results["float32"], results["bfloat16"]
    delta = np.array([lo["nmae"] - b["nmae"] for lo, b in zip(low, base)])  # NMAE in %: percentage points
    s_base, s_low = density_summary(base), density_summary(low)
    lines = [f"Shipped density ensemble, grouped {args.split} split ({len(ids)} crystals, full stored grids), "
             f"device {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}.", "",
             "| head products | mean NMAE % | change, percentage points | largest per-crystal change | evaluation "
             "wall s (all crystals, SAED and I/O included; faster of two) |", "|---|---|---|---|---|",
             f"| float32 | {s_base['nmae_mean']:.4f} | — | — | {t_base:.1f} |",
             f"| bfloat16 | {s_low['nmae_mean']:.4f} | {s_low['nmae_mean'] - s_base['nmae_mean']:+.4f} | "
             f"{delta[np.argmax(np.abs(delta))]:+.4f} | {t_low:.1f} |"]
    text = "\n".join(lines) + "\n"
    print(text)
    with open(args.out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
