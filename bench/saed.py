"""Benchmark of chgdata.saed on one core: reciprocal-space grid SAED vs the naive real-space per-point sum.

    python bench/saed.py [--write bench/results/saed.md]

Cases: (1) the target, a ~10^7-point grid with 50 atoms (timed best of 3, peak traced memory in a separate
call); (2) fast vs naive on a real small structure (gpaw CuPd, 4 atoms) on a grid fine enough to resolve every
reference width, with the accuracy of the fast method against the naive one; (3) the held-out check of the
fitted references on the gpaw set (seeded 80/20 split, full grids). References are fitted on the gpaw set when
/work/shared/data is present (else a synthetic table is used and case 3 is skipped).
"""

from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from chgdata.references import (  # noqa: E402
    DEFAULT_SIGMAS,
    ReferenceTable,
    material_normal_equations,
    solve_reference,
    sum_normal_equations,
)
from chgdata.saed import saed_at_points, saed_density  # noqa: E402
from chgdata.valences import MaterialCounts, valence_counts  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
GPAW = REPO.parent / "shared" / "data" / "gpaw"


def load_gpaw() -> list[dict]:
    from pymatgen.io.vasp import Chgcar

    out = []
    for d in sorted(GPAW.glob("gpaw-*")):
        c = Chgcar.from_file(str(d / "CHGCAR.gz"))
        s = c.structure
        out.append({"id": d.name, "lattice": s.lattice.matrix, "frac": s.frac_coords,
                    "species": [x.specie.symbol for x in s], "rho": c.data["total"] / s.volume,
                    "volume": s.volume, "n_electrons": float(c.data["total"].mean())})
    return out


def fit(mats: list[dict], val: dict, seed: int) -> ReferenceTable:
    parts = [material_normal_equations(m["lattice"], m["frac"], m["species"], m["rho"],
                                       np.random.default_rng([seed, i]), n_points=4096, material_id=m["id"])
             for i, m in enumerate(mats)]
    return solve_reference(sum_normal_equations(parts), val, dataset_version="bench-gpaw")


