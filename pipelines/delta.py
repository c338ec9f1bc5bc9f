"""``chgdata build-delta``: SAED reference densities and Δρ = ρ − ρ_SAED for every material of a store.

Design:
1. Reference table. ``--reference FILE`` reuses a table (e.g. the one stored with another dataset or a model);
   otherwise the store's own table is reused, or fitted: valence counts from the electron counts of all stored
   materials, then per-material normal equations on seeded subsamples of their grids, summed in material-id
   order (one Dask task per block of consecutive ids, blocks summed in order on the driver) and solved. The sum
   does not depend on how materials fell into ingest partitions (worker counts, interrupted and resumed runs).
   The table is written to ``saed_reference.json`` and named in the card before any Δρ is computed, so a resumed
   run uses the same one.
2. Δρ. One Dask task per ingest partition writes ``saed/<partition>`` and ``delta/<partition>`` with exactly the
   layout of ``rho/<partition>`` (same offsets), then its ``delta.parquet`` fragment last. Resume skips partitions
   whose materials are all committed. A ``CHGCAR.saed[.gz]`` next to a material's CHGCAR (a VASP ICHARG=12,
   NELM=0 run) replaces the fitted SAED for that material.

Spin: the SAED of the magnetisation is zero (atoms are references without moments), so the magnetisation
target is the stored ``mag`` unchanged; only the total density gets a Δ.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from chgdata.pipelines.split import ensure_split

import chgdata
from chgdata import contract as C
from chgdata.compaction import finish_stage
from chgdata.free_atoms import SHIPPED_REFERENCES, shipped_reference_path
from chgdata.grid import cell_volume
from chgdata.metrics import DensityErrorSums
from chgdata.references import (
    NormalEquations,
    ReferenceTable,
    material_normal_equations,
    solve_reference,
    sum_normal_equations,
)
from chgdata.saed import find_user_reference, saed_density, user_reference_density
from chgdata.store import (
    Dataset,
    Location,
    PartitionCommit,
    StageReport,
    StoreError,
    consolidate,
    locked,
    new_partition_name,
    read_reference,
    read_table,
    remove_orphans,
    sha256_array,
    update_card,
    utcnow,
)
from chgdata.valences import MaterialCounts, robust_valence_counts

STAGE = "build-delta"



@dataclass
class DeltaReport(StageReport):
    """What a build-delta run did, and with which SAED reference (its id and where it came from)."""

    reference_id: str = ""
    reference_kind: str = ""
    excluded_from_fit: dict[str, str] = field(default_factory=dict)  #: train materials the fit left out, and why


def _grid_rows(ds: Dataset) -> dict[str, list[dict[str, Any]]]:
    """Materials with a valence density, grouped by partition in offset order."""
    parts: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in ds.index.to_pylist():
        if r.get(C.COL_RHO_OFFSET, -1) >= 0:
            parts[r[C.COL_PARTITION]].append(r)
    return {p: sorted(rows, key=lambda r: r[C.COL_RHO_OFFSET]) for p, rows in parts.items()}


def _geometry(row) -> tuple[np.ndarray, np.ndarray, list[str]]:
    return (np.asarray(row[C.COL_LATTICE], np.float64).reshape(3, 3),
            np.asarray(row[C.COL_FRAC], np.float64).reshape(-1, 3), list(row[C.COL_SPECIES]))


#: Materials per fit task. A constant (not a function of the worker count or of the ingest partitions), so
#: that the reduction tree of the fit depends on the set of material ids only.
FIT_BLOCK = 32


def fit_blocks(rows: Sequence[dict[str, Any]], size: int = FIT_BLOCK) -> list[list[dict[str, Any]]]:
    """The fit's task inputs: runs of ``size`` consecutive materials in material-id order.

    Floating-point sums depend on their order; grouping by sorted id (not by ingest partition, which depends on
    worker counts and on how an interrupted ingest was resumed) makes the summed normal equations, hence the
    reference table and every Δρ checksum, a function of the stored densities alone."""
    ordered = sorted(rows, key=lambda r: r[C.COL_ID])
    return [ordered[i:i + size] for i in range(0, len(ordered), size)]


def fit_partition(url: str, rows: Sequence[dict[str, Any]], seed: int, n_points: int) -> NormalEquations | None:
    """The Dask task of the fit: normal equations of one block of materials (seeded subsamples), summed in the
    order given (material-id order, :func:`fit_blocks`). ``rows`` are index rows from the driver: the task does
    not read the index."""
    ds = chgdata.open_dataset(url)
    parts = []
    for row in rows:
        lattice, frac, species = _geometry(row)
        rho = ds.grid(C.RHO, row[C.COL_ID], row).reshape(row[C.COL_GRID])
        id_hash = int.from_bytes(hashlib.sha256(row[C.COL_ID].encode()).digest()[:8], "little")
        rng = np.random.default_rng([seed, id_hash])
        parts.append(material_normal_equations(lattice, frac, species, rho, rng, n_points=n_points,
                                               material_id=row[C.COL_ID]))
    return sum_normal_equations(parts) if parts else None


def _user_reference(row) -> np.ndarray | None:
    """ρ_SAED from a ``CHGCAR.saed[.gz]`` next to the material's CHGCAR, when the user supplied one."""
    for f in row[C.COL_FILES] or []:
        if os.path.basename(f).startswith("CHGCAR") and os.path.exists(f) and find_user_reference(f) is not None:
            return user_reference_density(f)
    return None


