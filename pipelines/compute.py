"""``chgdata compute``: GPAW calculations on Dask, one task per structure, into calculation folders.

Design: the driver takes an exclusive ``flock`` on ``OUT/.compute.lock`` (released by the kernel when the run
dies, so a killed run never blocks the next), removes the ``.tmp-*`` folders a killed run left, refuses what must
not or cannot be computed (reserved compositions, overlapping atoms, elements without a PAW setup, cells over
``max_atoms``), and skips finished folders (``meta.json`` present) and recorded failures. It keeps ``workers``
tasks in flight (so a wall-clock budget stops new work without cancelling running work); each task runs
``python -m chgdata.dft.worker`` in a subprocess of its own (one BLAS thread, killed with its Dask worker,
killed after ``timeout`` s). Finished folders are renamed into place by the worker; the driver appends failures
to ``failures.csv`` and rebuilds ``manifest.csv`` (columns of ``../shared/data/gpaw``) after each result.
"""

from __future__ import annotations

import csv
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from chgdata.pipelines.cluster import dask_client
from distributed import as_completed
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from chgdata.candidates import Candidate
from chgdata.dft.calculation import is_finished
from chgdata.geometry import overlap_reason
from chgdata.reserved import is_reserved

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["id", "formula", "natoms", "nx", "ny", "nz", "spin", "magmom", "efermi", "seconds"]
FAILURE_COLUMNS = ["id", "prototype", "variant", "natoms", "reason", "seconds"]


class ComputeLocked(RuntimeError):
    """Another ``chgdata compute`` is writing to the same folder."""


@dataclass
class ComputeReport:
    """What one run did: ids finished now, already there, refused (with reasons) and failed (with reasons)."""

    out: Path
    finished: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    not_started: list[str] = field(default_factory=list)
    seconds: float = 0.0


def refusal(c: Candidate, max_atoms: int) -> str | None:
    """Why ``c`` must not or cannot be computed, or None."""
    if is_reserved(c.reduced_formula):
        return f"reserved composition {c.reduced_formula} (RESERVED-FORMULAS.txt: kept for external evaluation)"
    if len(c.structure) > max_atoms:
        return f"{len(c.structure)} atoms > --max-atoms {max_atoms}"
    if why := overlap_reason(c.structure):
        return why
    from chgdata.dft.settings import setup_valence

    for el in c.structure.composition:
        try:
            setup_valence(el.symbol)
        except KeyError as exc:
            return str(exc.args[0])
    return None


def run_worker(entry: dict, out: str, timeout_s: float) -> dict:
    """Dask task: one calculation in a subprocess; ``{"id", "ok", "reason", "result", "seconds"}``."""
    t0 = time.time()
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    try:
        proc = subprocess.run([sys.executable, "-m", "chgdata.dft.worker", out], input=json.dumps(entry),
                              capture_output=True, text=True, timeout=timeout_s, env=env,
                              preexec_fn=_die_with_parent)
    except subprocess.TimeoutExpired:
        shutil.rmtree(Path(out) / f".tmp-{entry['id']}", ignore_errors=True)
        return {"id": entry["id"], "ok": False, "reason": f"timeout after {timeout_s:.0f} s",
                "seconds": time.time() - t0}
    lines = proc.stdout.splitlines()
    result = [ln[7:] for ln in lines if ln.startswith("RESULT ")]
    if proc.returncode == 0 and result:
        return {"id": entry["id"], "ok": True, "result": json.loads(result[-1]), "seconds": time.time() - t0}
    failed = [ln[7:] for ln in lines if ln.startswith("FAILED ")]
    tail = failed[-1] if failed else " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-2:])
    return {"id": entry["id"], "ok": False, "reason": f"exit {proc.returncode}: {tail[-300:]}",
            "seconds": time.time() - t0}


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the Dask worker that started it dies (Linux prctl)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def recorded_failures(out: Path) -> dict[str, str]:
    path = out / "failures.csv"
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        return {row["id"]: row["reason"] for row in csv.DictReader(f)}


