"""Train the delta, total and DOS models on a built store and report speed, memory and validation errors.

Meant for one H100 (about 8 minutes in all), from a fresh checkout with a store built by
``chgdata ingest``, ``chgdata build-delta`` and ``chgdata build-dos``::

    python bench/train_gpu.py --store /path/to/gpaw-store                 # GPU, report to $OUT or bench/results
    python bench/train_gpu.py --store /path/to/gpaw-store --smoke         # seconds, CPU: proves the script runs
    python bench/train_gpu.py --store /path/to/gpaw-store --scale cpu     # reduced CPU run (tiny model)

Every target trains on the store's grouped train split and validates on its val split (``chgdata split``; a
store without a recorded split falls back to 20 % of the materials held out at random, seed 0). Each target gets
a wall-clock budget: a short calibration run measures seconds per step, then the real run is sized to the
budget (warm-up + cosine over exactly that many steps, EMA weights for validation). Validation is the full-grid
NMAE (ChargE3Net's formula, total density; for delta ρ̂ = ρ_SAED + Δρ̂) over all held-out materials, and the
DOS MSE on max-normalised windows. The delta model's EMA checkpoint is exported as ``default_density.pt``
(``--install-default`` also copies it to models/default/density.pt, the packaged default).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch
from chgdata.models.presets import PRESETS
from chgdata.models.train import TrainConfig, steps_for_budget, train

REPO = Path(__file__).resolve().parents[1]


def _scale(preset: str, **bench) -> dict:
    """A bench scale from a training preset (chgdata.models.presets, shared with ``chgdata train --preset``)."""
    p = PRESETS[preset]
    return {"model": p["model"], "dos_model": p["dos_model"], "probes": p["probes"], "batch": p["batch_size"],
            "max_probes": p["max_probes_per_batch"], "lr": p["lr"], "ema": p["ema_decay"], "workers": p["workers"],
            **bench}


SCALES = {
    # model sizes, probes per structure, structures per batch, lr, EMA, workers: the presets; budgets in seconds
    # per target. gpu: large batches, the head's kernels only fill a GPU at ~10⁵ probes per step (H200 forward:
    # 0.35 M probes/s at 10⁴ probes, 3 M/s at 2.5·10⁵), and the gpaw grids are small (3–110 k points)
    "gpu": _scale("gpu", budget={"delta": 240, "total": 120, "dos": 45}, max_steps=6000, device="cuda"),
    "cpu": _scale("cpu", budget={"delta": 200, "total": 200, "dos": 60}, max_steps=2000, device="cpu"),
    "smoke": {"model": {"encoder": {"n_scalars": 8, "n_vectors": 2, "l_max": 1, "n_layers": 1, "radial_hidden": 8},
                        "n_edge_layers": 1, "n_edge_scalars": 8, "mlp_hidden": 16},
              "dos_model": {"encoder": {"n_scalars": 8, "n_vectors": 2, "l_max": 1, "n_layers": 1},
                            "mlp_hidden": 16},
              "probes": 64, "batch": 4, "max_probes": None, "budget": {"delta": 8, "total": 8, "dos": 5},
              "max_steps": 12, "lr": 5e-3, "ema": 0.9, "workers": 0, "device": "cpu", "val_max": 3},
}
CALIBRATION_STEPS = 20


def _config(scale: dict, store: str, target: str, out: Path, device: str, max_steps: int) -> TrainConfig:
    return TrainConfig(
        store=store, target=target, out=str(out), device=device, epochs=1, max_steps=max_steps,
        probes=scale["probes"], max_probes_per_batch=scale["max_probes"], batch_size=scale["batch"],
        lr=scale["lr"], warmup_steps=max(5, max_steps // 20),
        ema_decay=min(scale["ema"], 1 - 10 / max_steps),  # the EMA must forget the start within the run
        split=(0.8, 0.2, 0.0),
        split_seed=0, seed=0, workers=scale["workers"], val_every=10**9, val_max_materials=scale.get("val_max"),
        model=scale["dos_model"] if target == "dos" else scale["model"], tensorboard=False)


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


def run_target(scale: dict, store: str, target: str, work: Path, device: str, steps: int | None = None) -> dict:
    """Train one target; ``steps`` fixes the step count, else a calibration run sizes it to the time budget."""
    s_per_step, calib_s, max_steps = None, 0.0, steps
    if steps is None:
        t0 = time.perf_counter()
        max_steps, s_per_step = steps_for_budget(
            lambda n, out: _config(scale, store, target, out, device, n), scale["budget"][target],
            work / target, scale["max_steps"], min(CALIBRATION_STEPS, scale["max_steps"]))
        calib_s = time.perf_counter() - t0
    out = work / target
    shutil.rmtree(out, ignore_errors=True)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    final = train(_config(scale, store, target, out, device, max_steps), progress=False)
    wall = time.perf_counter() - t0
    rows = _rows(out)
    steady = rows[1:] or rows  # the first epoch carries start-up (workers, kernels)
    done = int(rows[-1]["step"])
    train_s = sum(float(r["epoch_s"]) for r in rows)
    probes_per_s = (sum(float(r["probes_per_s"]) * float(r["epoch_s"]) for r in steady)
                    / max(1e-9, sum(float(r["epoch_s"]) for r in steady)))
    result = {"target": target, "steps": done, "calibration_s_per_step": s_per_step, "calibration_wall_s": calib_s,
              "train_s": train_s, "wall_s": wall, "steps_per_s": done / max(train_s, 1e-9),
              "probes_per_s": probes_per_s if target != "dos" else None,
              "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
              "final_train_loss": float(rows[-1]["train_loss"]),
              **{k: v for k, v in final.items() if k.startswith("val_")}}
    n_val = len(json.loads((out / "splits.json").read_text())["val"])
    result["n_val_materials"] = min(n_val, scale.get("val_max") or n_val)
    return result


def _fmt(v, nd=4):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}g}"
    return str(v)


def write_report(results: list[dict], path: Path, args, scale_name: str, scale: dict, device_name: str,
                 total_s: float, default_model: Path | None) -> None:
    lines = [f"# Training benchmark ({scale_name} scale)", "",
             f"Date: {dt.date.today().isoformat()}. Device: {device_name}. Store: `{args.store}`.",
             f"Command: `python bench/train_gpu.py {' '.join(sys.argv[1:])}`", "",
             "Split (0.8, 0.2, 0.0) by material id (seed 0): the 20 % held-out materials are the validation set. "
             "Density NMAE: ChargE3Net's formula over each held-out material's full grid, total density "
             "(delta: ρ̂ = ρ_SAED + Δρ̂), mean over materials, in %; EMA weights. DOS: MSE on max-normalised "
             "400-point windows (σ 0.1 eV, E − E_F ∈ [−10, 10] eV). Probe points/s: supervised probes per second "
             "of training (data loading, probe–atom edges built on the device, forward, backward, optimiser).", "",
             f"Model: density {json.dumps(scale['model'])}; DOS {json.dumps(scale['dos_model'])}. "
             f"Probes/structure {scale['probes']}, structures/batch {scale['batch']}, "
             f"max probes/batch {scale['max_probes']}, peak lr {scale['lr']}, EMA min({scale['ema']}, 1 − 10/steps), "
             f"workers {scale['workers']}.", "",
             "| target | steps | train s | wall s (incl. validation) | probe points/s | steps/s | peak GPU GiB "
             "| val NMAE % | SAED baseline NMAE % | val DOS MSE | held-out materials |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['target']} | {r['steps']} | {_fmt(r['train_s'])} | {_fmt(r['wall_s'])} | "
                     f"{_fmt(r['probes_per_s'])} | {_fmt(r['steps_per_s'])} | {_fmt(r['peak_gpu_gib'], 3)} | "
                     f"{_fmt(r.get('val_nmae'))} | {_fmt(r.get('val_nmae_saed'))} | {_fmt(r.get('val_mse'))} | "
                     f"{r['n_val_materials']} |")
    lines += ["", f"Total wall time of the script: {total_s:.0f} s (calibration runs included)."]
    if default_model is not None:
        lines.append(f"Default density model (delta, EMA weights): `{default_model}`, "
                     f"{default_model.stat().st_size / 2**20:.2f} MiB.")
    lines += ["", "Targets to beat (ANCHORS.md): NMAE ≤ 0.5 % (SAED baseline ≈ 6.3 %, uniform 85 %); "
              "DOS MSE ≤ 0.005 (mean-window baseline ≈ 0.056).", ""]
    path.write_text("\n".join(lines))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", required=True, help="store built with ingest + build-delta + build-dos")
    ap.add_argument("--out", default=None, help="work/report folder (default $OUT, else bench/results/train-run)")
    ap.add_argument("--report", default=None, help="markdown report path (default OUT/train_gpu.md)")
    ap.add_argument("--targets", default="delta,total,dos")
    ap.add_argument("--smoke", action="store_true", help="seconds on CPU: tiny model, a dozen steps")
    ap.add_argument("--scale", choices=sorted(SCALES), default=None, help="gpu (default), cpu or smoke")
    ap.add_argument("--device", default=None, help="override the scale's device")
    ap.add_argument("--budget-scale", type=float, default=1.0, help="multiply every target's time budget")
    ap.add_argument("--steps", default="", help="fixed steps per target instead of a time budget, "
                    "e.g. delta=6000,total=3000,dos=2000 (targets not named keep the budget)")
    ap.add_argument("--install-default", action="store_true",
                    help="copy the delta EMA checkpoint to models/default/density.pt (the packaged default)")
    args = ap.parse_args(argv)
    try:
        args.steps = {k.strip(): int(v) for k, v in (kv.split("=") for kv in args.steps.split(",") if kv.strip())}
    except ValueError:
        ap.error(f"--steps: expected target=N pairs, got {args.steps!r}")
    scale_name = "smoke" if args.smoke else (args.scale or "gpu")
    scale = json.loads(json.dumps(SCALES[scale_name]))
    scale["budget"] = {k: v * args.budget_scale for k, v in scale["budget"].items()}
    device = args.device or scale["device"]
    if device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device; use --scale cpu or --smoke", file=sys.stderr)
        return 1
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    work = Path(args.out or os.environ.get("OUT") or REPO / "bench" / "results" / "train-run")
    work.mkdir(parents=True, exist_ok=True)
    device_name = torch.cuda.get_device_name() if device == "cuda" else f"CPU ({os.cpu_count()} cores)"
    t0 = time.perf_counter()
    results = []
    for target in [t.strip() for t in args.targets.split(",") if t.strip()]:
        print(f"[{time.perf_counter() - t0:6.0f} s] training {target} ({scale_name}, {device})", flush=True)
        r = run_target(scale, args.store, target, work, device, args.steps.get(target))
        print(json.dumps(r), flush=True)
        results.append(r)
    default_model = None
    if (work / "delta" / "model.pt").exists():
        default_model = work / "default_density.pt"
        shutil.copyfile(work / "delta" / "model.pt", default_model)
        size_mib = default_model.stat().st_size / 2**20
        if size_mib > 20:
            print(f"warning: default model is {size_mib:.1f} MiB (> 20 MiB)", file=sys.stderr)
        if args.install_default:
            dest = REPO / "models" / "default" / "density.pt"
            dest.parent.mkdir(exist_ok=True)
            shutil.copyfile(default_model, dest)
    total = time.perf_counter() - t0
    report = Path(args.report) if args.report else work / "train_gpu.md"
    write_report(results, report, args, scale_name, scale, device_name, total, default_model)
    (work / "train_gpu.json").write_text(json.dumps(results, indent=1))
    print(report.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
