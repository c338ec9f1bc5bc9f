"""A real dask.distributed scheduler and worker on loopback: ingest through --scheduler equals a local run."""

from __future__ import annotations

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
