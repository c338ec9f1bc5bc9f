"""``chgdata rebuild NAME@VERSION``: rebuild a published dataset version from its raw inputs and verify it.

A catalogue entry records its exact inputs (material id → sha256 of the raw files) and how it was built (split,
DOS window, code and numeric package versions). The rebuild ingests exactly those ids from a source folder that
may have grown since, refuses when one is missing or its files changed (naming them), runs split, build-delta
and build-dos with the recorded parameters, and compares the catalogue checksums. A content mismatch with
identical inputs means the code or a numeric package changed: the report lists the recorded and current
package versions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from chgdata import catalog as cat
from chgdata import contract as C
from chgdata.store import Location, StoreError, read_table


@dataclass
class RebuildReport:
    ref: str
    materials: int = 0
    checks: dict[str, bool] = field(default_factory=dict)
    packages: dict[str, tuple[str, str]] = field(default_factory=dict)  # package -> (recorded, current) if differ

    @property
    def ok(self) -> bool:
        return bool(self.checks.get("content"))


def run_rebuild(ref: str, from_dir: str | os.PathLike, store: str, *, catalog: str | os.PathLike | None = None,
                workers: int = 2, processes: bool = True, progress: bool = True) -> RebuildReport:
    """Rebuild ``ref`` (``name[@version]``) from ``from_dir`` into ``store`` and verify its checksums."""
    from chgdata.pipelines.delta import run_build_delta
    from chgdata.pipelines.dos import run_build_dos
    from chgdata.pipelines.ingest import run_ingest
    from chgdata.pipelines.split import run_split

    entry = cat.find_entry(ref, catalog)
    name = f"{entry['name']}@{entry['version']}"
    inputs = (entry.get("inputs") or {}).get("materials")
    if not inputs:
        raise cat.CatalogError(f"{name} records no inputs (published before chgdata recorded them): it cannot be "
                               "selected from a grown folder; rebuild a later version")
    ing = run_ingest(store, from_dir=str(from_dir), only=list(inputs), workers=workers, processes=processes,
                     progress=progress)
    if ing.failed:
        first = sorted(ing.failed.items())[:3]
        raise StoreError(f"{name}: {len(ing.failed)} recorded inputs could not be ingested from {from_dir}, e.g. "
                         + "; ".join(why for _, why in first))
    index = read_table(Location.parse(store), C.INDEX)
    have = dict(zip(index.column(C.COL_ID).to_pylist(), index.column(C.COL_INPUT_SHA).to_pylist()))
    changed = sorted(m for m, sha in inputs.items() if sha is not None and have.get(m) != sha)
    if changed:
        raise StoreError(f"{name}: the raw files of {len(changed)} recorded inputs differ from the published ones "
                         f"(e.g. {', '.join(changed[:5])}): this is not the same data")
    build: dict[str, Any] = entry.get("build") or {}
    split = build.get("split") or {}
    if split:
        run_split(store, group_by=split.get("group_by"), fractions=split.get("fractions"), seed=split.get("seed"))
    if entry.get("saed"):
        run_build_delta(store, workers=workers, processes=processes, progress=progress)
    if entry.get("dos"):
        d = build.get("dos") or entry["dos"]
        run_build_dos(store, sigma=d["sigma_eV"], emin=d["emin_eV"], emax=d["emax_eV"], npoints=d["npoints"],
                      workers=workers, processes=processes, progress=progress)
    report = RebuildReport(name, materials=len(have), checks=cat.verify(store, name, catalog))
    now = cat.build_record(store)["packages"]
    report.packages = {p: (v, now.get(p, "absent")) for p, v in (build.get("packages") or {}).items()
                       if now.get(p) != v}
    return report
