"""Ingest throughput: CHGCAR text MB/s through the whole ingest vs pymatgen parsing alone, same files, same run.

    python bench/ingest.py [--data ../shared/data] [--repeat 1]

"text MB" is the uncompressed CHGCAR/AECCAR text. Parse-only runs ``Chgcar.from_file`` on every volumetric
file (1 process, and 2 processes through a multiprocessing pool); ingest runs ``run_ingest`` into a fresh store
with 1 and 2 Dask workers, cluster start-up included.
"""

from __future__ import annotations

import argparse
import gzip
import multiprocessing as mp
import platform
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _parse(path: str) -> int:
    from pymatgen.io.vasp.outputs import Chgcar

    return Chgcar.from_file(path).data["total"].size


def text_mb(files) -> float:
    total = 0
    for f in files:
        with gzip.open(f, "rb") if str(f).endswith(".gz") else open(f, "rb") as fh:
            while block := fh.read(1 << 24):
                total += len(block)
    return total / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--out", default=None, help="also write the table to this markdown file")
    args = ap.parse_args()
    from chgdata.pipelines.ingest import run_ingest

    roots = [Path(args.data) / "gpaw", Path(args.data) / "vasp"]
    files = sorted(str(p) for r in roots for pat in ("*/CHGCAR*", "*/AECCAR0*", "*/AECCAR2*") for p in r.glob(pat))
    mb = text_mb(files)
    rows = []
    t = time.perf_counter()
    for f in files:
        _parse(f)
    rows.append(("pymatgen parse only", 1, time.perf_counter() - t))
    ctx = mp.get_context("spawn")
    with ctx.Pool(2) as pool:
        pool.map(_parse, files[:2])  # warm the workers' imports
        t = time.perf_counter()
        pool.map(_parse, files, chunksize=4)
        rows.append(("pymatgen parse only", 2, time.perf_counter() - t))
    from chgdata.pipelines.cluster import dask_client

    def warm(_):  # what a long-running worker has already done: import the readers
        from pymatgen.io.vasp import outputs  # noqa: F401

        import chgdata.dos  # noqa: F401
        import chgdata.sources.vasp_dir  # noqa: F401

    with tempfile.TemporaryDirectory() as tmp:
        # the same files as the parse-only baseline: each calculation folder with its volumetric files only
        same = Path(tmp) / "volumetric"
        for f in map(Path, files):
            dest = same / f.parent.parent.name / f.parent.name
            dest.mkdir(parents=True, exist_ok=True)
            (dest / f.name).symlink_to(f)
        for label, tree in (("chgdata ingest, same files", same), ("chgdata ingest, whole folders (+ DOS files)",
                                                                    Path(args.data))):
            for workers in (1, 2):
                t0 = time.perf_counter()
                with dask_client(workers) as client:
                    client.run(warm, None)
                    t = time.perf_counter()
                    for root in ("gpaw", "vasp"):
                        store = f"{tmp}/{label[-5:]}-{workers}-{root}"
                        rep = run_ingest(store, from_dir=str(tree / root), client=client, progress=False)
                        assert not rep.failed, rep.failed
                    rows.append((f"{label} (running cluster)", workers, time.perf_counter() - t))
                rows.append((f"{label}, cluster start-up included", workers, time.perf_counter() - t0))
    base = {w: s for name, w, s in rows if name.startswith("pymatgen")}
    lines = [f"{len(files)} volumetric files (CHGCAR, AECCAR0/2), {mb:.1f} MB of text; "
             f"{platform.processor() or platform.machine()}, {mp.cpu_count()} cores", "",
             "| what | workers | seconds | MB/s of CHGCAR text | ratio to parse-only (same workers) |",
             "|---|---|---|---|---|"]
    lines += [f"| {name} | {w} | {s:.2f} | {mb / s:.1f} | {base[w] / s:.2f} |" for name, w, s in rows]
    print("\n".join(lines))
    if args.out:
        Path(args.out).write_text("# Ingest throughput (`bench/ingest.py`)\n\n"
                                  f"Command: `python bench/ingest.py --out {args.out}`; {time.strftime('%Y-%m-%d')}."
                                  "\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
