#!/usr/bin/env python3
"""Fit a SAED reference table to the isolated-atom densities of ``tools/gpaw_free_atoms.py``.

    python tools/fit_free_atom_reference.py --atoms data/free-atoms --out chgdata/atoms/gpaw-pbe-free-atoms.json

The table (format ``chgdata.saed-reference/1``) is what ``chgdata build-delta --reference FILE`` takes. With
``--check-store S`` the atoms' valence counts must equal those of the store's own reference (same setups).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from chgdata.free_atoms import isolated_atom_reference
from chgdata.references import ReferenceTable


def read_atoms(folder: Path):
    for path in sorted(folder.glob("*.npz")):
        with np.load(path) as z:
            meta = json.loads(path.with_suffix(".json").read_text())
            yield meta["element"], z["lattice"], z["rho"], float(z["rho"].astype(np.float64).mean()
                                                                  * abs(np.linalg.det(z["lattice"])))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--atoms", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--check-store", type=Path)
    args = ap.parse_args()
    metas = [json.loads(p.read_text()) for p in sorted(args.atoms.glob("*.json"))]
    settings = metas[0]["settings"]
    table = isolated_atom_reference(read_atoms(args.atoms), provenance={
        "dataset_version": "gpaw-free-atoms-" + metas[0]["versions"]["gpaw"],
        "code": {**settings, "box_A": metas[0]["box_A"], "gpaw": metas[0]["versions"]["gpaw"]},
        "generated_by": "tools/gpaw_free_atoms.py + tools/fit_free_atom_reference.py",
    })
    if args.check_store:
        own = ReferenceTable.load(args.check_store / "saed_reference.json")
        bad = {e: (table.valence[e], own.valence[e]) for e in own.elements
               if e in table.valence and table.valence[e] != own.valence[e]}
        missing = sorted(set(own.elements) - set(table.elements))
        if bad or missing:
            raise SystemExit(f"valence counts differ from the store's {bad} or elements missing {missing}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.save(args.out)
    print(f"{table.id}: {len(table.elements)} elements, residual {table.provenance['relative_rms_residual']:.2e}"
          f" -> {args.out}")


if __name__ == "__main__":
    main()
