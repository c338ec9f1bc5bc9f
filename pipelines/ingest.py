"""``chgdata ingest``: sources → Zarr partitions + Parquet index, resumable, one Dask task per partition.

Design: the driver lists the materials (validating ids before any network call), drops those already committed,
and groups the rest into partitions sized by declared grid points. Each task streams its materials one at a
time (bounded memory: one grid plus one shard buffer), writes arrays, then its raw-DOS and failure fragments,
and its index fragment last. A killed run leaves no visible half-material; rerunning finishes the rest.

Incremental updates (a newer MP database version): for MP ids already committed the driver asks MP for the task id
of the material's current charge density (metadata only, batched: :meth:`MPSource.current_tasks`) and re-ingests
only the ids whose task id differs from the one kept in the index. A re-ingested material gets a new row in a new
partition; the index reader keeps the newest row per id (partition names start with a UTC timestamp, fragments are
read in name order: :func:`chgdata.store.read_table`), so the single atomic write of the new index fragment
supersedes the old row — there is never a moment with two visible rows, and a killed update leaves the old version
visible. At the end of the run :func:`chgdata.compaction.compact` removes the superseded row (and Δρ/DOS rows
built from the old partition) from their fragments, so any Parquet reader sees one current row per id; the old
arrays are then swept as orphans. The card's ``provenance.database_versions`` accumulates every version the
dataset was built from.

Local folders: a committed folder whose input files changed (size/mtime differ from the recorded ``input_stat``,
then ``input_sha256`` differs: :func:`changed_local_materials`) is re-ingested the same way; build-delta and
build-dos then rebuild its derived arrays (they redo every material whose current partition they have not built).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from chgdata.pipelines.cluster import dask_client, run_tasks
from chgdata.pipelines.ingest_items import (
    Item,
    changed_local_materials,
    changed_mp_materials,
    collect_items,
    from_dir_roots,
)

import chgdata
from chgdata import contract as C
from chgdata.compaction import finish_stage
from chgdata.grid import (
    GridError,
    augmentation_to_json,
    cell_volume,
    density_from_vasp,
    electron_count_flag,
    electrons,
    sign_problem,
)
from chgdata.grid_order import grid_order_problem
from chgdata.sources import vasp_dir
from chgdata.sources.mp import MPSource, Secret, default_client
from chgdata.sources.records import MaterialRecord, SourceError
from chgdata.sources.settings import card_section as dft_card_section
from chgdata.sources.settings import settings_json
from chgdata.store import (
    PartitionCommit,
    StageReport,
    committed_ids,
    consolidate,
    locked,
    new_partition_name,
    read_card,
    read_table,
    remove_orphans,
    sha256_array,
    update_card,
    utcnow,
)

log = logging.getLogger(__name__)

#: A partition holds at most this many grid points (float32: 256 MiB) ...
PARTITION_POINTS = 64 * 1024 * 1024
#: ... and at most this many materials.
PARTITION_MATERIALS = 64
#: Peak bytes per grid point while one CHGCAR is parsed and converted (pymatgen's text parse into float64 total and
#: diff blocks, their float32 e/Å³ copies, transient token lists); see SCALING.md.
PARSE_BYTES_PER_POINT = 64


def worker_memory_limit() -> int | None:
    """The memory limit (bytes) of the Dask worker running this task; None outside a worker or when unlimited."""
    try:
        from distributed import get_worker

        limit = get_worker().memory_manager.memory_limit
    except (ImportError, ValueError, AttributeError):
        return None
    return int(limit) if limit else None


def check_fits_in_memory(item: Item) -> None:
    """Refuse, before anything is read or allocated, a material whose parse would exceed the worker's memory."""
    limit = worker_memory_limit()
    if limit is None or not item.points:
        return
    need = item.points * PARSE_BYTES_PER_POINT
    if need > limit:
        raise SourceError(f"{item.material_id}: grid of {item.points:,} points needs about {need / 2**20:,.0f} MiB "
                          f"to parse, over this Dask worker's memory limit of {limit / 2**20:,.0f} MiB; refused "
                          "before reading (run it on workers with a larger --memory-limit)")


@dataclass
class IngestReport(StageReport):
    """What an ingest run did: also the materials committed with a flag (id -> why), and the updates."""

    flagged: dict[str, str] = field(default_factory=dict)
    #: id -> (old, new): MP task ids, or input sha256 of a changed local folder
    updated: dict[str, tuple[str | None, str]] = field(default_factory=dict)
    compacted: dict[str, int] = field(default_factory=dict)  # superseded/stale rows removed, per table


