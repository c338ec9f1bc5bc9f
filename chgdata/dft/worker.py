"""``python -m chgdata.dft.worker OUT``: compute one structure read as JSON from stdin, print ``RESULT {json}``.

Each calculation runs in a process of its own (serial GPAW, one BLAS thread), so a worker that is killed, runs out
of memory or exceeds its time takes nothing else with it. Exit 0 with a RESULT line; exit 2 with a ``FAILED
reason`` line for a calculation that ran but failed (no convergence, no setup).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

#: Meta keys echoed in the RESULT line.
RESULT_KEYS = ("id", "formula", "reduced_formula", "natoms", "spin", "total_magmom_muB", "n_rho_error",
               "n_dos_error", "scf_iterations", "seconds")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m chgdata.dft.worker OUT < entry.json", file=sys.stderr)
        return 64
    from chgdata.dft.calculation import SCFNotConverged, compute
    from chgdata.dft.settings import DFTSettings

    entry = json.load(sys.stdin)
    settings = DFTSettings.from_meta({"settings": entry.get("settings") or {}})
    try:
        meta = compute(entry, Path(argv[0]), settings)
    except (SCFNotConverged, KeyError) as exc:
        print(f"FAILED {type(exc).__name__}: {exc}", flush=True)
        return 2
    print("RESULT " + json.dumps({k: meta[k] for k in RESULT_KEYS}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