def timed(fn, repeat: int = 3) -> tuple[float, object]:
    best, out = np.inf, None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def peak_traced(fn) -> float:
    tracemalloc.start()
    tracemalloc.reset_peak()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--write", type=Path, default=None, help="write a markdown report here")
    args = ap.parse_args()
    rows, notes = [], []

    mats = load_gpaw() if GPAW.is_dir() else []
    if mats:
        val = valence_counts([MaterialCounts(m["id"], {e: m["species"].count(e) for e in set(m["species"])},
                                             m["n_electrons"]) for m in mats])
        t0 = time.perf_counter()
        table = fit(mats, val, seed=1)
        t_fit = time.perf_counter() - t0
        notes.append(f"Reference table fitted on all {len(mats)} gpaw materials (4096 points each, 10 widths) in "
                     f"{t_fit:.1f} s: {table.id}, relative rms residual "
                     f"{table.provenance['relative_rms_residual']:.4f}.")
    else:
        k = len(DEFAULT_SIGMAS)
        table = ReferenceTable.from_coefficients({e: np.full(k, 4.0 / k) for e in ("Si", "O", "Fe", "Li")},
                                                 DEFAULT_SIGMAS, {e: 4 for e in ("Si", "O", "Fe", "Li")})
        notes.append("No shared data: synthetic reference table.")

    # (1) target case: ~1e7 points, 50 atoms, triclinic cell
    rng = np.random.default_rng(2026)
    lat = np.array([[11.2, 0.0, 0.0], [1.6, 10.8, 0.0], [0.9, -1.1, 12.1]])
    frac = rng.random((50, 3))
    elements = [e for e in ("O", "Si", "Fe", "Li", "Cu") if e in table.elements]
    species = [elements[i % len(elements)] for i in range(50)]
    shape = (210, 216, 224)  # 10,160,640 points
    n_e = sum(table.valence[s] for s in species)
    sec, grid = timed(lambda: saed_density(lat, frac, species, shape, table))
    peak = peak_traced(lambda: saed_density(lat, frac, species, shape, table))
    err_n = abs(float(grid.astype(np.float64).mean()) * abs(np.linalg.det(lat)) - n_e)
    rows.append(("fast (reciprocal, FFT)", "x".join(map(str, shape)), 50, sec, peak / 2**20, peak / grid.nbytes))
    notes.append(f"Target case: |∫ρ_SAED − N_e| = {err_n:.2e} e of N_e = {n_e}.")
    del grid

    # (2) fast vs naive on a real small structure
    if mats:
        m = next(x for x in mats if x["id"] == "gpaw-0205")  # Cu2Pd2, 53 Å^3
        lat2, frac2, sp2 = m["lattice"], m["frac"], m["species"]
    else:
        lat2, frac2, sp2 = lat / 3, frac[:4], species[:4]
    small = (64, 32, 32)
    sec_f, fast = timed(lambda: saed_density(lat2, frac2, sp2, small, table))
    peak_f = peak_traced(lambda: saed_density(lat2, frac2, sp2, small, table))
    pts = (np.stack(np.meshgrid(*[np.arange(n) / n for n in small], indexing="ij"), -1).reshape(-1, 3)) @ lat2
    t = time.perf_counter()
    naive = saed_at_points(lat2, frac2, sp2, pts, table).reshape(small)
    sec_n = time.perf_counter() - t
    peak_n = peak_traced(lambda: saed_at_points(lat2, frac2, sp2, pts[:4096], table))
    rows.append(("fast (reciprocal, FFT)", "x".join(map(str, small)), len(sp2), sec_f, peak_f / 2**20,
                 peak_f / fast.nbytes))
    rows.append(("naive real-space per point", "x".join(map(str, small)), len(sp2), sec_n, peak_n / 2**20,
                 peak_n / fast.nbytes))
    max_err = float(np.abs(fast - naive).max())
    nmae = 100 * float(np.abs(fast - naive).sum() / np.abs(naive).sum())
    notes.append(f"Fast vs naive on {small} (gpaw-0205 CuPd, 4 atoms): max |diff| = {max_err:.2e} e/Å^3 "
                 f"(max ρ_SAED {np.abs(naive).max():.2f}), NMAE {nmae:.2e} %; speed-up {sec_n / sec_f:.0f}×. "
                 "The naive peak memory is for a 4096-point chunk call.")

    # (3) held-out check
    held = None
    if mats:
        perm = np.random.default_rng(2026).permutation(len(mats))
        n_train = int(round(0.8 * len(mats)))
        train, test = [mats[i] for i in perm[:n_train]], [mats[i] for i in perm[n_train:]]
        tab = fit(train, val, seed=11)
        ratios, num, den = [], 0.0, 0.0
        for x in test:
            s = saed_density(x["lattice"], x["frac"], x["species"], x["rho"].shape, tab)
            a, b = float(np.abs(x["rho"] - s).sum()), float(np.abs(x["rho"]).sum())
            ratios.append(a / b)
            num, den = num + a, den + b
        r = np.array(ratios)
        held = {"n_train": len(train), "n_test": len(test), "fraction_improved": float(np.mean(r < 1)),
                "mean_ratio": float(r.mean()), "nmae_pooled_pct": 100 * num / den,
                "nmae_mean_pct": 100 * float(r.mean()), "worst_pct": 100 * float(r.max())}

    head = "| method | grid | atoms | seconds | peak MiB | peak / float32 grid |\n|---|---|---|---|---|---|"
    table_md = "\n".join([head] + [f"| {a} | {b} | {c} | {d:.3f} | {e:.1f} | {f:.2f} |" for a, b, c, d, e, f in rows])
    print(table_md)
    for n in notes:
        print(n)
    if held:
        print(json.dumps(held, indent=1))
    if args.write:
        cpu = platform.processor() or platform.machine()
        text = [
            "# SAED benchmark (bench/saed.py)", "",
            f"Command: `OPENBLAS_NUM_THREADS=1 python bench/saed.py --write {args.write}` (the script also pins "
            "numpy/BLAS and scipy.fft to one thread).",
            f"Machine: 2-core CPU VM ({cpu}, Python {platform.python_version()}, numpy {np.__version__}); one core "
            f"used. Date: {time.strftime('%Y-%m-%d')}.", "",
            "Seconds: best of 3. Peak: tracemalloc peak of traced (numpy) allocations during one call.", "",
            table_md, "", *[f"- {n}" for n in notes], "",
            "Method choice: reciprocal space. Per width σ_k the structure factor Σ_i c_ik e^{-2πi m·x_i} is a "
            "BLAS complex matrix product of separable phase factors over the |G| < 6.4/σ_k box, multiplied by "
            "exp(−σ_k²G²/2), then one slab-wise inverse real FFT (complex64/float32). A real-space cutoff sum "
            "needs every grid point within ~6.4 σ_max ≈ 16 Å of every atom (the naive row above: ~50 s for "
            "65k points); the spectral route is exact at G = 0 (electron count) and memory-bounded (half spectrum "
            "+ output + slabs ≈ 2.1× the float32 grid; target ≤ 3×, ≤ 2 s).", "",
        ]
        if held:
            text += [
                "## Held-out check (gpaw set, seeded 80/20 split, full grids)", "",
                f"Fit on {held['n_train']} materials, measured on {held['n_test']}:", "",
                "| metric | value |", "|---|---|",
                f"| fraction of held-out materials with Σ\\|Δρ\\| < Σ\\|ρ\\| | {held['fraction_improved']:.3f} |",
                f"| mean Σ\\|Δρ\\|/Σ\\|ρ\\| | {held['mean_ratio']:.4f} |",
                f"| NMAE of SAED alone, pooled 100·Σ\\|ρ−ρ_SAED\\|/Σ\\|ρ\\| | {held['nmae_pooled_pct']:.2f} % |",
                f"| NMAE, mean over materials | {held['nmae_mean_pct']:.2f} % |",
                f"| worst held-out material | {held['worst_pct']:.2f} % |", "",
                "ANCHORS baseline (superposition of fitted per-element Gaussian references): 6.3 % NMAE.", "",
            ]
        args.write.write_text("\n".join(text))


if __name__ == "__main__":
    main()