def plan_partitions(items: Sequence[Item], workers: int, max_points: int = PARTITION_POINTS,
                    max_materials: int = PARTITION_MATERIALS) -> list[list[Item]]:
    """Group items into partitions of bounded size, at least ~4 per worker so the cluster stays busy."""
    if not items:
        return []
    per = max(1, min(max_materials, math.ceil(len(items) / (4 * max(1, workers)))))
    parts: list[list[Item]] = []
    current: list[Item] = []
    points = 0
    for item in items:
        if current and (len(current) >= per or points + item.points > max_points):
            parts.append(current)
            current, points = [], 0
        current.append(item)
        points += item.points
    parts.append(current)
    return parts


def _row(rec: MaterialRecord, partition: str) -> dict[str, Any]:
    s = rec.structure
    return {
        C.COL_ID: rec.material_id, C.COL_SOURCE: rec.source, C.COL_TASK_ID: rec.task_id,
        C.COL_CALC_TYPE: rec.calc_type, C.COL_RUN_TYPE: rec.run_type,
        C.COL_DB_VERSION: rec.database_version, C.COL_FORMULA: s.composition.reduced_formula,
        C.COL_NSITES: len(s), C.COL_LATTICE: s.lattice.matrix.reshape(-1).tolist(),
        C.COL_SPECIES: [site.specie.symbol for site in s], C.COL_Z: [int(site.specie.Z) for site in s],
        C.COL_FRAC: s.frac_coords.reshape(-1).tolist(),
        C.COL_VOLUME: cell_volume(s.lattice.matrix), C.COL_PARTITION: partition, C.COL_FILES: list(rec.input_files),
        C.COL_INPUT_SHA: rec.input_sha256, C.COL_INPUT_STAT: rec.input_stat, C.COL_RETRIEVED: rec.retrieved_at,
        C.COL_GRID: None, C.COL_NPOINTS: 0, C.COL_SPIN: False, C.COL_NELECT: None, C.COL_MAGMOM: None,
        C.COL_RHO_OFFSET: -1, C.COL_MAG_OFFSET: -1, C.COL_AE_OFFSET: -1, C.COL_RHO_SHA: None,
        C.COL_MAG_SHA: None, C.COL_AE_SHA: None, C.COL_EFERMI: None, C.COL_HAS_DOS: False, C.COL_STATUS: "ok",
        C.COL_PROTOTYPE: rec.prototype,
        C.COL_DFT_CODE: rec.dft_code or ("vasp" if rec.source == "mp" else None),
        C.COL_DFT_SETTINGS: settings_json(rec.dft_settings) if rec.dft_settings else None,
    }


