"""Does the ensemble's disagreement say where the density model is wrong? Spread against actual error.

For every crystal of the shipped model's grouped **val** split (never trained on; nothing is fitted here) and, with
``--new DIR``, every crystal of a ``chgdata compute`` folder (compositions absent from all shared data): the spread
of the four members' Δρ̂ on a 0.3 Å grid (:mod:`chgdata.models.uncertainty`, NMAE units) and the ensemble's
actual full-grid NMAE against the DFT density (as ``chgdata predict`` writes it), beside its SAED reference alone.
Prints Spearman's ρ, writes a table and a scatter PNG::

    OMP_NUM_THREADS=1 python bench/spread_vs_error.py --new datasets/gpaw-new --out bench/results/spread_vs_error
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from chgdata.models.checkpoint import load
from chgdata.models.predict import predict_structure
from chgdata.models.uncertainty import member_spread
from pymatgen.io.vasp import Chgcar
from scipy.stats import spearmanr

from chgdata.metrics import nmae

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def folder_of(fid: str) -> Path:
    return SHARED / ("gpaw-more" if fid.startswith("gpaw-m") else "gpaw") / fid


def measure(folder: Path, model, ckpt) -> dict:
    chg = Chgcar.from_file(str(folder / "CHGCAR.gz"))
    s = chg.structure
    rho = chg.data["total"] / s.volume
    pred = predict_structure(model, ckpt, s, rho.shape)
    sp = member_spread(model, ckpt, s, name=folder.name)
    return {"id": folder.name, "formula": s.composition.reduced_formula, "natoms": len(s),
            "spread_pct": sp.spread_pct, "nmae_pct": nmae(pred.rho, rho), "nmae_saed_pct": nmae(pred.saed, rho)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--new", type=Path, default=None, help="a chgdata compute folder of new compositions")
    ap.add_argument("--out", type=Path, default=Path("bench/results/spread_vs_error"))
    args = ap.parse_args()
    model, ckpt = load(None)
    sets = {"grouped val": [folder_of(i) for i in ckpt["splits"]["val"]]}
    if args.new:
        sets["new compositions"] = sorted(p.parent for p in args.new.glob("*/meta.json"))
    rows = {name: [measure(f, model, ckpt) for f in folders] for name, folders in sets.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(rows, indent=1))
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2 * len(rows), 4.2), dpi=110)
    FigureCanvasAgg(fig)
    lines = ["| set | crystals | Spearman ρ (spread, NMAE) | p | mean spread % | mean NMAE % | its SAED alone % "
             "(the model's free-atom reference) | model beats SAED |", "|---|---|---|---|---|---|---|---|"]
    for k, (name, rs) in enumerate(rows.items()):
        x = np.array([r["spread_pct"] for r in rs])
        y = np.array([r["nmae_pct"] for r in rs])
        rho, p = spearmanr(x, y)
        s = np.array([r["nmae_saed_pct"] for r in rs])
        lines.append(f"| {name} | {len(rs)} | {rho:.2f} | {p:.1e} | {x.mean():.2f} | {y.mean():.2f} | {s.mean():.2f} | "
                     f"{int(np.sum(y < s))}/{len(rs)} |")
        ax = fig.add_subplot(1, len(rows), k + 1)
        ax.scatter(x, y, s=12)
        for r in sorted(rs, key=lambda r: -r["nmae_pct"])[:5]:
            ax.annotate(r["formula"], (r["spread_pct"], r["nmae_pct"]), fontsize=7)
        ax.set_xlabel("ensemble spread of Δρ̂ (%, NMAE units, 0.3 Å grid)")
        ax.set_ylabel("actual NMAE of the ensemble (%)")
        ax.set_title(f"{name}: {len(rs)} crystals, Spearman ρ = {rho:.2f}", fontsize=10)
    fig.tight_layout()
    fig.savefig(f"{args.out}.png")
    print("\n".join(lines))
    Path(f"{args.out}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
