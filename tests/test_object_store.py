"""Stores on an object store: ingest, build-delta and build-dos to ``s3://bucket/...`` on a real S3-protocol server
(moto) on loopback, read back with :func:`chgdata.open_dataset`, equal to a local run; a SIGKILLed ingest resumes.

Credentials and the endpoint come only from the environment, the way s3fs/botocore read them
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL_S3``); nothing is passed to chgdata.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from chgdata import contract as C
from chgdata import open_dataset
from chgdata.store import Location, orphans, sha256_array
from tests import test_cluster
from tests.test_cluster import SUBSET, all_checksums, run_pipeline

local_subset = test_cluster.local_subset  # the fixture (session-scoped: one local reference run)

BUCKET = "chgdata-test"


@pytest.fixture(scope="module")
def s3_endpoint():
    """A moto S3 server on a free loopback port, with dummy credentials in the environment; yields the endpoint."""
    pytest.importorskip("s3fs")
    server_mod = pytest.importorskip("moto.server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL_S3": endpoint}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    try:
        s3fs.S3FileSystem().mkdir(BUCKET)
        yield endpoint
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


def _s3_keys(url: str) -> list[str]:
    loc = Location.parse(url)
    loc.fs.invalidate_cache()
    return loc.fs.find(loc.root) if loc.fs.exists(loc.root) else []


def test_pipeline_on_s3_matches_local_run(s3_endpoint, local_subset):
    calcs, local, reference = local_subset
    url = f"s3://{BUCKET}/gpaw"
    run_pipeline(url, calcs, workers=2, processes=True, reference=reference)  # worker processes write to S3
    assert all_checksums(url) == all_checksums(local)
    ds, lds = open_dataset(url), open_dataset(local)
    assert ds.card["provenance"]["sources"] == ["gpaw"] and ds.card["saed"]["materials"] == SUBSET
    for mid in ds.material_ids:  # the bytes read back from S3 are the stored ones
        rho = ds.density(mid).rho
        assert sha256_array(rho) == ds.row(mid)[C.COL_RHO_SHA]
        np.testing.assert_array_equal(rho, lds.density(mid).rho)
    ids, win, energies = ds.dos_windows()
    lids, lwin, _ = lds.dos_windows(ids)
    np.testing.assert_array_equal(win, lwin)
    assert not orphans(ds.loc)
    keys = _s3_keys(url)
    assert not any(k.endswith(C.LOCK) for k in keys)  # the lock is released
    # a rerun resumes: nothing to do, nothing rewritten
    run_pipeline(url, calcs, workers=1, processes=False, reference=reference)
    assert _s3_keys(url) == keys


def test_killed_ingest_on_s3_resumes(s3_endpoint, local_subset, tmp_path):
    calcs, local, _ = local_subset
    url = f"s3://{BUCKET}/killed"
    exe = str(Path(sys.executable).parent / "chgdata")
    cmd = [exe, "ingest", "--from-dir", str(calcs), "--store", url, "--workers", "1", "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 120
        committed: list[str] = []
        while time.time() < deadline and proc.poll() is None:
            committed = [k for k in _s3_keys(url) if "/structures.parquet/" in k]
            if committed:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "ingest finished before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert 0 < len(committed) < SUBSET
    assert any(k.endswith(C.LOCK) for k in _s3_keys(url))  # the dead run's lock is left behind
    before = open_dataset(url)
    assert 0 < len(before) < SUBSET and len(set(before.material_ids)) == len(before)
    # the rerun takes over the dead process's lock, sweeps its debris and finishes the rest, without duplicates
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"already in store {len(before)}" in res.stdout
    after = open_dataset(url)
    assert sorted(after.material_ids) == sorted(set(after.material_ids)) and len(after) == SUBSET
    assert all_checksums(url)["index"] == all_checksums(local)["index"]
    assert not orphans(after.loc)
    assert not any(k.endswith(C.LOCK) for k in _s3_keys(url))


def test_object_store_lock_is_a_conditional_create(s3_endpoint, monkeypatch):
    """Two writers that both saw no lock: S3's If-None-Match create lets exactly one of them through."""
    from chgdata.store import StoreError, StoreLock

    loc = Location.parse(f"s3://{BUCKET}/lock-race")
    first, second = StoreLock(loc, "first"), StoreLock(loc, "second")
    first.acquire()
    with pytest.raises(StoreError, match="locked by 'first'"):
        second.acquire()  # sees the live holder
    monkeypatch.setattr(StoreLock, "_holder", lambda self: None)  # as if it had looked just before `first` wrote
    with pytest.raises(StoreError, match="locked by another writer"):
        second.acquire()
    monkeypatch.undo()
    assert json.loads(loc.fs.cat_file(first.path))["owner"] == "first"  # the holder's lock is untouched
    first.release()
    second.acquire()
    second.release()
    assert not loc.fs.exists(first.path)


