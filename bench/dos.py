"""Benchmark DOS windows: file parse time vs smear+window time over every DOS file of the shared data set.

Usage (from the repository root):
    python bench/dos.py [--data ../shared/data] [--repeat 5] [--sigma 0.1] [--out bench/results/dos.md]

Prints a table and writes it, with the command, machine and versions, to the markdown file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from chgdata.dos import smear_window
from chgdata.dos_io import read_dos

REPO_ROOT = Path(__file__).resolve().parents[1]


def dos_files(data: Path) -> dict[str, list[Path]]:
    return {
        "gpaw dos.json.gz": sorted((data / "gpaw").glob("gpaw-*/dos.json.gz")),
        "vasp vasprun.xml.gz": sorted((data / "vasp").glob("*/vasprun.xml.gz")),
        "vasp complete_dos.json.gz": sorted((data / "vasp").glob("*/complete_dos*.json.gz")),
    }


def bench_group(files: list[Path], repeat: int, sigma: float) -> dict[str, float]:
    parse_s = smear_s = 0.0
    worst = 0.0
    for f in files:
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = read_dos(f)
        parse_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(repeat):
            win = smear_window(raw, sigma=sigma)
        smear_s += (time.perf_counter() - t0) / repeat
        worst = max(worst, abs(win.conservation_error))
    n = len(files)
    return {
        "files": n,
        "parse_ms": 1e3 * parse_s / n,
        "smear_ms": 1e3 * smear_s / n,
        "smear_per_s": n / smear_s,
        "total_per_s": n / (parse_s + smear_s),
        "worst_err": worst,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    ap.add_argument("--repeat", type=int, default=5, help="smear_window calls per file (timing averaged)")
    ap.add_argument("--sigma", type=float, default=0.1, help="Gaussian sigma, eV")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "dos.md")
    ap.add_argument("--machine", default="2-core CPU VM")
    args = ap.parse_args()

    groups = {k: v for k, v in dos_files(args.data).items() if v}
    if not groups:
        sys.exit(f"no DOS files under {args.data}")
    rows = {k: bench_group(v, args.repeat, args.sigma) for k, v in groups.items()}
    allf = [f for v in groups.values() for f in v]
    rows["all"] = bench_group(allf, args.repeat, args.sigma)

    header = (
        "| files | n | parse ms/file | smear+window ms/window | windows/s (smear only) "
        "| windows/s (parse + smear) | max abs. states error |"
    )
    lines = [header, "|---|---|---|---|---|---|---|"]
    for k, r in rows.items():
        lines.append(
            f"| {k} | {r['files']} | {r['parse_ms']:.1f} | {r['smear_ms']:.2f} | {r['smear_per_s']:.0f} "
            f"| {r['total_per_s']:.1f} | {100 * r['worst_err']:.2f} % |"
        )
    table = "\n".join(lines)
    print(table)

    cmd = "python " + " ".join([os.path.relpath(__file__, REPO_ROOT), *sys.argv[1:]])
    import scipy

    arch = platform.processor() or platform.machine()
    versions = f"Python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}"

    text = f"""# DOS windows benchmark

Window E − E_F ∈ [−10, 10] eV, 400 points, Gaussian σ = {args.sigma} eV, both spin channels, per atom
(`chgdata.dos.smear_window`). "parse" is `chgdata.dos_io.read_dos` (pymatgen reading, validation);
"smear+window" is one `smear_window` call (fine-grid convolution of the exact cumulative count, cell
averages, band gap), averaged over {args.repeat} calls per file. "max abs. states error" is the largest
relative change of the states in the window cells caused by smearing (limit 1 %).

- command: `{cmd}` (from the repository root, virtualenv active)
- machine: {args.machine} ({arch}, {os.cpu_count()} logical CPUs), single process
- date: {dt.date.today().isoformat()}; {versions}
- data: `{os.path.relpath(args.data, REPO_ROOT)}` ({len(allf)} DOS files)

{table}
"""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