def delta_partition(url: str, partition: str, rows: Sequence[dict[str, Any]], table: ReferenceTable,
                    kind: str) -> dict:
    """The Dask task of Δρ: saed/<partition>, delta/<partition> in rho's layout, then the delta.parquet fragment.

    All or nothing per partition: a failed material would shift the offsets of the ones after it, so on the
    first failure the task stops, records it, and commits no row; the next run retries the partition.
    """
    ds = chgdata.open_dataset(url)
    commit = PartitionCommit(url, partition, index_table=C.DELTA_INDEX)
    for row in rows:
        mid = row[C.COL_ID]
        try:
            lattice, frac, species = _geometry(row)
            shape = tuple(row[C.COL_GRID])
            rho = ds.grid(C.RHO, mid, row).reshape(shape)
            user = _user_reference(row)
            saed = saed_density(lattice, frac, species, shape, table) if user is None else user.astype(np.float32)
            if saed.shape != rho.shape or not np.isfinite(saed).all():
                raise ValueError(f"SAED grid {saed.shape} unusable for density grid {rho.shape}")
            delta = rho - saed
            volume = cell_volume(lattice)  # plain floats: not the BLAS-dependent det
            saed_error = DensityErrorSums(float(np.abs(delta, dtype=np.float64).sum()),
                                          float(np.abs(rho, dtype=np.float64).sum()), int(rho.size))
            for array in (C.SAED, C.DELTA):  # slots of materials re-ingested into another partition stay empty
                commit.pad_to(array, row[C.COL_RHO_OFFSET])
            if commit.append(C.SAED, saed) != row[C.COL_RHO_OFFSET] or commit.append(C.DELTA, delta) != row[
                    C.COL_RHO_OFFSET]:
                raise StoreError(f"offsets of saed/{partition} do not follow rho/{partition}")
        except (ValueError, KeyError, OSError, StoreError) as exc:
            reason = f"{mid}: " + (" ".join(str(exc).split()) or type(exc).__name__)
            commit.rows, commit.extra_tables = [], {}
            commit.add_failure(mid, STAGE, reason)
            commit.finish()
            return {"partition": partition, "committed": [], "failed": {mid: reason}}
        commit.add_row({
            C.COL_ID: mid, C.COL_PARTITION: partition, "reference_id": table.id,
            "reference_kind": "user-chgcar" if user is not None else kind, "saed_sha256": sha256_array(saed),
            "delta_sha256": sha256_array(delta), "saed_electrons": float(saed.mean(dtype=np.float64) * volume),
            "delta_integral": float(delta.mean(dtype=np.float64) * volume),
            "abs_delta_over_abs_rho": saed_error.abs_err / saed_error.abs_ref, "nmae_saed": saed_error.nmae,
            "built_at": utcnow()})
    commit.finish()
    return {"partition": partition, "committed": [r[C.COL_ID] for r in rows], "failed": {}}


def _counts(rows) -> list[MaterialCounts]:
    return [MaterialCounts(r[C.COL_ID], dict(Counter(r[C.COL_SPECIES])), float(r[C.COL_NELECT])) for r in rows]


