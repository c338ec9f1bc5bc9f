"""Benchmark ``chgdata build-dos``: windows/s through the whole pipeline (lock, planning, Dask tasks reading the raw
DOS from Parquet, smearing, Zarr + Parquet commit, card) with 1 and 2 workers, vs pure ``smear_window`` in one
process, on the shared data set (gpaw + vasp stores).

Usage (from the repository root):
    python bench/build_dos.py [--data ../shared/data] [--repeat 3] [--out bench/results/build_dos.md]

Each pipeline run starts from a fresh copy of the ingested stores (so nothing is skipped). Prints a table and
writes it, with the command, machine and versions, to the markdown file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow
import zarr
from chgdata.pipelines.cluster import dask_client
from chgdata.pipelines.dos import raw_from_row, run_build_dos
from chgdata.pipelines.ingest import run_ingest

from chgdata import contract as C
from chgdata.dos import smear_window
from chgdata.store import Location, read_table

REPO_ROOT = Path(__file__).resolve().parents[1]


def pure_rate(stores: list[str], repeat: int) -> tuple[int, float]:
    raws = [raw_from_row(r) for s in stores for r in read_table(Location.parse(s), C.DOS_RAW).to_pylist()]
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        for raw in raws:
            smear_window(raw)
        best = min(best, time.perf_counter() - t0)
    return len(raws), len(raws) / best


def pipeline_run(stores: list[str], tmp: Path, workers: int, tag: str) -> tuple[int, float]:
    n, wall = 0, 0.0
    for s in stores:
        dst = tmp / f"{Path(s).name}-{tag}"
        shutil.copytree(s, dst)
        t0 = time.perf_counter()
        rep = run_build_dos(str(dst), workers=workers, progress=False)
        wall += time.perf_counter() - t0
        assert not rep.failed, rep.failed
        n += len(rep.committed)
        shutil.rmtree(dst)
    return n, wall


def cluster_start(workers: int) -> float:
    t0 = time.perf_counter()
    with dask_client(workers) as client:
        client.submit(int, 1).result()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    ap.add_argument("--repeat", type=int, default=3, help="pipeline runs per worker count (best kept)")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "build_dos.md")
    ap.add_argument("--machine", default="2-core CPU VM")
    args = ap.parse_args()
    if not (args.data / "gpaw").is_dir():
        sys.exit(f"no shared data under {args.data}")

    with tempfile.TemporaryDirectory(prefix="bench-build-dos-") as tmpdir:
        tmp = Path(tmpdir)
        stores = []
        for name in ("gpaw", "vasp"):
            s = str(tmp / name)
            run_ingest(s, from_dir=str(args.data / name), workers=2, progress=False)
            stores.append(s)
        n_pure, rate_pure = pure_rate(stores, args.repeat)
        results = []
        for workers in (1, 2):
            start = min(cluster_start(workers) for _ in range(2))
            runs = [pipeline_run(stores, tmp, workers, f"w{workers}r{i}") for i in range(args.repeat)]
            n, wall = min(runs, key=lambda x: x[1])
            # one cluster per store: subtract the cluster start-up per store for the "excluding" column
            results.append((workers, n, wall, n / wall, n / max(1e-9, wall - len(stores) * start), start))

    lines = ["| path | workers | windows | wall s | windows/s | windows/s excl. cluster start | cluster start s |",
             "|---|---|---|---|---|---|---|",
             f"| pure `smear_window`, one process | 1 | {n_pure} | {n_pure / rate_pure:.2f} | {rate_pure:.0f} "
             "| - | - |"]
    for workers, n, wall, rate, rate_ex, start in results:
        lines.append(f"| `run_build_dos` (whole pipeline) | {workers} | {n} | {wall:.2f} | {rate:.1f} "
                     f"| {rate_ex:.0f} | {start:.2f} |")
    table = "\n".join(lines)
    print(table)
    cmd = "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    text = f"""# build-dos benchmark

Windows built per second through the whole `chgdata build-dos` pipeline (`chgdata.pipelines.dos.run_build_dos`:
store lock, resume check, planning, one Dask task per partition reading its raw DOS rows from `dos_raw.parquet`,
`smear_window`, two Zarr `(n, 2, 400)` arrays + energy axis, failures and `dos.parquet` fragments, card update)
on fresh copies of the ingested shared stores (gpaw + vasp: {n_pure} raw DOS), vs pure `smear_window` calls on the
same raw DOS in one process. Window E − E_F ∈ [−10, 10] eV, 400 points, σ = 0.1 eV. Best of {args.repeat} runs.
A run starts one local Dask cluster per store (two stores), so "excl. cluster start" subtracts twice the measured
start-up time (start a `LocalCluster`, run one trivial task, close it).

- command: `{cmd}` (from the repository root, virtualenv active)
- machine: {args.machine} ({platform.machine()}, {os.cpu_count()} logical CPUs)
- date: {dt.date.today().isoformat()}; Python {platform.python_version()}, numpy {np.__version__},
  zarr {zarr.__version__}, pyarrow {pyarrow.__version__}

{table}
"""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
