"""The writer lock (:mod:`chgdata.lock`): never held twice, never blocked for good by a file a dead or interrupted
writer left, stale holders recognised by pid, start time and boot, and refusals that name the lock file."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys

import pytest

from chgdata import contract as C
from chgdata.location import Location, StoreError
from chgdata.lock import StoreLock, holder_alive, holder_info, process_start


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _take(root: str, barrier, hold, results, i: int) -> None:
    """One taker: wait for the other, try the lock, keep it until both have tried (so two winners overlap)."""
    lock = StoreLock(Location.parse(root), f"taker {i}")
    barrier.wait()
    try:
        lock.acquire()
        results[i] = 1
    except StoreError:
        results[i] = 0
    hold.wait()
    lock.release()


@pytest.mark.parametrize("leftover", ["dead", "empty", "truncated", "list"])
def test_simultaneous_takeovers_have_one_winner(tmp_path, leftover):
    """Two processes released at one barrier against a lock file a dead writer left (or an empty, truncated or
    non-object one, as a full disk or a kill leaves): exactly one wins in every trial (36 of 200 trials had two
    before)."""
    ctx = mp.get_context("fork")
    root = tmp_path / "store"
    root.mkdir()
    content = {"dead": json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "owner": "x", "token": "t"}),
               "empty": "", "truncated": '{"pid": 12', "list": "[]"}[leftover]
    trials = 1000 if leftover == "dead" else 25
    winners = []
    for _ in range(trials):
        (root / C.LOCK).write_text(content)
        barrier, hold = ctx.Barrier(2), ctx.Barrier(2)
        results = ctx.Array("i", [-1, -1])
        procs = [ctx.Process(target=_take, args=(str(root), barrier, hold, results, i)) for i in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert all(p.exitcode == 0 for p in procs)
        winners.append(sum(results))
        assert not (root / C.LOCK).exists()  # the winner released it
    assert winners == [1] * trials


def test_a_live_holder_is_refused_with_the_lock_file_named_and_released_on_exit(tmp_path):
    root = tmp_path / "s"
    first = StoreLock(Location.parse(str(root)), "chgdata ingest")
    first.acquire()
    holder = json.loads((root / C.LOCK).read_text())
    assert holder["pid"] == os.getpid() and holder["pid_start"] == process_start(os.getpid())
    with pytest.raises(StoreError, match=r"locked by 'chgdata ingest' \(pid \d+ on .* since .*\); wait for it to "
                                         r"finish \(the lock is released when that process exits\)"):
        StoreLock(Location.parse(str(root)), "second").acquire()
    first.release()
    first.release()  # idempotent
    assert not (root / C.LOCK).exists()
    # a writer killed while holding it: the kernel drops the lock with the process, the file stays, nobody waits
    code = ("import os, sys; from chgdata.lock import StoreLock; from chgdata.location import Location; "
            f"StoreLock(Location.parse({str(root)!r}), 'killed').acquire(); os.kill(os.getpid(), 9)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == -9
    assert json.loads((root / C.LOCK).read_text())["owner"] == "killed"
    again = StoreLock(Location.parse(str(root)), "next")
    again.acquire()
    again.release()


def test_stale_holders_by_pid_start_time_and_boot():
    me = holder_info("x", "t")
    assert holder_alive(me)
    assert not holder_alive({**me, "pid": _dead_pid()})
    assert not holder_alive({**me, "pid_start": me["pid_start"] + 1})  # this pid, but another process (reused)
    if me["boot_id"]:
        assert not holder_alive({**me, "boot_id": "0" * 36})  # written before a reboot
    assert holder_alive({**me, "host": "another-host", "pid": _dead_pid()})  # cannot be checked from here
    assert holder_alive({"host": socket.gethostname(), "pid": "garbage"})