def fit_reference(store: str, client, parts: dict[str, list[dict]], seed: int = 0, n_points: int = 4096,
                  progress: bool = True, nonnegative: bool = False,
                  excluded: dict[str, str] | None = None) -> ReferenceTable:
    """Fit the per-element references on every stored valence density (Dask over blocks of material ids;
    ``parts`` gives the rows, its grouping into ingest partitions does not matter).

    ``nonnegative``: constrain every ρ_Z(r) ≥ 0. Off by default: pseudo valence densities (GPAW's, and VASP's
    with partial-core/augmentation) dip below zero near some nuclei, and on the gpaw held-out split the signed
    fit gives 2.05 % NMAE against ≈ 11 % for the non-negative one (bench/results/saed.md).

    Materials whose electron counts no integer valences explain are left out (:func:`robust_valence_counts`);
    ``excluded`` receives them with the reason.
    """
    from chgdata.pipelines.cluster import run_futures

    rows = sorted((r for rs in parts.values() for r in rs), key=lambda r: r[C.COL_ID])
    valence, left_out = robust_valence_counts(_counts(rows))
    if excluded is not None:
        excluded.update(left_out)
    rows = [r for r in rows if r[C.COL_ID] not in left_out]
    calls = [(store, block, seed, n_points) for block in fit_blocks(rows)]
    futures = {client.submit(fit_partition, *call, pure=False): i for i, call in enumerate(calls)}
    pieces: dict[int, NormalEquations | None] = {}
    for res in run_futures(futures, "fit SAED references", weight=lambda i: len(calls[i][1]), show=progress):
        pieces.update(res)
    # summed in block (= material-id) order, not completion order, so the same data always give the same table
    normal = sum_normal_equations(pieces[i] for i in sorted(pieces) if pieces[i] is not None)
    return solve_reference(normal, valence, dataset_version=data_digest(rows), nonnegative=nonnegative)


def data_digest(rows) -> str:
    """A name for the fitted data that is the same for the same densities: sha256 over (id, rho checksum)."""
    h = hashlib.sha256()
    for r in sorted(rows, key=lambda r: r[C.COL_ID]):
        h.update(f"{r[C.COL_ID]}:{r[C.COL_RHO_SHA]};".encode())
    return f"rho-sha256:{h.hexdigest()[:16]}"


def _load_or_fit(loc: Location, store: str, reference: str | None, client, parts,
                 progress: bool, nonnegative: bool, needed: set[str],
                 excluded: dict[str, str] | None = None) -> tuple[ReferenceTable, str]:
    """The reference to use: ``--reference FILE``, else the stored one, else fitted on ``parts`` (the train split
    of the store's grouped split); ``needed``: the elements of every material that will get a Δρ."""
    path = loc.path(C.REFERENCE_FILE)
    stored = read_reference(loc)
    if reference is not None:
        table = ReferenceTable.load(shipped_reference_path(reference))
        if stored is not None and stored.id != table.id and read_table(loc, C.DELTA_INDEX) is not None:
            raise StoreError(f"{store} already holds Δρ built with reference {stored.id}; refusing to mix it with "
                             f"{table.id} from {reference} (build into a fresh store)")
        kind = f"shipped {reference}" if str(reference) in SHIPPED_REFERENCES else "file"
    elif stored is not None:
        table, kind = stored, "stored"
    else:
        table = fit_reference(store, client, parts, progress=progress, nonnegative=nonnegative, excluded=excluded)
        kind = "fitted-nonnegative" if nonnegative else "fitted"
    missing = sorted(needed - set(table.elements))
    if missing:
        raise StoreError(f"reference table {table.id} has no entry for {missing}")
    loc.write_bytes_atomic(path, table.to_json().encode())
    return table, kind


