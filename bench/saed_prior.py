"""SAED references between a crystal fit and free atoms: the train-split fit shrunk towards the shipped
GPAW free-atom table (``solve_reference(prior=..., prior_weight=w)``), scored on val (never test).

    python bench/saed_prior.py --store data/gpaw-all --weights 0 1e-5 1e-4 1e-3 1e-2 1e-1 1
    python bench/saed_prior.py --store data/gpaw-all --weights 1e-4 --save runs/prior-1e-4.json

Prints, per weight, the mean SAED NMAE (%) on every fourth train material and on val, and per val group; the
store's own reference and the free atoms alone for comparison. ``--save`` writes the table of the (single)
weight, for ``chgdata build-delta --reference FILE`` into a fresh store.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np
from chgdata.pipelines.delta import fit_blocks, fit_partition

from chgdata import contract as C
from chgdata.dataset import Dataset
from chgdata.free_atoms import SHIPPED_REFERENCES
from chgdata.metrics import nmae
from chgdata.references import ReferenceTable, solve_reference, sum_normal_equations
from chgdata.saed import saed_for_structure
from chgdata.store import read_reference


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--weights", type=float, nargs="+", required=True)
    ap.add_argument("--save")
    args = ap.parse_args()
    ds = Dataset(args.store)
    splits, groups = ds.splits(), ds.groups()
    own = read_reference(ds.loc)
    atoms = ReferenceTable.load(SHIPPED_REFERENCES["gpaw-free-atoms"])
    # the train split's normal equations exactly as build-delta sums them (weight 0 gives the store's own table)
    rows = sorted((ds.row(m) for m in splits["train"]), key=lambda r: r[C.COL_ID])
    normal = sum_normal_equations(p for p in (fit_partition(args.store, block, 0, 4096) for block in fit_blocks(rows))
                                  if p is not None)

    def load(mid):
        return mid, ds.structure(mid), ds.density(mid)

    train = [load(m) for m in splits["train"][::4]]
    val = [load(m) for m in splits["val"]]

    def score(table, rows):
        by = defaultdict(list)
        for mid, s, d in rows:
            by[groups[mid]].append(nmae(saed_for_structure(s, d.rho.shape, table), d.rho))
        return float(np.mean([x for v in by.values() for x in v])), {g: float(np.mean(v)) for g, v in by.items()}

    names = sorted({groups[m] for m, _, _ in val})
    print("| reference | train (¼) % | val % | " + " | ".join(names) + " |")
    print("|---|---|---|" + "---|" * len(names))
    fits = [(f"fit, prior weight {w:g}", solve_reference(normal, own.valence, dataset_version="saed-prior",
                                                            prior=atoms, prior_weight=w)) for w in args.weights]
    for label, table in fits + [("store's own (train fit)", own), ("free atoms alone", atoms)]:
        t, _ = score(table, train)
        v, per = score(table, val)
        print(f"| {label} | {t:.3f} | {v:.3f} | " + " | ".join(f"{per[g]:.2f}" for g in names) + " |", flush=True)
    if args.save:
        if len(fits) != 1:
            raise SystemExit("--save needs exactly one --weights value")
        fits[0][1].save(args.save)
        print(f"wrote {fits[0][1].id} to {args.save}")


if __name__ == "__main__":
    main()