def commit_material(commit: PartitionCommit, rec: MaterialRecord) -> str | None:
    """Validate and append one material's arrays and rows to ``commit``; returns a flag reason or None.

    Everything is converted and checked before the first append, so a bad material writes nothing.
    """
    s = rec.structure
    volume = cell_volume(s.lattice.matrix)  # the same bits on every CPU (not numpy's BLAS-dependent det)
    name = f"{rec.material_id}"
    row = _row(rec, commit.partition)
    flags = []
    rho = mag = ae = None
    if rec.total is not None:
        rho = density_from_vasp(rec.total, volume, name, rec.expected_grid)
        if (why := sign_problem(rho, name) or grid_order_problem(s, rho)) is not None:
            raise GridError(why if why.startswith(name) else f"{name}: {why}")
        if rec.diff is not None:
            mag = density_from_vasp(rec.diff, volume, f"{name} (magnetisation)", rho.shape)
        n_el = electrons(rho, volume)
        row.update({C.COL_GRID: list(rho.shape), C.COL_NPOINTS: int(rho.size), C.COL_SPIN: mag is not None,
                    C.COL_NELECT: n_el, C.COL_MAGMOM: None if mag is None else electrons(mag, volume),
                    C.COL_RHO_SHA: sha256_array(rho), C.COL_MAG_SHA: None if mag is None else sha256_array(mag)})
        if (reason := electron_count_flag(n_el)) is not None:
            flags.append(reason)
    if rec.ae_total is not None:
        ae = density_from_vasp(rec.ae_total, volume, f"{name} (AECCAR0+AECCAR2)")
        if rho is not None and ae.shape != rho.shape:
            raise ValueError(f"{name}: AECCAR grid {ae.shape} differs from CHGCAR grid {rho.shape}")
        if rho is None:
            row[C.COL_GRID], row[C.COL_NPOINTS] = list(ae.shape), int(ae.size)
        row[C.COL_AE_SHA] = sha256_array(ae)
    dos_row = None
    if rec.dos is not None:
        dos = rec.dos
        dos.validate()
        dens = np.asarray(dos.densities, dtype=np.float64)
        dos_row = {C.COL_ID: rec.material_id, "efermi": float(dos.efermi), "natoms": int(dos.natoms),
                   "spin_polarized": bool(dos.spin_polarized),
                   "energies": np.asarray(dos.energies, dtype=np.float64).tolist(),
                   "dos_up": dens[0].tolist(), "dos_down": dens[1].tolist() if dens.shape[0] > 1 else None}
        row.update({C.COL_EFERMI: float(dos.efermi), C.COL_HAS_DOS: True})
    # all checks passed: write
    if rho is not None:
        row[C.COL_RHO_OFFSET] = commit.append(C.RHO, rho)
    if mag is not None:
        row[C.COL_MAG_OFFSET] = commit.append(C.MAG, mag)
    if ae is not None:
        row[C.COL_AE_OFFSET] = commit.append(C.RHO_AE, ae)
    if dos_row is not None:
        commit.add_extra(C.DOS_RAW, dos_row)
    if rho is not None and (aug := augmentation_to_json(rec.data_aug)) is not None:
        commit.add_extra(C.AUGMENTATION, {C.COL_ID: rec.material_id, "data_aug": aug})
    if rec.paw_matrices:
        commit.add_extra(C.PAW_MATRICES, {C.COL_ID: rec.material_id, "nspins": int(rec.paw_matrices[0].shape[0]),
                                          "ni": [int(D.shape[1]) for D in rec.paw_matrices],
                                          "D": [D.ravel().tolist() for D in rec.paw_matrices]})
    if flags:
        row[C.COL_STATUS] = "flagged: " + "; ".join(flags)
    commit.add_row(row)
    return row[C.COL_STATUS] if flags else None


def ingest_partition(url: str, partition: str, items: Sequence[Item], mp: MPSource | None,
                     database_version: str | None = None) -> dict[str, Any]:
    """The Dask task: read, validate and commit one partition. Never raises for a bad material.

    MP items share one client for the whole partition; when it cannot be opened they all fail with its reason."""
    commit = PartitionCommit(url, partition)
    done, failed, flagged = [], {}, {}
    with contextlib.ExitStack() as stack:
        mpr, mpr_error, tasks = None, None, {}
        mp_ids = [item.material_id for item in items if item.calc is None]
        if mp is not None and mp_ids:
            try:
                mpr = stack.enter_context(mp.client())
                tasks = mp.current_tasks(mpr, mp_ids)  # one batched lookup for the partition
            except SourceError as exc:  # no client: every MP item fails; no batch: each looks its task up
                mpr_error = None if mpr is not None else exc
        for item in items:
            rec = None
            try:
                check_fits_in_memory(item)
                if item.calc is not None:
                    rec = vasp_dir.load(item.calc)
                elif mpr_error is not None:
                    raise mpr_error
                else:
                    rec = mp.fetch(item.material_id, mpr, database_version, tasks.get(item.material_id))
                flag = commit_material(commit, rec)
                done.append(item.material_id)
                if flag:
                    flagged[item.material_id] = flag
            except Exception as exc:  # noqa: BLE001 - one bad material must not stop the run: record it, go on
                text = " ".join(str(exc).split())
                known = isinstance(exc, SourceError | ValueError | OSError | EOFError | KeyError)
                reason = text if known and text else f"{type(exc).__name__}: {text}"
                if mp is not None:
                    reason = mp.api_key.scrub(reason)
                commit.add_failure(item.material_id, "ingest", reason)
                failed[item.material_id] = reason
                log.debug("%s failed: %s", item.material_id, reason)
            del rec
    commit.finish()
    return {"partition": partition, "committed": done, "failed": failed, "flagged": flagged}