def run_build_delta(store: str, *, reference: str | None = None, workers: int = 2, scheduler: str | None = None,
                    processes: bool = True, progress: bool = True, client=None,
                    nonnegative: bool = False) -> DeltaReport:
    """Fit or load the SAED reference, then compute saed and delta for every material; resume is the default."""
    import contextlib

    from chgdata.pipelines.cluster import dask_client, run_tasks

    report = DeltaReport()
    with locked(store, owner="chgdata build-delta") as loc, contextlib.ExitStack() as stack:
        ds = chgdata.open_dataset(store)
        remove_orphans(loc)
        parts = _grid_rows(ds)
        if not parts:
            raise StoreError(f"{store}: no material with a valence density (run chgdata ingest first)")
        if client is None:
            client = stack.enter_context(dask_client(workers, scheduler, processes=processes))
        split = ensure_split(loc)  # the fit sees the train split only
        train = set(split.ids("train"))
        fit_parts = {p: [r for r in rs if r[C.COL_ID] in train] for p, rs in parts.items()}
        table, kind = _load_or_fit(loc, store, reference, client, {p: rs for p, rs in fit_parts.items() if rs},
                                   progress, nonnegative, needed={s for rs in parts.values() for r in rs
                                                                  for s in r[C.COL_SPECIES]},
                                   excluded=report.excluded_from_fit)
        if report.excluded_from_fit:  # listed in failures.parquet; their Δρ is still built (ρ − SAED)
            note = PartitionCommit(store, new_partition_name("fit"), index_table=C.DELTA_INDEX)
            for mid, why in report.excluded_from_fit.items():
                note.add_failure(mid, "reference-fit", f"{mid}: {why}")
            note.finish()
        report.reference_id, report.reference_kind = table.id, kind
        done_t = read_table(loc, C.DELTA_INDEX)
        done_rows = [] if done_t is None else done_t.select([C.COL_ID, C.COL_PARTITION, "reference_id"]).to_pylist()
        if any(r["reference_id"] != table.id for r in done_rows):
            raise StoreError(f"{store} holds Δρ from another reference than {table.id}; build into a fresh store")
        # a material re-ingested into a newer partition has a stale Δ row: done means same partition
        done = {(r[C.COL_ID], r[C.COL_PARTITION]) for r in done_rows}
        todo = {p: rs for p, rs in parts.items() if not all((r[C.COL_ID], p) in done for r in rs)}
        report.skipped = sorted(m for p, rs in parts.items() if p not in todo for m in (r[C.COL_ID] for r in rs))
        report.partitions = len(todo)
        calls = [(store, p, rs, table, kind) for p, rs in todo.items()]
        for res in run_tasks(client, delta_partition, calls, STAGE, weight=lambda c: len(c[2]), show=progress):
            report.committed += res["committed"]
            report.failed.update(res["failed"])
        finish_stage(loc)  # stale Δ rows of re-ingested materials out of their fragments, then their arrays
        update_card(loc, saed=card_section(loc, table, kind))
        consolidate(loc)
    return report


def card_section(loc: Location, table: ReferenceTable, kind: str) -> dict[str, Any]:
    """The card's ``saed`` section: reference identity and how much the SAED explains."""
    t = read_table(loc, C.DELTA_INDEX)
    ratios = [] if t is None else t.column("abs_delta_over_abs_rho").to_pylist()
    nmae = [] if t is None else t.column("nmae_saed").to_pylist()
    return {
        "reference_id": table.id, "reference_file": C.REFERENCE_FILE, "reference_source": kind,
        "description": (
            "superposition of isolated neutral-atom densities: per element a signed sum of normalised 3-D Gaussians "
            "fitted to the pseudo valence density of the free atom in a periodic box (no crystal in the fit)"
            if table.provenance.get("source") == "isolated neutral atoms" else
            "fitted reference density: per element a signed sum of normalised 3-D Gaussians fitted to the crystal "
            "densities (not a superposition of free-atom densities)"),
        "basis": "normalised 3-D Gaussians (widths in Å) per element, integrating to the valence count",
        "valence_electrons": dict(table.valence), "sigmas_A": list(table.sigmas),
        "materials": len(ratios),
        "fraction_abs_delta_lt_abs_rho": float(np.mean([r < 1 for r in ratios])) if ratios else None,
        "mean_abs_delta_over_abs_rho": float(np.mean(ratios)) if ratios else None,
        "mean_nmae_saed_percent": float(np.mean(nmae)) if nmae else None,
        "spin": "the SAED of the magnetisation is zero: mag is the magnetisation target unchanged",
        "arrays": {C.SAED: "e/Å^3, same layout as rho", C.DELTA: "rho - saed, e/Å^3, same layout as rho"},
        "code_version": chgdata.__version__, "updated": utcnow(),
    }
