"""Faults of the machine, not the input: a disk that fills up and a Dask scheduler killed mid-run. Each ends the
command with exit 1 and one line naming the cause and what to do (no traceback), and once the fault is gone a rerun
finishes with `verify` clean and the same checksums as an unfaulted run."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import GPAW, need_shared
from tests.test_cluster import all_checksums


def _link(calcs: Path, ids) -> None:
    for mid in ids:
        (calcs / mid).mkdir(parents=True)
        for f in (GPAW / mid).iterdir():
            (calcs / mid / f.name).symlink_to(f)


def _chgdata(*args, timeout=300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DASK_SCHEDULER_ADDRESS", "MP_API_KEY")}
    return subprocess.run([sys.executable, "-m", "chgdata", *args], env={**env, "COLUMNS": "200"},
                          capture_output=True, text=True, timeout=timeout)


def _one_error_line(stderr: str) -> str:
    errors = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in stderr and "Compute Failed" not in stderr, stderr[-3000:]
    return errors[0]


def _verified_like(store: Path, reference: Path) -> None:
    from chgdata.verify import verify_store

    assert verify_store(store).ok
    assert all_checksums(store) == all_checksums(reference)


IDS = sorted(p.name for p in GPAW.iterdir() if p.is_dir())[:12]


@pytest.fixture(scope="module")
def calcs_and_reference(tmp_path_factory):
    need_shared()
    root = tmp_path_factory.mktemp("faults")
    _link(root / "calcs", IDS)
    proc = _chgdata("run", "--from-dir", str(root / "calcs"), "--store", str(root / "reference"), "-w", "1", "-q")
    assert proc.returncode == 0, proc.stderr
    return root / "calcs", root / "reference"


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    """A size-limited filesystem at ``path`` (skips where mounting is not allowed)."""
    path.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_disk_full_is_one_line_and_a_rerun_with_space_completes(tmp_path, calcs_and_reference):
    calcs, reference = calcs_and_reference
    with tmpfs(tmp_path / "small", "300k") as small:
        store = small / "store"
        proc = _chgdata("run", "--from-dir", str(calcs), "--store", str(store), "-w", "1", "-q")
        assert proc.returncode == 1
        line = _one_error_line(proc.stderr)
        assert "no space left on the device" in line and "then rerun" in line, line
        subprocess.run(["mount", "-o", "remount,size=16m", str(small)], check=True)
        proc = _chgdata("run", "--from-dir", str(calcs), "--store", str(store), "-w", "1", "-q")
        assert proc.returncode == 0, proc.stderr
        _verified_like(store, reference)


def _scheduler(tmp_path: Path, name: str, workers: int = 1):
    """An external `dask scheduler` and ``workers`` workers; returns (address, [scheduler, workers...])."""
    bindir = Path(sys.executable).parent
    sched_file = tmp_path / f"{name}.json"
    procs = [subprocess.Popen([str(bindir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
                               "--no-dashboard", "--scheduler-file", str(sched_file)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)]
    deadline = time.time() + 60
    while not sched_file.exists() and time.time() < deadline:
        time.sleep(0.1)
    address = json.loads(sched_file.read_text())["address"]
    for _ in range(workers):
        procs.append(subprocess.Popen([str(bindir / "dask"), "worker", address, "--nthreads", "1", "--nworkers",
                                       "1", "--no-dashboard", "--host", "127.0.0.1"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
    from distributed import Client

    with Client(address, timeout="30s") as client:
        client.wait_for_workers(workers, timeout=60)
    return address, procs


def _stop(procs) -> None:
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=30)


@pytest.mark.cluster
def test_scheduler_killed_mid_run_is_one_line_and_a_rerun_completes(tmp_path, calcs_and_reference):
    calcs, reference = calcs_and_reference
    store = tmp_path / "store"
    address, procs = _scheduler(tmp_path, "first")
    try:
        cmd = [sys.executable, "-m", "chgdata", "run", "--from-dir", str(calcs), "--store", str(store),
               "--scheduler", address, "-q"]
        run = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while time.time() < deadline and run.poll() is None and not (store / "structures.parquet").exists():
            time.sleep(0.05)
        assert run.poll() is None, "the run ended before the scheduler could be killed"
        os.killpg(procs[0].pid, signal.SIGKILL)  # the scheduler, mid-run
        _, stderr = run.communicate(timeout=180)
        assert run.returncode == 1, stderr
        line = _one_error_line(stderr)
        assert "lost the Dask cluster" in line and "rerun" in line, line
    finally:
        _stop(procs)
    address, procs = _scheduler(tmp_path, "second")
    try:
        proc = _chgdata("run", "--from-dir", str(calcs), "--store", str(store), "--scheduler", address, "-q")
        assert proc.returncode == 0, proc.stderr
    finally:
        _stop(procs)
    _verified_like(store, reference)


@pytest.mark.cluster
def test_a_worker_killed_mid_run_loses_nothing(tmp_path, calcs_and_reference):
    """One of two external workers SIGKILLed while `chgdata run` is ingesting: Dask reruns its tasks on the other
    (a killed task leaves no visible half material); the run completes, or stops with one line and the rerun
    completes; verify clean, checksums equal to the unfaulted run."""
    calcs, reference = calcs_and_reference
    store = tmp_path / "store"
    address, procs = _scheduler(tmp_path, "workers", workers=2)
    try:
        cmd = [sys.executable, "-m", "chgdata", "run", "--from-dir", str(calcs), "--store", str(store),
               "--scheduler", address, "-q"]
        run = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while time.time() < deadline and run.poll() is None and not (store / "arrays").exists():
            time.sleep(0.02)
        os.killpg(procs[1].pid, signal.SIGKILL)  # a worker, mid-run
        _, stderr = run.communicate(timeout=300)
        assert run.returncode in (0, 1), stderr
        if run.returncode:
            _one_error_line(stderr)
        proc = _chgdata("run", "--from-dir", str(calcs), "--store", str(store), "--scheduler", address, "-q")
        assert proc.returncode == 0, proc.stderr
    finally:
        _stop(procs)
    _verified_like(store, reference)