def run_ingest(store: str, *, from_dir: str | Sequence[str] | None = None, mp_ids: Sequence[str] | None = None,
               api_key: str | None = None, client_factory: Callable | None = None, workers: int = 2,
               scheduler: str | None = None, processes: bool = True, progress: bool = True,
               client=None, only: Collection[str] | None = None) -> IngestReport:
    """Ingest local folders and/or MP ids into ``store`` (created if missing); resume is the default.

    With MP ids the driver opens one MPRester for the run: it reads the database version (recorded on every row
    of the run) and checks committed ids for newer charge densities; each partition task opens its own. When the
    driver cannot open one (no key, bad key, no network), the MP ids not yet committed fail with that one reason.
    ``client``: an open ``distributed.Client`` to use instead of starting one (``workers``/``scheduler``).
    ``only``: ingest just these material ids of ``from_dir`` (e.g. a published version's inputs in a folder
    that has grown since); ids absent from the folder are reported as failed.
    """
    items, rejected = collect_items(from_dir, mp_ids)
    if only is not None:
        wanted = set(only)
        found = {it.material_id for it in items}
        items = [it for it in items if it.material_id in wanted]
        rejected = {m: why for m, why in rejected.items() if m in wanted}
        where = ", ".join(from_dir_roots(from_dir))
        rejected.update({m: f"{m}: not found under {where}" for m in sorted(wanted - found - set(rejected))})
    mp = None
    if any(it.calc is None for it in items):
        mp = MPSource(api_key=Secret.from_env(api_key), client_factory=client_factory or default_client)
    report = IngestReport(failed=dict(rejected))
    with locked(store, owner="chgdata ingest") as loc:
        report.orphans_removed = remove_orphans(loc)
        have = committed_ids(store)
        db_version = None
        if mp is not None:
            try:
                with mp.client() as mpr:
                    db_version = mp.database_version(mpr)
                    log.info("Materials Project database version %s", db_version)
                    report.updated = changed_mp_materials(read_table(loc, C.INDEX), [
                        it for it in items if it.calc is None and it.material_id in have], mp, mpr)
            except SourceError as exc:
                for it in items:
                    if it.calc is None and it.material_id not in have:
                        rejected[it.material_id] = str(exc)
                if any(it.calc is None and it.material_id in have for it in items):
                    log.warning("%s; committed MP materials kept as they are", exc)
                items = [it for it in items if it.calc is not None or it.material_id in have]
                report.failed.update(rejected)
        if rejected:
            reject = PartitionCommit(store, new_partition_name("rejected"))
            for mid, why in rejected.items():
                reject.add_failure(mid, "ingest", why)
            reject.finish()
        report.updated.update(changed_local_materials(read_table(loc, C.INDEX), [
            it for it in items if it.calc is not None and it.material_id in have]))
        have -= set(report.updated)
        report.skipped = [it.material_id for it in items if it.material_id in have]
        todo = [it for it in items if it.material_id not in have]
        parts = plan_partitions(todo, workers)
        report.partitions = len(parts)
        log.info("%d materials to ingest in %d partitions (%d already committed, %d changed since ingested)",
                 len(todo), len(parts), len(report.skipped), len(report.updated))
        if parts:
            calls = [(store, new_partition_name(), part, mp, db_version) for part in parts]
            with contextlib.ExitStack() as stack:
                if client is None:
                    client = stack.enter_context(dask_client(workers, scheduler, processes=processes))
                for res in run_tasks(client, ingest_partition, calls, "ingest", weight=lambda c: len(c[2]),
                                     show=progress):
                    report.committed += res["committed"]
                    report.failed.update(res["failed"])
                    report.flagged.update(res["flagged"])
        report.compacted = finish_stage(loc)
        index = read_table(loc, C.INDEX)
        column = (lambda name: []) if index is None else (
            lambda name: index.column(name).to_pylist() if name in index.column_names else [])
        card = read_card(loc)
        update_card(loc, provenance={
            "code_version": chgdata.__version__,
            "created": card.get("provenance", {}).get("created", utcnow()), "updated": utcnow(),
            "sources": sorted(set(column(C.COL_SOURCE))),
            "database_versions": sorted({v for v in column(C.COL_DB_VERSION) if v}
                                        | set(card.get("provenance", {}).get("database_versions") or []))},
                    dft=dft_card_section(column(C.COL_DFT_CODE), column(C.COL_DFT_SETTINGS)))
        consolidate(loc)
    return report
