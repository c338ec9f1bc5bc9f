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

from chgdata.dataset import Dataset
from chgdata.free_atoms import SHIPPED_REFERENCES
from chgdata.metrics import nmae
from chgdata.references import (
    ReferenceTable,
    material_normal_equations,
    solve_reference,
    sum_normal_equations,
)
from chgdata.saed import saed_for_structure


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--weights", type=float, nargs="+", required=True)
    ap.add_argument("--save")
    args = ap.parse_args()
    ds = Dataset(args.store)
    splits, groups = ds.splits(), ds.groups()
    own = ReferenceTable.load(f"{args.store}/saed_reference.json")
    atoms = ReferenceTable.load(SHIPPED_REFERENCES["gpaw-free-atoms"])

    def load(mid):
        s = ds.structure(mid)
        return mid, s, ds.density(mid)

    train = [load(m) for m in splits["train"]]
    val = [load(m) for m in splits["val"]]
    normal = sum_normal_equations(
        material_normal_equations(d.lattice, s.frac_coords, [x.specie.symbol for x in s], d.rho,
                                  np.random.default_rng(i), material_id=mid)
        for i, (mid, s, d) in enumerate(train))

    def score(table, rows):
        by = defaultdict(list)
        for mid, s, d in rows:
            by[groups[mid]].append(100 * nmae(saed_for_structure(s, d.rho.shape, table), d.rho))
        return float(np.mean([x for v in by.values() for x in v])), {g: float(np.mean(v)) for g, v in by.items()}

    names = sorted({groups[m] for m, _, _ in val})
    print("| reference | train (¼) % | val % | " + " | ".join(names) + " |")
    print("|---|---|---|" + "---|" * len(names))
    rows = [(f"fit, prior weight {w:g}", solve_reference(normal, own.valence, dataset_version="saed-prior",
                                                            prior=atoms, prior_weight=w)) for w in args.weights]
    for label, table in rows + [("store's own (train fit)", own), ("free atoms alone", atoms)]:
        t, _ = score(table, train[::4])
        v, per = score(table, val)
        print(f"| {label} | {t:.3f} | {v:.3f} | " + " | ".join(f"{per[g]:.2f}" for g in names) + " |", flush=True)
    if args.save:
        if len(rows) != 1:
            raise SystemExit("--save needs exactly one --weights value")
        rows[0][1].save(args.save)
        print(f"wrote {rows[0][1].id} to {args.save}")


if __name__ == "__main__":
    main()
