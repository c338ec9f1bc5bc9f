"""A real dask.distributed scheduler and worker on loopback: ingest through --scheduler equals a local run."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chgdata import contract as C
from chgdata import open_dataset
from tests.conftest import GPAW, need_shared

pytestmark = pytest.mark.cluster


@pytest.fixture()
def loopback_cluster(tmp_path):
    bindir = Path(sys.executable).parent
    sched_file = tmp_path / "scheduler.json"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = [subprocess.Popen([str(bindir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
                               "--no-dashboard", "--scheduler-file", str(sched_file)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)]
    try:
        deadline = time.time() + 60
        while not sched_file.exists() and time.time() < deadline:
            time.sleep(0.2)
        address = json.loads(sched_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        for i in range(2):
            procs.append(subprocess.Popen([str(bindir / "dask"), "worker", address, "--nthreads", "1",
                                           "--nworkers", "1", "--no-dashboard", "--name", f"w{i}",
                                           "--host", "127.0.0.1"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env))
        from distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def _checksums(store):
    return {r[C.COL_ID]: (r[C.COL_RHO_SHA], r[C.COL_MAG_SHA]) for r in open_dataset(store).index.to_pylist()}


def test_ingest_through_scheduler_matches_local(tmp_path, loopback_cluster, gpaw_store):
    need_shared()
    calcs = tmp_path / "calcs"
    ids = sorted(p.name for p in GPAW.iterdir() if p.is_dir())[:12]
    for mid in ids:
        shutil.copytree(GPAW / mid, calcs / mid)
    store = tmp_path / "s"
    res = subprocess.run([str(Path(sys.executable).parent / "chgdata"), "ingest", "--from-dir", str(calcs),
                          "--store", str(store), "--scheduler", loopback_cluster, "-q"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"committed {len(ids)}" in res.stdout
    remote = _checksums(store)
    local = _checksums(gpaw_store)
    assert set(remote) == set(ids)
    assert all(remote[mid] == local[mid] for mid in ids)


# ---- the whole pipeline through --scheduler (issue 11) -----------------------------------------------------

#: A small subset of the shared GPAW data used by the end-to-end comparisons (cluster and object store).
SUBSET = 8


def copy_subset(dest: Path, n: int = SUBSET) -> list[str]:
    """Copy the first ``n`` GPAW calculation folders to ``dest`` (the input tree of a run); returns their ids."""
    ids = sorted(p.name for p in GPAW.iterdir() if p.is_dir())[:n]
    for mid in ids:
        shutil.copytree(GPAW / mid, dest / mid)
    return ids


def all_checksums(store) -> dict[str, dict]:
    """Checksums of every stored array: rho/mag (structures.parquet), saed/delta (delta.parquet), dos (dos.parquet)."""
    ds = open_dataset(store)
    out: dict[str, dict] = {"index": _checksums(store)}
    delta = ds.table(C.DELTA_INDEX)
    out["delta"] = {} if delta is None else {r[C.COL_ID]: (r["saed_sha256"], r["delta_sha256"], r["reference_id"])
                                             for r in delta.to_pylist()}
    dos = ds.table(C.DOS_INDEX)
    out["dos"] = {} if dos is None else {r[C.COL_ID]: r["dos_sha256"] for r in dos.to_pylist()}
    return out


def run_pipeline(store: str, calcs: Path, *, client=None, scheduler: str | None = None, reference: str | None = None,
                 workers: int = 2, processes: bool = True) -> None:
    """ingest → build-delta → build-dos through the library entry points (the CLI's ``chgdata run`` path)."""
    from chgdata.pipelines.cluster import dask_client
    from chgdata.pipelines.delta import run_build_delta
    from chgdata.pipelines.dos import run_build_dos
    from chgdata.pipelines.ingest import run_ingest

    with contextlib.ExitStack() as stack:  # one cluster for the three stages, as `chgdata run` does
        if client is None:
            client = stack.enter_context(dask_client(workers, scheduler, processes=processes))
        ing = run_ingest(store, from_dir=str(calcs), client=client, progress=False)
        assert not ing.failed, ing.failed
        delta = run_build_delta(store, reference=reference, client=client, progress=False)
        assert not delta.failed, delta.failed
        dos = run_build_dos(store, client=client, progress=False)
        assert not dos.failed, dos.failed


@pytest.fixture(scope="session")
def local_subset(tmp_path_factory):
    """The reference: the subset run on a local process cluster into a local directory; (calcs, store, reference
    table path). Other runs reuse the fitted reference so saed/delta are comparable bit for bit (the fit sums
    partitions in completion order, which changes the last bits)."""
    need_shared()
    from chgdata.contract import REFERENCE_FILE

    base = tmp_path_factory.mktemp("subset")
    calcs = base / "calcs"
    copy_subset(calcs)
    store = str(base / "local")
    run_pipeline(store, calcs, workers=2, processes=False)
    return calcs, store, str(Path(store) / REFERENCE_FILE)


def test_whole_pipeline_through_scheduler_matches_local(tmp_path, loopback_cluster, local_subset):
    calcs, local, reference = local_subset
    store = str(tmp_path / "remote")
    run_pipeline(store, calcs, scheduler=loopback_cluster, reference=reference)
    got, want = all_checksums(store), all_checksums(local)
    assert len(want["index"]) == SUBSET and len(want["delta"]) == SUBSET and len(want["dos"]) == SUBSET
    assert got == want
