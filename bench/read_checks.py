"""Cost of checking reads against their checksums (``Dataset.check_reads``, default on): the training loader's
samples/s and ``Dataset.density`` reads/s, each with and without, measured in the same run (A B A B).

    python bench/read_checks.py --store data/gpaw --repeats 2

The loader is the cpu preset's (`DensityProbes`, Δρ target, 200 probes per structure, no DataLoader workers);
epoch 1 reads every material's grid (and checks it once), later epochs read the cached grids.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def loader_rates(store: str, check: bool, epochs: int) -> list[float]:
    """Samples/s of each epoch of a fresh loader (CHGDATA_CHECK_READS set for its Dataset)."""
    os.environ["CHGDATA_CHECK_READS"] = "1" if check else "0"
    from chgdata.models.data import DensityProbes

    probes = DensityProbes(store, None, target="delta", probes=200)
    assert probes.ds.check_reads is check
    rates = []
    for epoch in range(epochs):
        probes.set_epoch(epoch)
        t = time.perf_counter()
        for i in range(len(probes)):
            probes[i]
        rates.append(len(probes) / (time.perf_counter() - t))
    return rates


def density_rate(store: str, check: bool) -> float:
    from chgdata.store import open_dataset

    ds = open_dataset(store, check_reads=check)
    ids = [r["material_id"] for r in ds.index.to_pylist() if (r.get("rho_offset") or -1) >= 0]
    t = time.perf_counter()
    for m in ids:
        ds.density(m)
    return len(ids) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", default="data/gpaw")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("bench/results/read_checks.md"))
    args = ap.parse_args()
    rows: dict[str, list[list[float]]] = {"checked": [], "unchecked": []}
    dens: dict[str, list[float]] = {"checked": [], "unchecked": []}
    for _ in range(args.repeats):
        for name, check in (("checked", True), ("unchecked", False)):
            rows[name].append(loader_rates(args.store, check, args.epochs))
            dens[name].append(density_rate(args.store, check))
    best = {k: [max(r[e] for r in v) for e in range(args.epochs)] for k, v in rows.items()}
    lines = [f"Read checks on `{args.store}` ({os.uname().nodename}, {os.cpu_count()} cores; best of "
             f"{args.repeats}, A B A B)", "",
             "| read | checked | unchecked | checked / unchecked |", "|---|---|---|---|"]
    for e in range(args.epochs):
        c, u = best["checked"][e], best["unchecked"][e]
        lines.append(f"| loader epoch {e + 1} (samples/s) | {c:.1f} | {u:.1f} | {c / u:.2f} |")
    c, u = max(dens["checked"]), max(dens["unchecked"])
    lines.append(f"| Dataset.density (materials/s) | {c:.1f} | {u:.1f} | {c / u:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
