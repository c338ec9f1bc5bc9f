"""``chgdata build-dos``: raw DOS kept at ingest → fixed DOS windows (DESIGN.md §5), resumable, one Dask task per
partition.

Per build-dos partition a task writes two float32 Zarr arrays of shape ``(n, 2, npoints)``:

``arrays/dos_abs/<partition>``     smeared DOS, states/eV/atom, spin (up, down)
``arrays/dos_norm/<partition>``    the same divided by its maximum over both channels (max = 1; DosNet's for a
                                   non-spin DOS, see chgdata.dos)
``arrays/dos_energy/<partition>``  the energy axis E - E_F (eV), ``linspace(emin, emax, npoints)``

then its failures fragment and last its ``dos.parquet`` index fragment (the commit point). The energy axis is
also in the card's ``dos`` section; it is kept beside each partition (1.6 kB) rather than as one un-partitioned
array because the orphan sweep treats every ``arrays/<name>/<sub>`` not named by an index row as debris.

Non-spin DOS: the total is split evenly between the two channels (``chgdata.dos.smear_window``); the row's
``spin_polarized`` flag tells them apart. ``absolute == normalised * norm_const`` to float32 rounding, so either
variant recovers the other. Resume: materials already in ``dos.parquet`` are skipped; a run whose window
parameters differ from the stored ones is refused (build into a fresh store instead).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import chgdata
from chgdata import contract as C
from chgdata.compaction import finish_stage
from chgdata.dos import DosWindow, dos_checksum, raw_from_row, smear_window
from chgdata.store import (
    Dataset,
    Location,
    PartitionCommit,
    StageReport,
    StoreError,
    locked,
    new_partition_name,
    read_table,
    remove_orphans,
    update_card,
    utcnow,
)
from chgdata.store import consolidate as consolidate_arrays

DOS_TABLE = Dataset.DOS_TABLE
DOS_ABS = C.DOS_ABS
DOS_NORM = C.DOS_NORM
DOS_ENERGY = C.DOS_ENERGY
STAGE = "build-dos"

#: A build-dos partition holds at most this many windows (2 x 400 float32 each: 3.2 kB per variant).
PARTITION_MATERIALS = 4096
#: Zarr chunk along the material axis.
CHUNK_MATERIALS = 256



@dataclass(frozen=True)
class WindowParams:
    """Window parameters: Gaussian sigma (eV), E - E_F range (eV), points."""

    sigma: float = 0.1
    emin: float = -10.0
    emax: float = 10.0
    npoints: int = 400

    def check(self) -> None:
        if not (math.isfinite(self.sigma) and self.sigma >= 0):
            raise ValueError(f"--sigma must be a finite number >= 0 eV, got {self.sigma}")
        if not (math.isfinite(self.emin) and math.isfinite(self.emax) and self.emax > self.emin):
            raise ValueError(f"--emin must be below --emax, got [{self.emin}, {self.emax}] eV")
        if self.npoints < 2:
            raise ValueError(f"--points must be >= 2, got {self.npoints}")

    def same(self, row: dict[str, Any]) -> bool:
        return (int(row["npoints"]) == self.npoints
                and all(math.isclose(float(row[k]), getattr(self, k), rel_tol=1e-9, abs_tol=1e-12)
                        for k in ("sigma", "emin", "emax")))

    def describe(self) -> str:
        return f"sigma={self.sigma:g} eV, E-E_F in [{self.emin:g}, {self.emax:g}] eV, {self.npoints} points"

    @property
    def energies(self) -> np.ndarray:
        return np.linspace(self.emin, self.emax, self.npoints)


@dataclass
class DosReport(StageReport):
    """What a build-dos run did."""


def _row(mid: str, partition: str, row: int, w: DosWindow, p: WindowParams, source: str) -> dict[str, Any]:
    return {C.COL_ID: mid, C.COL_PARTITION: partition, "row": row, "efermi": w.efermi, "band_gap": w.band_gap,
            "natoms": w.natoms, "spin_polarized": w.spin_polarized, "states_raw": w.states_raw,
            "states_smeared": w.states, "conservation_error": w.conservation_error, "norm_const": w.norm_const,
            "sigma": p.sigma, "emin": p.emin, "emax": p.emax, "npoints": p.npoints, "spacing": w.spacing,
            "truncated": w.truncated, "raw_emin": w.raw_range[0], "raw_emax": w.raw_range[1],
            "dos_sha256": dos_checksum(w.absolute, w.normalised), "built_at": utcnow(), "source_partition": source}


def build_dos_partition(url: str, partition: str, sources: Sequence[tuple[str, Sequence[str]]],
                        params: WindowParams) -> dict[str, Any]:
    """The Dask task: windows for the materials ``sources`` = [(dos_raw fragment path, ids)], one commit.

    Never raises for a bad material: its reason goes to the failures table and the others are committed.
    """
    commit = PartitionCommit(url, partition, index_table=DOS_TABLE)
    loc = commit.loc
    windows: list[tuple[str, DosWindow]] = []
    failed: dict[str, str] = {}

    def fail(mid: str, reason: str) -> None:
        reason = " ".join(str(reason).split()) or "unknown error"
        commit.add_failure(mid, STAGE, reason)
        failed[mid] = reason

    for path, ids in sources:
        want = set(ids)
        try:
            with loc.fs.open(path, "rb") as fh:
                table = pq.read_table(fh, filters=[(C.COL_ID, "in", sorted(want))])
        except (OSError, pa.ArrowException) as exc:
            for mid in ids:
                fail(mid, f"cannot read raw DOS fragment {os.path.basename(path)}: {exc}")
            continue
        seen: set[str] = set()
        for r in table.to_pylist():
            mid = r[C.COL_ID]
            if mid in seen:
                continue
            seen.add(mid)
            try:
                windows.append((mid, smear_window(raw_from_row(r), params.sigma, params.emin, params.emax,
                                                  params.npoints), _fragment_partition(path)))
            except (ValueError, TypeError, KeyError, OverflowError) as exc:
                fail(mid, str(exc) or type(exc).__name__)
        for mid in sorted(want - seen):
            fail(mid, f"no raw DOS row in {os.path.basename(path)}")

    if windows:  # arrays first ...
        n = len(windows)
        chunks = (min(n, CHUNK_MATERIALS), 2, params.npoints)
        dims = (f"row_{partition}", "spin", "energy")  # rows: the "row" column of dos.parquet
        layout = "(row, spin (up, down), energy); row of each material in dos.parquet; energy axis in dos_energy"
        commit.write_array(DOS_ABS, np.stack([w.absolute for _, w, _ in windows]), chunks, dims, layout)
        commit.write_array(DOS_NORM, np.stack([w.normalised for _, w, _ in windows]), chunks, dims, layout)
        commit.write_array(DOS_ENERGY, params.energies, dims=("energy",), layout="E - E_F, eV")
        for i, (mid, w, source) in enumerate(windows):
            commit.add_row(_row(mid, partition, i, w, params, source))
    commit.finish()  # ... failures, then the dos.parquet fragment last
    return {"partition": partition, "committed": [mid for mid, _, _ in windows], "failed": failed}


def _fragment_partition(path: str) -> str:
    """The ingest partition a dos_raw fragment belongs to (its file name)."""
    return os.path.basename(path)[: -len(".parquet")]


def _raw_sources(loc: Location) -> dict[str, str]:
    """material_id → the dos_raw fragment committed with its index row (fragment name = ingest partition).

    A dos_raw fragment whose ingest task died before its index fragment is ignored, as are ids with no index row.
    """
    index = read_table(loc, C.INDEX)
    if index is None:
        return {}
    part_of = dict(zip(index.column(C.COL_ID).to_pylist(), index.column(C.COL_PARTITION).to_pylist()))
    out: dict[str, str] = {}
    for path in loc.list_fragments(C.DOS_RAW):
        partition = _fragment_partition(path)
        with loc.fs.open(path, "rb") as fh:
            ids = pq.read_table(fh, columns=[C.COL_ID]).column(C.COL_ID).to_pylist()
        for mid in ids:
            if part_of.get(mid) == partition:
                out[mid] = path
    return out


def plan_partitions(todo: Sequence[tuple[str, str]], workers: int,
                    max_materials: int = PARTITION_MATERIALS) -> list[list[tuple[str, list[str]]]]:
    """Group (id, fragment) pairs into partitions of at most ``max_materials`` (~4 per worker), each as
    [(fragment, ids)] so a task opens each raw fragment once."""
    if not todo:
        return []
    per = max(1, min(max_materials, math.ceil(len(todo) / (4 * max(1, workers)))))
    parts = []
    for start in range(0, len(todo), per):
        groups: dict[str, list[str]] = {}
        for mid, path in todo[start:start + per]:
            groups.setdefault(path, []).append(mid)
        parts.append(list(groups.items()))
    return parts


def stored_params(loc: Location) -> tuple[pa.Table | None, WindowParams | None]:
    """The dos.parquet table and the window parameters it was built with (None when empty)."""
    t = read_table(loc, DOS_TABLE)
    if t is None or t.num_rows == 0:
        return t, None
    r = t.slice(0, 1).to_pylist()[0]
    return t, WindowParams(float(r["sigma"]), float(r["emin"]), float(r["emax"]), int(r["npoints"]))


def run_build_dos(store: str, *, sigma: float = 0.1, emin: float = -10.0, emax: float = 10.0, npoints: int = 400,
                  workers: int = 2, scheduler: str | None = None, processes: bool = True,
                  progress: bool = True, client=None) -> DosReport:
    """Build DOS windows for every material of ``store`` with a raw DOS; resume is the default."""
    from chgdata.pipelines.cluster import dask_client, run_tasks

    params = WindowParams(float(sigma), float(emin), float(emax), int(npoints))
    params.check()
    report = DosReport()
    with locked(store, owner="chgdata build-dos") as loc:
        if not loc.fs.exists(loc.path(C.INDEX)):
            raise StoreError(f"no ingested dataset at {store}: run chgdata ingest first")
        table, have = stored_params(loc)
        if table is not None and table.num_rows:
            bad = [r for r in table.select(["sigma", "emin", "emax", "npoints"]).to_pylist() if not params.same(r)]
            if bad:
                raise StoreError(
                    f"{store} already holds DOS windows built with {have.describe()}; this run asks for "
                    f"{params.describe()}. Rerun with the stored parameters to resume, or build into a fresh store")
        report.orphans_removed = remove_orphans(loc)
        # done = a window smeared from the raw DOS of the material's current ingest partition (a re-ingested
        # material has a newer raw DOS, and its old window is stale)
        done = set() if table is None else {(r[C.COL_ID], r.get("source_partition")) for r in table.select(
            [C.COL_ID, "source_partition"]).to_pylist()}
        sources = _raw_sources(loc)
        report.skipped = sorted(m for m, p in sources.items() if (m, _fragment_partition(p)) in done)
        todo = [(m, p) for m, p in sources.items() if (m, _fragment_partition(p)) not in done]
        parts = plan_partitions(todo, workers)
        report.partitions = len(parts)
        if parts:
            calls = [(store, new_partition_name("dos"), part, params) for part in parts]
            with contextlib.ExitStack() as stack:
                if client is None:
                    client = stack.enter_context(dask_client(workers, scheduler, processes=processes))
                for res in run_tasks(client, build_dos_partition, calls, STAGE,
                                     weight=lambda c: sum(len(ids) for _, ids in c[2]), show=progress):
                    report.committed += res["committed"]
                    report.failed.update(res["failed"])
        finish_stage(loc)  # superseded windows out of their fragments, then their arrays
        update_card(loc, dos=card_section(loc, params))
        consolidate_arrays(loc)
    return report


def card_section(loc: Location, params: WindowParams) -> dict[str, Any]:
    """The card's ``dos`` section: window, units, variants and counts of the committed windows."""
    t = read_table(loc, DOS_TABLE)
    rows = [] if t is None else t.select(["spin_polarized", "truncated", "band_gap", "conservation_error"]).to_pylist()
    fails = read_table(loc, C.FAILURES)
    failed = set() if fails is None else {r["material_id"] for r in fails.to_pylist() if r["stage"] == STAGE}
    failed -= set() if t is None else set(t.column(C.COL_ID).to_pylist())
    return {
        "sigma_eV": params.sigma, "smearing": "Gaussian, sigma in eV (FWHM = 2.3548 sigma)",
        "emin_eV": params.emin, "emax_eV": params.emax, "npoints": params.npoints,
        "spacing_eV": (params.emax - params.emin) / (params.npoints - 1),
        "energy_axis": "E - E_F = linspace(emin_eV, emax_eV, npoints), eV (also arrays/dos_energy/<partition>)",
        "energies_eV": [round(float(e), 10) for e in params.energies],
        "shape": "(n_materials, 2, npoints): spin up, spin down; a non-spin total is split evenly (0.5 each)",
        "arrays": {DOS_ABS: "states/eV/atom (cell averages of the smeared DOS, states in window conserved)",
                   DOS_NORM: "dos_abs / norm_const (max over both channels = 1; DosNet's for non-spin, "
                             "see chgdata.dos)"},
        "normalisations": {"absolute": "states/eV/atom", "normalised": "max = 1; absolute = normalised * norm_const"},
        "index_table": DOS_TABLE, "code_version": chgdata.__version__, "updated": utcnow(),
        "materials": len(rows), "spin_polarized": sum(bool(r["spin_polarized"]) for r in rows),
        "non_spin": sum(not r["spin_polarized"] for r in rows),
        "truncated": sum(bool(r["truncated"]) for r in rows),
        "with_band_gap": sum(r["band_gap"] is not None for r in rows),
        "max_abs_conservation_error": max((abs(r["conservation_error"]) for r in rows), default=0.0),
        "failed": len(failed),
    }
