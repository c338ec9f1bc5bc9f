"""``chgdata verify``: recompute checksums and counts of a store; exit code 1 with a table of mismatches."""

from __future__ import annotations

import sys

import typer
from chgdata.cli.common import STORE, cli_errors, out
from rich.table import Table


def verify(store: str = STORE,
           limit: int = typer.Option(50, "--limit", help="How many mismatches to list (all are counted).")) -> None:
    """Recompute every stored array's sha256 and ∫ρ dV against the index; check duplicates, orphaned partitions
    and the card's counts. Exit code 0 when everything matches, 1 with a table of mismatches otherwise."""
    from chgdata.app import verify as verify_store

    with cli_errors():
        report = verify_store(store)
    checked = ", ".join(f"{n} {what}" for what, n in report.checked.items()) or "nothing"
    if report.ok:
        out.print(f"ok: {report.store}: checked {checked}; no mismatches")
        return
    t = Table(title=f"{len(report.problems)} mismatches in {report.store}")
    for col in ("kind", "table", "material_id", "detail"):
        t.add_column(col, overflow="fold")
    for p in report.problems[:limit]:
        t.add_row(p.kind, p.table, p.material_id, p.detail)
    out.print(t)
    out.print(f"checked {checked}; {len(report.problems)} mismatches", highlight=False)
    sys.exit(1)
