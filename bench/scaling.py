"""Per-material cost of each stage vs grid size: CHGCAR parse, ρ conversion, SAED, DOS window, Zarr write.

Synthetic larger grids are real shared CHGCARs tiled into supercells (grid and atom count scale together).
Usage: python bench/scaling.py --reference STORE/saed_reference.json [--tiles 2,2,2 4,4,4 8,8,7] [--out FILE.json]
(the reference table is the one ``chgdata build-delta`` fitted on the gpaw store).
"""

# ruff: noqa: B023  (the timed lambdas run inside their loop iteration)
from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import tempfile
import time
from pathlib import Path

GPAW = Path(__file__).resolve().parents[2] / "shared" / "data" / "gpaw"


def timed(fn, repeat=1):
    best = float("inf")
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reference", required=True)
    ap.add_argument("--material", default="gpaw-0001")
    ap.add_argument("--tiles", nargs="+", default=["2,2,2", "4,4,4", "8,8,7"])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    from pymatgen.io.vasp.outputs import Chgcar

    from chgdata.dos import smear_window
    from chgdata.dos_io import read_dos
    from chgdata.grid import density_from_vasp
    from chgdata.references import ReferenceTable
    from chgdata.saed import saed_density
    from chgdata.store import PartitionArrayWriter
    from tests.test_memory_limit import write_tiled_chgcar

    table = ReferenceTable.load(args.reference)
    src = GPAW / args.material / "CHGCAR.gz"
    dos = read_dos(str(GPAW / args.material / "dos.json.gz"), natoms=None)
    t_dos, _ = timed(lambda: smear_window(dos, sigma=0.1, emin=-10, emax=10, npoints=400), repeat=5)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.tiles:
            tile = tuple(int(x) for x in spec.split(","))
            path = Path(tmp) / "CHGCAR"
            npts = write_tiled_chgcar(src, path, tile)
            rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            t_parse, chg = timed(lambda: Chgcar.from_file(str(path)))
            rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            s = chg.structure
            t_conv, rho = timed(lambda: density_from_vasp(chg.data["total"], s.volume, "bench"))
            t_saed, _ = timed(lambda: saed_density(s.lattice.matrix, s.frac_coords,
                                                      [x.specie.symbol for x in s], rho.shape, table))
            import zarr

            zdir = Path(tmp) / "z"

            def write():
                w = PartitionArrayWriter(zarr.storage.LocalStore(str(zdir)), "rho/p")
                w.append(rho)
                w.close()
            t_write, _ = timed(write)
            stored = sum(f.stat().st_size for f in zdir.rglob("*") if f.is_file())
            rows.append({"tile": tile, "points": npts, "atoms": len(s), "file_MB": path.stat().st_size / 1e6,
                         "parse_s": t_parse, "convert_s": t_conv, "saed_s": t_saed, "zarr_write_s": t_write,
                         "zarr_bytes": stored, "zstd_ratio": rho.nbytes / stored,
                         "parse_peak_rss_growth_MB": (rss1 - rss0) / 1024, "dos_window_s": t_dos})
            print(json.dumps(rows[-1]))
            chg = rho = None  # free before the next size
            os.remove(path)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    _ = gzip  # gz inputs are read by pymatgen
    main()
