"""What the compute stage's orchestration costs: CPU time per crystal through ``chgdata compute`` (local Dask
cluster, one subprocess per structure) against the same worker run directly and against a bare GPAW SCF.

Per repeat (A B C, in turn), four small shared crystals (Si, NaCl, Al, MgO; one core each, serially):
A ``python -m chgdata.dft.worker`` per crystal (SCF + DOS + files, what a compute task runs);
B ``chgdata compute POSCAR... --workers 1`` (the same plus Dask: scheduler, worker, nanny, subprocesses);
C a bare ``atoms.get_potential_energy()`` with the same GPAW parameters (no DOS, no files).
CPU time is user + sys of the whole process tree (``RUSAGE_CHILDREN``), so other load on the machine adds wait,
not CPU. ``python bench/compute_overhead.py --repeats 2``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "gpaw"
CRYSTALS = ["gpaw-0001", "gpaw-0061", "gpaw-0022", "gpaw-0075"]
BARE = """
import json, sys
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor
from gpaw import GPAW
from chgdata.dft.settings import gpaw_parameters
for path in sys.argv[1:]:
    atoms = AseAtomsAdaptor.get_atoms(Structure.from_file(path))
    atoms.calc = GPAW(**gpaw_parameters(atoms), txt=None)
    atoms.get_potential_energy()
"""


def cpu_of(cmd: list[str], stdin: str | None = None) -> tuple[float, float]:
    """(CPU seconds of the process tree, wall seconds) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, input=stdin, text=True, check=True, capture_output=True,
                   env=dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1"))
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--copies", type=int, default=1, help="each crystal this many times (amortises the cluster)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/compute_overhead.md"))
    args = ap.parse_args()
    from pymatgen.core import Structure

    from chgdata.candidates import from_files

    work = Path(tempfile.mkdtemp(prefix="chgdata-bench-"))
    posc = []
    for fid in CRYSTALS:
        meta = json.loads((SHARED / fid / "meta.json").read_text())
        for k in range(args.copies):
            p = work / f"{fid}-{k}.vasp"
            Structure.from_dict(meta["structure"]).to(filename=str(p), fmt="poscar")
            posc.append(p)
    entries = [c.as_entry() for c in from_files(posc)]
    rows = {"A worker alone": [], "B chgdata compute": [], "C bare GPAW SCF": []}
    for r in range(args.repeats):
        out = work / f"a{r}"
        out.mkdir()
        cpu = wall = 0.0
        for e in entries:
            c, w = cpu_of([sys.executable, "-m", "chgdata.dft.worker", str(out)], json.dumps(e))
            cpu, wall = cpu + c, wall + w
        rows["A worker alone"].append((cpu, wall))
        rows["B chgdata compute"].append(cpu_of([sys.executable, "-m", "chgdata", "compute", *map(str, posc),
                                                 "--out", str(work / f"b{r}"), "--workers", "1", "--quiet"]))
        rows["C bare GPAW SCF"].append(cpu_of([sys.executable, "-c", BARE, *map(str, posc)]))
    shutil.rmtree(work, ignore_errors=True)
    n = len(posc)
    base = min(c for c, _ in rows["A worker alone"]) / n
    lines = [f"CPU seconds per crystal ({n} cells: {', '.join(CRYSTALS)} × {args.copies}; best of {args.repeats}, "
             f"one core each; {os.uname().nodename}, {os.cpu_count()} cores)", "",
             "| path | CPU s / crystal | wall s / crystal | CPU vs worker alone |", "|---|---|---|---|"]
    for name, vals in rows.items():
        c, w = min(vals)
        lines.append(f"| {name} | {c / n:.2f} | {w / n:.2f} | {c / n / base:.3f}× |")
    print("\n".join(lines))
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
