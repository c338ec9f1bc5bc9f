"""Forward-pass benchmark of the equivariant models (encoder + density head, encoder + DOS head).

Usage::

    python bench/models_forward.py                      # CPU, 2 threads, 10^4 probes, 2-16 atoms
    python bench/models_forward.py --device cuda --grid 100   # + full 100^3 grid prediction per structure

Structures are synthetic and seeded (jittered simple-cubic arrangement, 12 Å^3 per atom, Si/O/Fe mix), so
the benchmark runs without the shared data. Probe points are uniform random in the cell.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
from chgdata.models import (
    ChargeDensityConfig,
    ChargeDensityModel,
    DosConfig,
    DosModel,
    EncoderConfig,
    count_parameters,
    density_in_chunks,
    grid_positions,
    grid_probe_edges,
    keys,
    probe_edges,
    structure_batch,
)


def synthetic_structure(n_atoms: int, rng: np.random.Generator, volume_per_atom: float = 12.0):
    """Cell (3, 3) Å, positions (n, 3) Å, atomic numbers: n_atoms on a jittered grid in a skewed cell."""
    n_side = int(np.ceil(n_atoms ** (1 / 3)))
    length = (volume_per_atom * n_atoms) ** (1 / 3)
    cell = length * (np.eye(3) + 0.1 * rng.normal(size=(3, 3)))
    sites = np.array(np.meshgrid(*[np.arange(n_side)] * 3, indexing="ij")).reshape(3, -1).T[:n_atoms] / n_side
    frac = (sites + 0.05 * rng.normal(size=sites.shape)) % 1.0
    numbers = rng.choice([8, 14, 26], size=n_atoms)
    return cell, frac @ cell, numbers


def timed(device, repeats: int, fn, /, *args, **kwargs) -> float:
    """Median wall time of ``fn(*args, **kwargs)`` in seconds (after one warm-up call)."""
    fn(*args, **kwargs)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn(*args, **kwargs)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def all_grid_edges(pos, cell, shape, r_cut, slab):
    """Probe edges of a whole grid, slab by slab (as density_in_chunks builds them)."""
    return [grid_probe_edges(pos, cell, shape, r_cut, (x, min(shape[0], x + slab))) for x in range(0, shape[0], slab)]


def self_check(model, device, rng):
    """Device grid path == CPU cKDTree path (edge sets), and chunked device prediction == CPU forward."""
    cell, pos, numbers = synthetic_structure(5, rng)
    shape = (12, 10, 11)
    r_cut = model.config.probe_r_cut
    ei, sh = grid_probe_edges(torch.tensor(pos, device=device), torch.tensor(cell, device=device), shape, r_cut)
    grid_set = {(a, b, *s) for a, b, s in zip(ei[0].tolist(), ei[1].tolist(), sh.tolist())}
    points = grid_positions(torch.tensor(cell), shape).numpy()
    ei_ref, sh_ref = probe_edges(points, pos, cell, r_cut)
    ref_set = {(int(a), int(b), *map(int, s)) for a, b, s in zip(ei_ref[0], ei_ref[1], sh_ref)}
    on_device = density_in_chunks(model, pos, numbers, cell, grid_shape=shape, chunk_size=300, device=device)
    cpu_model = ChargeDensityModel(model.config)
    cpu_model.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()})
    with torch.no_grad():
        batch = structure_batch(pos, numbers, cell, model.config.encoder.r_cut, probe_positions=points,
                                probe_r_cut=r_cut, dtype=torch.float32)
        reference = cpu_model(batch)
    err = float((on_device.reshape(-1, reference.shape[1]) - reference).abs().max())
    scale = float(reference.abs().max())
    print(f"# self-check: {len(grid_set):,} grid edges, same set as cKDTree: {grid_set == ref_set}; "
          f"max |device chunked - CPU| = {err:.2e} (max |ρ| {scale:.2e})")
    if grid_set != ref_set or err > 1e-4 * max(scale, 1.0):
        raise SystemExit("self-check failed")


def profile_chunk(model, pos, numbers, cell, shape, slab, device):
    """Print the most expensive operators of one grid chunk of the density head."""
    from torch.profiler import ProfilerActivity, profile

    batch = structure_batch(pos, numbers, cell, model.config.encoder.r_cut, dtype=torch.float32, device=device)
    cell_t = batch[keys.CELL][0]
    slab = min(slab, shape[0])
    ei, sh = grid_probe_edges(batch[keys.POSITIONS], cell_t, shape, model.config.probe_r_cut, (0, slab))
    batch[keys.PROBE_POSITIONS] = grid_positions(cell_t, shape, (0, slab))
    batch[keys.PROBE_BATCH] = torch.zeros(len(batch[keys.PROBE_POSITIONS]), dtype=torch.int64, device=device)
    batch[keys.PROBE_EDGE_INDEX], batch[keys.PROBE_EDGE_CELL_SHIFT] = ei, sh
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.no_grad():
        features = model.encoder(batch)
        model.head(features, batch)
        with profile(activities=activities) as prof:
            model.head(features, batch)
            if device.type == "cuda":
                torch.cuda.synchronize()
    key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    print(f"# profile of one chunk: {ei.shape[1]:,} edges")
    print(prof.key_averages().table(sort_by=key, row_limit=12))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-probes", type=int, default=10_000)
    parser.add_argument("--atoms", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--grid", type=int, default=0, help="also predict a full N^3 grid (0: skip)")
    parser.add_argument("--grid-atoms", type=int, nargs="+", default=[4, 20], help="structures for --grid")
    parser.add_argument("--self-check", action="store_true",
                        help="compare device grid edges and chunked grid prediction with the CPU reference")
    parser.add_argument("--chunk-size", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-edge-layers", type=int, default=2)
    parser.add_argument("--l-max", type=int, default=2)
    parser.add_argument("--profile", action="store_true", help="profile one grid chunk (torch.profiler)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    enc_cfg = EncoderConfig(l_max=args.l_max)
    dens = ChargeDensityModel(ChargeDensityConfig(encoder=enc_cfg, n_edge_layers=args.n_edge_layers))
    dens = dens.to(device).eval()
    dos = DosModel(DosConfig(encoder=enc_cfg)).to(device).eval()
    print(f"# torch {torch.__version__}, device {device}, threads {args.threads}, {platform.processor() or ''}")
    print(f"# encoder irreps {dens.encoder.irreps_out}, r_cut {enc_cfg.r_cut} Å, probe_r_cut "
          f"{dens.config.probe_r_cut} Å, float32")
    print(f"# parameters: density model {count_parameters(dens):,} (encoder {count_parameters(dens.encoder):,},"
          f" head {count_parameters(dens.head):,}); DOS model {count_parameters(dos):,}")
    if args.self_check:
        self_check(dens, device, rng)
    header = ("| atoms | probes | probe edges | edges build (s) | encoder+density (s) | probes/s | DOS (s) |"
              + (" peak mem (GiB) |" if device.type == "cuda" else ""))
    print(header)
    print("|" + "|".join(["---"] * (header.count("|") - 1)) + "|")
    for n_atoms in args.atoms:
        cell, pos, numbers = synthetic_structure(n_atoms, rng)
        probes = rng.random((args.n_probes, 3)) @ cell
        t0 = time.perf_counter()
        batch = structure_batch(pos, numbers, cell, enc_cfg.r_cut, probe_positions=probes,
                                probe_r_cut=dens.config.probe_r_cut, dtype=torch.float32, device=device)
        t_edges = time.perf_counter() - t0
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        with torch.no_grad():
            t_dens = timed(device, args.repeats, dens, batch)
            t_dos = timed(device, args.repeats, dos, batch)
        row = (f"| {n_atoms} | {args.n_probes} | {batch[keys.PROBE_EDGE_INDEX].shape[1]:,} | {t_edges:.3f} | "
               f"{t_dens:.3f} | {args.n_probes / t_dens:,.0f} | {t_dos:.4f} |")
        if device.type == "cuda":
            row += f" {torch.cuda.max_memory_allocated() / 2**30:.2f} |"
        print(row, flush=True)

    if args.grid:
        print("\n| atoms | grid | grid edges build (s) | full prediction (s) | s per 10^6 points |"
              + (" peak mem (GiB) |" if device.type == "cuda" else ""))
        print("|---|---|---|---|---|" + ("---|" if device.type == "cuda" else ""))
        shape = (args.grid,) * 3
        for n_atoms in args.grid_atoms:
            cell, pos, numbers = synthetic_structure(n_atoms, rng)
            pos_t = torch.tensor(pos, dtype=torch.float32, device=device)
            cell_t = torch.tensor(cell, dtype=torch.float32, device=device)
            slab = max(1, args.chunk_size // (args.grid**2))
            t_edges = timed(device, 1, all_grid_edges, pos_t, cell_t, shape, dens.config.probe_r_cut, slab)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            t_full = timed(device, 1, density_in_chunks, dens, pos, numbers, cell, grid_shape=shape,
                           chunk_size=args.chunk_size, device=device)
            per_million = t_full / (args.grid**3 / 1e6)
            if args.profile:
                profile_chunk(dens, pos, numbers, cell, shape, slab, device)
            row = f"| {n_atoms} | {args.grid}^3 | {t_edges:.3f} | {t_full:.3f} | {per_million:.3f} |"
            if device.type == "cuda":
                row += f" {torch.cuda.max_memory_allocated() / 2**30:.2f} |"
            print(row, flush=True)


if __name__ == "__main__":
    main()
