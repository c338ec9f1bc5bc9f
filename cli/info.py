"""``chgdata info``: counts, sizes, grid-shape histogram, failures, and derived-stage summaries."""

from __future__ import annotations

import collections

import typer
from chgdata.cli.common import STORE, cli_errors, out
from rich.table import Table


def _size_bytes(ds) -> int:
    return int(ds.loc.fs.du(ds.loc.root, total=True))


def info(store: str = STORE, failures: int = typer.Option(20, help="How many failures to list.")) -> None:
    """Summarise a dataset: materials, spin, sizes, grid shapes, failures."""
    from chgdata import contract as C
    from chgdata.store import open_dataset

    with cli_errors():
        ds = open_dataset(store)
        rows = ds.index.to_pylist()
    card = ds.card
    n_grid = [r for r in rows if r.get(C.COL_NPOINTS)]
    n_rho = sum(r.get(C.COL_RHO_OFFSET, -1) >= 0 for r in rows)
    n_ae = sum(r.get(C.COL_AE_OFFSET, -1) >= 0 for r in rows)
    points = sum(r[C.COL_NPOINTS] for r in n_grid)
    t = Table(title=f"chgdata dataset {store}", show_header=False)
    t.add_row("schema version", str(card.get("schema_version", "?")))
    t.add_row("materials", str(len(rows)))
    t.add_row("with valence density (CHGCAR)", str(n_rho))
    t.add_row("with all-electron density (AECCAR0+2)", str(n_ae))
    t.add_row("spin-polarised", str(sum(bool(r.get(C.COL_SPIN)) for r in rows)))
    t.add_row("with DOS", str(sum(bool(r.get(C.COL_HAS_DOS)) for r in rows)))
    t.add_row("flagged", str(sum(str(r.get(C.COL_STATUS, "ok")).startswith("flagged") for r in rows)))
    t.add_row("grid points", f"{points:,}")
    t.add_row("size on disk", f"{_size_bytes(ds) / 2**20:.1f} MiB")
    prov = card.get("provenance", {})
    t.add_row("sources", ", ".join(prov.get("sources", [])) or "-")
    t.add_row("MP database versions", ", ".join(prov.get("database_versions", [])) or "-")
    saed = card.get("saed") or {}
    if saed.get("reference_id"):
        from chgdata.free_atoms import reference_kind

        t.add_row("SAED reference (the store's)", f"{saed['reference_id']}: "
                  f"{reference_kind(saed['reference_id'], saed.get('reference_source'))}")
    for section in ("saed", "dos"):
        for key, value in (card.get(section) or {}).items():
            if isinstance(value, float):
                t.add_row(f"{section}: {key}", f"{value:.4g}")
            elif not isinstance(value, dict | list) and len(str(value)) <= 40:
                t.add_row(f"{section}: {key}", str(value))
    out.print(t)
    hist = collections.Counter("x".join(map(str, r[C.COL_GRID])) for r in n_grid)
    if hist:
        h = Table(title="grid shapes")
        h.add_column("nx×ny×nz")
        h.add_column("materials", justify="right")
        for shape, count in hist.most_common(15):
            h.add_row(shape, str(count))
        out.print(h)
    fails = ds.failures
    if fails is not None and fails.num_rows:
        def ids(table):
            t = ds.table(table)
            return set() if t is None else set(t.column(C.COL_ID).to_pylist())

        # a failure is resolved once a later run committed the material in that stage's table
        done = {"ingest": set(ds.material_ids), "build-delta": ids(C.DELTA_INDEX), "build-dos": ids(C.DOS_INDEX)}
        latest = {}
        for r in fails.to_pylist():
            if r["material_id"] not in done.get(r["stage"], set()):
                latest[(r["material_id"], r["stage"])] = r
        f = Table(title=f"failures ({len(latest)} unresolved)")
        for col in ("material_id", "stage", "reason"):
            f.add_column(col, overflow="fold")
        for r in list(latest.values())[:failures]:
            f.add_row(r["material_id"], r["stage"], r["reason"])
        out.print(f)
