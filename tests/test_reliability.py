"""Reliability: kill/resume (reduced form of bench/reliability.py), one writer per store with two real processes,
and a dead process's lock taken over."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from chgdata import contract as C
from tests.conftest import GPAW, REPO, need_shared


def _bench():
    spec = importlib.util.spec_from_file_location("bench_reliability", REPO / "bench" / "reliability.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_kill_resume_reduced(tmp_path):
    """5 SIGKILLs of the CLI's process group at seeded random points over ingest, build-delta and build-dos on
    10 gpaw materials; the resumed store equals an uninterrupted one."""
    need_shared()
    res = _bench().harness(kills=5, seed=3, workers=1, sets=("gpaw",), subset=10, work=tmp_path, max_trials=3,
                           echo=lambda *a: None)
    assert res["kills"] == 5, res
    assert res["materials"] == 10
    for key in ("lost", "extra", "duplicated", "checksum_mismatches", "failed_set_differs", "orphans",
                "verify_problems", "lock_left", "surviving_processes"):
        assert res[key] == 0, (key, res)
    assert res["locks_taken_over"] >= res["locks_left_by_kills"] - 1  # the last kill's lock: taken by its rerun


def _cli(stage, store, *extra):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    return [sys.executable, "-m", "chgdata.cli.main", stage, "--store", str(store), "--workers", "1", "-q",
            *extra], env


def _hold_lock_then(first: list[str], env, store, second: list[str]) -> subprocess.CompletedProcess:
    """Start ``first``, freeze its process group as soon as it holds the store lock, run ``second`` to the end,
    then let ``first`` finish (it must succeed)."""
    lock = store / C.LOCK
    proc = subprocess.Popen(first, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if json.loads(lock.read_text())["pid"] == proc.pid:
                    break
            except (FileNotFoundError, ValueError, KeyError):
                pass
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        else:
            pytest.fail("the first writer never took the lock")
        os.killpg(proc.pid, signal.SIGSTOP)
        try:
            second_res = subprocess.run(second, env=env, capture_output=True, text=True, timeout=120)
        finally:
            os.killpg(proc.pid, signal.SIGCONT)
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-2000:]
        return second_res
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def small_store(tmp_path):
    need_shared()
    from chgdata.pipelines.ingest import run_ingest

    for m in ("gpaw-0001", "gpaw-0002", "gpaw-0003", "gpaw-0004"):
        shutil.copytree(GPAW / m, tmp_path / "calcs" / m)
    store = tmp_path / "store"
    run_ingest(str(store), from_dir=str(tmp_path / "calcs"), workers=1, processes=False, progress=False)
    for m in ("gpaw-0006", "gpaw-0008"):  # more work for the ingest that holds the lock
        shutil.copytree(GPAW / m, tmp_path / "calcs" / m)
    return store


def test_second_writer_refused_ingest_while_build_delta_runs(small_store):
    first, env = _cli("build-delta", small_store)
    second, _ = _cli("ingest", small_store, "--from-dir", str(small_store.parent / "calcs"))
    res = _hold_lock_then(first, env, small_store, second)
    assert res.returncode == 1
    err = " ".join(res.stderr.split())
    assert "is locked by 'chgdata build-delta'" in err and "Traceback" not in err, err
    from chgdata.verify import verify_store

    assert verify_store(small_store).ok


def test_second_writer_refused_build_delta_while_ingest_runs(small_store):
    first, env = _cli("ingest", small_store, "--from-dir", str(small_store.parent / "calcs"))
    second, _ = _cli("build-delta", small_store)
    res = _hold_lock_then(first, env, small_store, second)
    assert res.returncode == 1
    err = " ".join(res.stderr.split())
    assert "is locked by 'chgdata ingest'" in err and "Traceback" not in err, err
    from chgdata import open_dataset

    assert len(open_dataset(small_store)) == 6 and not (small_store / C.LOCK).exists()


def test_lock_of_a_dead_process_is_taken_over(small_store):
    from chgdata.pipelines.dos import run_build_dos

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (small_store / C.LOCK).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(),
                                                  "owner": "chgdata ingest", "since": "x", "token": "t"}))
    report = run_build_dos(str(small_store), workers=1, processes=False, progress=False)
    assert len(report.committed) == 4 and not (small_store / C.LOCK).exists()