def _append_failure(out: Path, c: Candidate, reason: str, seconds: float) -> None:
    path = out / "failures.csv"
    new = not path.is_file()
    with open(path, "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(FAILURE_COLUMNS)
        w.writerow([c.id, c.prototype, c.variant, len(c.structure), reason, f"{seconds:.0f}"])


def write_manifest(out: Path) -> int:
    """Rebuild ``manifest.csv`` from the finished folders (atomic replace); the number of rows."""
    rows = []
    for folder in sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not is_finished(folder):
            continue
        m = json.loads((folder / "meta.json").read_text())
        rows.append([m["id"], m["formula"], m["natoms"], *m["grid"], int(m["spin"]), f"{m['total_magmom_muB']:.4f}",
                     f"{m['efermi_eV']:.4f}", f"{m['seconds']:.1f}"])
    tmp = out / ".manifest.csv.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(MANIFEST_COLUMNS)
        w.writerows(rows)
    os.replace(tmp, out / "manifest.csv")
    return len(rows)


def _lock(out: Path):
    fh = open(out / ".compute.lock", "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise ComputeLocked(f"{out} is being written by another chgdata compute (lock {out / '.compute.lock'}); "
                            "wait for it or give another --out") from None
    return fh


def run_compute(candidates: Sequence[Candidate], out: str | Path, workers: int = 2, scheduler: str | None = None,
                timeout_s: float = 900.0, budget_min: float | None = None, limit: int | None = None,
                max_atoms: int = 16, retry_failed: bool = False, progress: bool = True) -> ComputeReport:
    """Compute ``candidates`` into ``out`` (see the module docstring); resumable, never a half folder."""
    from chgdata.dft.settings import require_gpaw

    require_gpaw()
    t0 = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = ComputeReport(out)
    lock = _lock(out)
    try:
        for stale in out.glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        failed_before = {} if retry_failed else recorded_failures(out)
        todo = []
        for c in candidates:
            if limit is not None and len(todo) >= limit:
                break
            if is_finished(out / c.id):
                report.existing.append(c.id)
            elif c.id in failed_before:
                report.failed[c.id] = f"failed in an earlier run: {failed_before[c.id]}"
            elif (why := refusal(c, max_atoms)) is not None:
                report.refused[c.id] = why
            else:
                todo.append(c)
        for cid, why in report.refused.items():
            log.warning("refused %s: %s", cid, why)
        if todo:
            _run(todo, out, report, workers, scheduler, timeout_s, budget_min, t0, progress)
        write_manifest(out)
    finally:
        lock.close()
    report.seconds = time.time() - t0
    return report


def _run(todo: list[Candidate], out: Path, report: ComputeReport, workers: int, scheduler: str | None,
         timeout_s: float, budget_min: float | None, t0: float, progress: bool) -> None:
    by_id = {c.id: c for c in todo}
    queue = list(todo)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with dask_client(workers, scheduler) as client, Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("GPAW", total=len(todo))
        slots = max(workers, sum(client.nthreads().values()))

        def submit():
            c = queue.pop(0)
            return client.submit(run_worker, c.as_entry(), str(out), timeout_s, key=f"gpaw-{c.id}", pure=False)

        pool = as_completed([submit() for _ in range(min(slots, len(queue)))])
        for future in pool:
            res = future.result()
            c = by_id[res["id"]]
            if res["ok"]:
                report.finished.append(c.id)
                r = res["result"]
                log.info("done %s: %d atoms, %d SCF iterations, %.0f s", c.id, r["natoms"], r["scf_iterations"],
                         r["seconds"])
            else:
                report.failed[c.id] = res["reason"]
                _append_failure(out, c, res["reason"], res["seconds"])
                log.warning("failed %s: %s", c.id, res["reason"])
            write_manifest(out)
            bar.advance(task)
            over = budget_min is not None and time.time() - t0 > 60 * budget_min
            if queue and not over:
                pool.add(submit())
        report.not_started = [c.id for c in queue]
