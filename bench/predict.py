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
import time
from pathlib import Path

import torch
from chgdata.models.config import ChargeDensityConfig, EncoderConfig
from chgdata.models.density import ChargeDensityModel
from chgdata.models.predict import GridTiming, atomic_numbers, grid_for_spacing, load, predict_grid
from pymatgen.core import Lattice, Structure

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


def time_one(model, s: Structure, shape, device: str, repeats: int, chunk: int | None):
    z = atomic_numbers(s)
    predict_grid(model, s.cart_coords, z, s.lattice.matrix, shape, chunk, device)  # warm-up
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    best = None
    for _ in range(repeats):
        t = GridTiming()
        t0 = time.perf_counter()
        predict_grid(model, s.cart_coords, z, s.lattice.matrix, shape, chunk, device, timing=t)
        wall = time.perf_counter() - t0
        if best is None or wall < best[0]:
            best = (wall, t)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")
    return best[0], best[1], peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--spacing", type=float, default=None, help="grid spacing Å (default 0.1 cuda, 0.3 cpu)")
    ap.add_argument("--configs", default="default,small")
    ap.add_argument("--cells", default=None, help="comma-separated indices 0-3 of the cells (default all)")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--chunk-size", type=int, default=None)
    ap.add_argument("--no-anchor", action="store_true", help="skip the single-thread Si8 30³ comparison")
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
             "| model | cell | atoms | grid | points | probe edges | encoder s | graph s | head s | total s "
             "| s per 10⁶ points | peak GPU GiB |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for mname, model in models.items():
        for cname, s in chosen:
            shape = grid_for_spacing(s.lattice.matrix, spacing)
            npts = shape[0] * shape[1] * shape[2]
            wall, t, peak = time_one(model, s, shape, a.device, repeats, a.chunk_size)
            lines.append(f"| {mname} | {cname} | {len(s)} | {'×'.join(map(str, shape))} | {npts:,} | "
                         f"{t.probe_edges:,} | {t.encoder_s:.3f} | {t.graph_s:.3f} | {t.head_s:.3f} | {wall:.3f} | "
                         f"{wall / npts * 1e6:.3g} | {peak:.2f} |")
            print(lines[-1], flush=True)
    if not a.no_anchor and not cuda:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        si8 = cells()["Si diamond (8)"]
        lines += ["", "Side by side with ChargE3Net on one CPU thread, Si diamond 8 atoms, 30³ grid (27,000 points):",
                  "", "| model | s | s per 10⁶ points | speed-up vs ChargE3Net (≈1.05·10⁴ s per 10⁶) |",
                  "|---|---|---|---|", f"| ChargE3Net MP config (ANCHORS, measured 280–286 s) | 283 | "
                  f"{CHARGE3NET_CPU_S_PER_1E6:.3g} | 1 |"]
        for mname, model in models.items():
            wall, _, _ = time_one(model, si8, (30, 30, 30), "cpu", repeats, a.chunk_size)
            per = wall / 27_000 * 1e6
            lines.append(f"| ours, {mname} | {wall:.2f} | {per:.3g} | {CHARGE3NET_CPU_S_PER_1E6 / per:.0f}× |")
            print(lines[-1], flush=True)
        torch.set_num_threads(threads)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
