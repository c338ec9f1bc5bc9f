"""Full-grid inference time per 10⁶ grid points (encoder vs probe graph vs head), self-contained (no store).

    python bench/predict.py --device cuda --out $OUT/predict.md            # H100: 0.1 Å grids, both configs
    python bench/predict.py --device cpu --spacing 0.3 --out bench/results/predict.md   # reduced CPU run

Cells: Si primitive (2 atoms), Si diamond cube (8, the ANCHORS ChargE3Net structure), wurtzite GaN 5×1×1 (20),
Si primitive 5×5×1 (50), built with pymatgen make_supercell. Models: random weights of the default
ChargeDensityConfig and a small one, or --checkpoint. Also Si8 on a 30³ grid single-threaded (CPU) for the
side by side with ChargE3Net's ≈ 10⁴ s per 10⁶ points (one core, ANCHORS.md).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch
from chgdata.models.checkpoint import load
from chgdata.models.config import ChargeDensityConfig, EncoderConfig
from chgdata.models.density import ChargeDensityModel, GridTiming, predict_grid
from chgdata.models.predict import atomic_numbers
from pymatgen.core import Lattice, Structure

from chgdata.grid import grid_for_spacing

CHARGE3NET_CPU_S_PER_1E6 = 1.05e4  # 280-286 s for 27,000 points, one thread (ANCHORS.md)


def cells() -> dict[str, Structure]:
    si_prim = Structure(Lattice.from_parameters(3.84, 3.84, 3.84, 60, 60, 60), ["Si", "Si"],
                        [[0, 0, 0], [0.25, 0.25, 0.25]])
    si8 = Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.43), ["Si"], [[0, 0, 0]])
    gan = Structure.from_spacegroup("P6_3mc", Lattice.hexagonal(3.19, 5.19), ["Ga", "N"],
                                    [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.377]])
    gan20 = gan.copy()
    gan20.make_supercell([5, 1, 1])
    si50 = si_prim.copy()
    si50.make_supercell([5, 5, 1])
    return {"Si prim (2)": si_prim, "Si diamond (8)": si8, "GaN 5x1x1 (20)": gan20, "Si 5x5x1 (50)": si50}


def configs() -> dict[str, ChargeDensityConfig]:
    small = ChargeDensityConfig(encoder=EncoderConfig(n_scalars=16, n_vectors=4, l_max=1, n_layers=2),
                                n_edge_scalars=16, mlp_hidden=32)
    return {"default": ChargeDensityConfig(), "small": small}


#: head paths: (stacked, dtype of the one-pass head's per-edge products)
PATHS = {"one-pass": (True, None), "members": (False, None), "one-pass-bf16": (True, torch.bfloat16)}


def time_one(model, s: Structure, shape, device: str, repeats: int, chunk: int | None, path: str = "one-pass"):
    z = atomic_numbers(s)
    stacked, matmul_dtype = PATHS[path]
    run = dict(stacked=stacked, matmul_dtype=matmul_dtype)
    predict_grid(model, s.cart_coords, z, s.lattice.matrix, shape, chunk, device, **run)  # warm-up
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    best = None
    for _ in range(repeats):
        t = GridTiming()
        t0 = time.perf_counter()
        predict_grid(model, s.cart_coords, z, s.lattice.matrix, shape, chunk, device, timing=t, **run)
        wall = time.perf_counter() - t0
        if best is None or wall < best[0]:
            best = (wall, t)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")
    return best[0], best[1], peak


_PEAK_CHILD = """
import resource, sys, torch
sys.path.insert(0, {bench!r})
from predict import cells, load, atomic_numbers, predict_grid
model = load({ckpt!r}, "cpu")[0]
s = cells()[{cell!r}]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
predict_grid(model, s.cart_coords, atomic_numbers(s), s.lattice.matrix, {shape!r}, stacked={stacked!r})
print(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_host_gib(checkpoint: str, cell: str, shape, stacked: bool) -> tuple[float, float]:
    """(peak RSS GiB of a fresh process predicting one grid, what the prediction added to it), CPU."""
    import subprocess
    import sys

    code = _PEAK_CHILD.format(bench=str(Path(__file__).parent), ckpt=checkpoint, cell=cell, shape=tuple(shape),
                              stacked=stacked)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    before, after = (int(v) / 2**20 for v in out[-2:])  # kB -> GiB
    return after, after - before


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--spacing", type=float, default=None, help="grid spacing Å (default 0.1 cuda, 0.3 cpu)")
    ap.add_argument("--configs", default="default,small")
    ap.add_argument("--cells", default=None, help="comma-separated indices 0-3 of the cells (default all)")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--chunk-size", type=int, default=None)
    ap.add_argument("--paths", default="one-pass,members",
                    help="head paths: one-pass (stacked heads, chgdata.models.stacked_head), members (one by one), "
                         "one-pass-bf16 (per-edge products in bfloat16; accuracy: bench/precision.py)")
    ap.add_argument("--no-anchor", action="store_true", help="skip the single-thread Si8 30³ comparison")
    ap.add_argument("--memory", type=float, default=None, metavar="SPACING",
                    help="also the peak host memory of each path for Si 5x5x1 at this spacing (CPU, checkpoint)")
    ap.add_argument("--big", type=float, default=None, metavar="POINTS",
                    help="also one grid of at least POINTS points (GaN 20 atoms, one pass), with its peak memory")
    ap.add_argument("--out", default="bench/results/predict.md")
    a = ap.parse_args()
    cuda = a.device.startswith("cuda")
    spacing = a.spacing or (0.1 if cuda else 0.3)
    repeats = a.repeats or (3 if cuda else 1)
    models = {}
    if a.checkpoint:
        models["checkpoint"] = load(a.checkpoint, a.device)[0]
    else:
        for name in a.configs.split(","):
            torch.manual_seed(0)
            models[name] = ChargeDensityModel(configs()[name]).to(a.device).eval()
    all_cells = list(cells().items())
    chosen = [all_cells[int(i)] for i in a.cells.split(",")] if a.cells else all_cells
    dev = torch.cuda.get_device_name() if cuda else f"{platform.processor() or platform.machine()} CPU, " \
                                                       f"{torch.get_num_threads()} threads"
    lines = ["# Full-grid inference benchmark (`bench/predict.py`)", "",
             f"Command: `python bench/predict.py {' '.join(__import__('sys').argv[1:])}`  ",
             f"Machine: {dev}; torch {torch.__version__}; {time.strftime('%Y-%m-%d')}; random weights unless a "
             f"checkpoint is named; fp32; grid spacing {spacing} Å; best of {repeats}.", "",
             "| model | path | cell | atoms | grid | points | probe edges | encoder s | graph s | head s | total s "
             "| s per 10⁶ points | peak GPU GiB |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    paths = a.paths.split(",")
    for mname, model in models.items():
        for cname, s in chosen:
            shape = grid_for_spacing(s.lattice.matrix, spacing)
            npts = shape[0] * shape[1] * shape[2]
            for path in paths:
                wall, t, peak = time_one(model, s, shape, a.device, repeats, a.chunk_size, path)
                lines.append(f"| {mname} | {path} | {cname} | {len(s)} | {'×'.join(map(str, shape))} | {npts:,} | "
                             f"{t.probe_edges:,} | {t.encoder_s:.3f} | {t.graph_s:.3f} | {t.head_s:.3f} | "
                             f"{wall:.3f} | {wall / npts * 1e6:.3g} | {peak:.2f} |")
                print(lines[-1], flush=True)
    if not a.no_anchor and not cuda:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        si8 = cells()["Si diamond (8)"]
        lines += ["", "Side by side with ChargE3Net on one CPU thread, Si diamond 8 atoms, 30³ grid (27,000 points):",
                  "", "| model | path | s | s per 10⁶ points | speed-up vs ChargE3Net (≈1.05·10⁴ s per 10⁶) |",
                  "|---|---|---|---|---|", f"| ChargE3Net MP config (ANCHORS, measured 280–286 s) | | 283 | "
                  f"{CHARGE3NET_CPU_S_PER_1E6:.3g} | 1 |"]
        for mname, model in models.items():  # the paths in turn, A B A B, so that a drifting machine hits both
            walls = {path: [] for path in paths}
            for _ in range(max(repeats, 5)):
                for path in paths:
                    walls[path].append(time_one(model, si8, (30, 30, 30), "cpu", 1, a.chunk_size, path)[0])
            for path in paths:
                wall = statistics.median(walls[path])
                per = wall / 27_000 * 1e6
                lines.append(f"| ours, {mname} | {path} | {wall:.2f} (median of {len(walls[path])}; "
                             f"{min(walls[path]):.2f}–{max(walls[path]):.2f}) | {per:.3g} | "
                             f"{CHARGE3NET_CPU_S_PER_1E6 / per:.0f}× |")
                print(lines[-1], flush=True)
            if set(paths) == {"one-pass", "members"}:
                ratios = [m / o for o, m in zip(walls["one-pass"], walls["members"])]
                lines.append(f"\nOne pass against member by member, pair by pair: **{statistics.median(ratios):.2f}×** "
                             f"faster (median; {min(ratios):.2f}–{max(ratios):.2f}).")
                print(lines[-1], flush=True)
        torch.set_num_threads(threads)
    if a.big:
        cell = "GaN 5x1x1 (20)"
        s = cells()[cell]
        spacing_big = (s.volume / a.big) ** (1 / 3)
        shape = grid_for_spacing(s.lattice.matrix, spacing_big)
        while shape[0] * shape[1] * shape[2] < a.big:
            spacing_big *= 0.98
            shape = grid_for_spacing(s.lattice.matrix, spacing_big)
        for mname, model in models.items():
            wall, t, peak = time_one(model, s, shape, a.device, 1, a.chunk_size)
            npts = shape[0] * shape[1] * shape[2]
            lines += ["", f"One large grid, {mname}, one pass: {cell}, {'×'.join(map(str, shape))} = {npts:,} points "
                      f"({spacing_big:.3f} Å): {wall:.2f} s, {wall / npts * 1e6:.3g} s per 10⁶ points, "
                      f"peak GPU memory {peak:.2f} GiB (target: 10⁷ points within 16 GiB)."]
            print(lines[-1], flush=True)
    if a.memory and a.checkpoint and not cuda:
        cell = "Si 5x5x1 (50)"
        shape = grid_for_spacing(cells()[cell].lattice.matrix, a.memory)
        lines += ["", f"Peak host memory of one prediction in a fresh process, {cell}, {'×'.join(map(str, shape))} "
                  f"= {shape[0] * shape[1] * shape[2]:,} points ({a.memory} Å), default chunks:", "",
                  "| path | peak RSS GiB, median of 3 processes (min–max) | of which before predicting |",
                  "|---|---|---|"]
        for path in (p for p in paths if PATHS[p][1] is None):
            runs = sorted(peak_host_gib(a.checkpoint, cell, shape, PATHS[path][0]) for _ in range(3))
            peak, before = runs[1][0], runs[1][0] - runs[1][1]
            lines.append(f"| {path} | {peak:.2f} ({runs[0][0]:.2f}–{runs[2][0]:.2f}) | {before:.2f} |")
            print(lines[-1], flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