def test_object_store_lock_survives_a_lost_reply(s3_endpoint, monkeypatch):
    """The lock PUT lands but its reply is lost: the retry gets 412 (FileExistsError) or the retries run out
    (OSError). Reading the token back shows the lock is ours (it was refused as 'another writer' and left
    behind); a create that never landed is one clear error and leaves no lock."""
    from chgdata.store import StoreError, StoreLock

    loc = Location.parse(f"s3://{BUCKET}/lock-lost-reply")
    real = loc.fs.pipe_file
    for after in (FileExistsError("412 Precondition Failed"), OSError("connection reset")):
        def landed_then_lost(path, value, *a, _exc=after, **kw):
            real(path, value, *a, **kw)
            raise _exc

        monkeypatch.setattr(loc.fs, "pipe_file", landed_then_lost)
        lock = StoreLock(loc, "lost reply")
        lock.acquire()
        monkeypatch.undo()
        assert json.loads(loc.fs.cat_file(lock.path))["token"] == lock.token
        lock.release()
        assert not loc.fs.exists(lock.path)

    def never_landed(*a, **kw):
        raise OSError("connection reset")

    monkeypatch.setattr(loc.fs, "pipe_file", never_landed)
    with pytest.raises(StoreError, match=r"could not create the lock s3://.*\.chgdata\.lock \(OSError: connection "
                                         r"reset\); rerun when the object store answers"):
        StoreLock(loc, "x").acquire()
    monkeypatch.undo()
    assert not loc.fs.exists(loc.path(C.LOCK))


def test_pipeline_through_a_faulty_object_store_recovers(s3_endpoint, local_subset):
    """`chgdata run` to S3 through a proxy that answers 503 SlowDown / 500, resets connections and loses replies
    of requests the store carried out (tests/fault_proxy.py, seeded): the run either completes or stops with one
    line; after the faults are gone a rerun completes, verify is clean and the checksums equal a local run's."""
    from chgdata.verify import verify_store
    from tests.fault_proxy import FaultProxy

    calcs, local, reference = local_subset
    url = f"s3://{BUCKET}/faulty"
    exe = str(Path(sys.executable).parent / "chgdata")
    cmd = [exe, "run", "--from-dir", str(calcs), "--store", url, "--reference", reference, "-w", "2", "-q"]
    rates = {"slowdown": 0.06, "error": 0.03, "reset": 0.03, "lost_reply": 0.03}
    with FaultProxy(s3_endpoint, rates, seed=7) as proxy:
        env = {**os.environ, "AWS_ENDPOINT_URL_S3": proxy.endpoint}
        env.pop("DASK_SCHEDULER_ADDRESS", None)
        faulty = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    print("faulty run:", faulty.returncode, proxy.counts, (faulty.stderr.strip().splitlines() or [""])[-1][:300])
    assert sum(v for k, v in proxy.counts.items() if k != "forwarded") > 10, proxy.counts
    assert faulty.returncode in (0, 1, 3), faulty.stderr[-2000:]
    assert "Traceback" not in faulty.stderr, faulty.stderr[-3000:]
    if faulty.returncode == 1:
        assert len([ln for ln in faulty.stderr.splitlines() if ln.startswith("error:")]) == 1, faulty.stderr
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert verify_store(url).ok
    assert all_checksums(url) == all_checksums(local)
    assert not any(k.endswith(C.LOCK) for k in _s3_keys(url))
