"""The store's writer lock: one writer per store, never held twice, never held by a process that is gone.

Local stores (and NFS mounts): an ``flock`` on ``.chgdata.lock``, held open for the run. The kernel drops it when
the holder exits, however it exits, so a lock is never stale, pid reuse does not matter, and a lock file left
empty or truncated (a full disk, a kill while writing) blocks nobody. Of simultaneous takers exactly one wins;
the winner checks that the path still names the file it locked (a releasing holder unlinks it) and retries
otherwise. The file's JSON (owner, pid, host, start) is for messages only.

Object stores have no locks: the lock object is created conditionally (S3 ``If-None-Match: *``), carries a
random token, and is read back, so a create whose reply was lost (and whose retry got 412) is recognised as our
own. A holder is stale when it ran on this host and its process is gone: no such pid, another process start
time under that pid (reused), or another boot. A holder on another host cannot be checked: the refusal names
the object to remove once no run is writing there.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import uuid
from collections.abc import Iterator

from chgdata import contract as C
from chgdata.location import Location, StoreError, utcnow

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None


def _read(path: str) -> str:
    with contextlib.suppress(OSError), open(path) as fh:
        return fh.read()
    return ""


def boot_id() -> str | None:
    """This machine's boot id (Linux), or None."""
    return _read("/proc/sys/kernel/random/boot_id").strip() or None


def process_start(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks since boot (``/proc/<pid>/stat`` field 22), or None."""
    stat = _read(f"/proc/{pid}/stat")
    try:
        return int(stat.rpartition(")")[2].split()[19])
    except (IndexError, ValueError):
        return None


def holder_info(owner: str, token: str) -> dict:
    """What a lock records about its holder (for staleness on object stores and for messages)."""
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "owner": owner, "since": utcnow(), "token": token,
            "pid_start": process_start(pid), "boot_id": boot_id()}


def holder_alive(holder: dict) -> bool:
    """False only when ``holder`` surely ran on this host and that process no longer exists."""
    if holder.get("host") != socket.gethostname():
        return True  # cannot check another host
    if holder.get("boot_id") and boot_id() and holder["boot_id"] != boot_id():
        return False  # written before this machine rebooted
    try:
        pid = int(holder["pid"])
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError, TypeError, OverflowError):
        return True
    started = holder.get("pid_start")
    return started is None or process_start(pid) in (None, started)  # another start time: the pid was reused


class StoreLock:
    """The advisory writer lock of one store (:mod:`chgdata.lock`). ``acquire`` raises :class:`StoreError`
    naming the holder and the lock file; ``release`` is idempotent."""

    def __init__(self, loc: Location, owner: str):
        self.loc = loc
        self.path = loc.path(C.LOCK)
        self.where = f"{str(loc.url).rstrip('/')}/{C.LOCK}"  # for messages: with the protocol
        self.owner = owner
        self.token = uuid.uuid4().hex
        self._fd: int | None = None

    def _holder(self) -> dict | None:
        """The recorded holder, or None when there is no lock object (unreadable content: an empty dict)."""
        try:
            raw = self.loc.fs.cat_file(self.path)
        except FileNotFoundError:
            return None
        try:
            holder = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return {}
        return holder if isinstance(holder, dict) else {}

    def _refusal(self, holder: dict | None, local: bool) -> StoreError:
        who = (f"'{holder.get('owner')}' (pid {holder.get('pid')} on {holder.get('host')} since "
               f"{holder.get('since')})" if holder else "another writer (its details are not written yet)")
        safe = ("the lock is released when that process exits" if local else
                f"if no chgdata run is writing this store any more, remove {self.where}")
        return StoreError(f"store {self.loc.url} is locked by {who}; wait for it to finish ({safe})")

    def acquire(self) -> None:
        if self.loc.is_local and fcntl is not None:
            self._acquire_flock()
        else:
            self._acquire_object()

    def _acquire_flock(self) -> None:
        os.makedirs(self.loc.root, exist_ok=True)
        for _ in range(100):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise self._refusal(self._holder(), local=True) from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # we locked a file its holder unlinked while releasing: take the new one
        else:
            raise StoreError(f"store {self.loc.url}: could not take {self.where} (it keeps being replaced)")
        self._fd = fd
        data = json.dumps(holder_info(self.owner, self.token)).encode()
        with contextlib.suppress(OSError):  # a full disk leaves the details unwritten; the flock holds regardless
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)

    def _acquire_object(self) -> None:
        fs = self.loc.fs
        holder = self._holder()
        if holder is not None and (not holder or holder_alive(holder)):
            raise self._refusal(holder, local=False)
        if holder is not None:  # stale: its process on this host is gone
            with contextlib.suppress(FileNotFoundError):
                fs.rm_file(self.path)
        try:
            fs.pipe_file(self.path, json.dumps(holder_info(self.owner, self.token)).encode(), mode="create")
        except FileExistsError:
            pass  # someone's lock is there: perhaps ours, created by a try whose reply was lost
        except OSError as exc:  # retries exhausted: the create may still have landed
            if (self._holder() or {}).get("token") != self.token:
                raise StoreError(f"store {self.loc.url}: could not create the lock {self.where} "
                                 f"({type(exc).__name__}: {exc}); rerun when the object store answers") from None
        now = self._holder()
        if (now or {}).get("token") != self.token:
            raise self._refusal(now, local=False)

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    os.remove(self.path)  # while still locked: a waiter that opened it retries on the new file
            except FileNotFoundError:
                pass
            finally:
                os.close(fd)
            return
        holder = self._holder()
        if holder is not None and holder.get("token") == self.token:
            with contextlib.suppress(FileNotFoundError):
                self.loc.fs.rm_file(self.path)


@contextlib.contextmanager
def locked(url: str | os.PathLike, owner: str) -> Iterator[Location]:
    """Hold the store's writer lock for the duration of a run."""
    loc = Location.parse(url)
    lock = StoreLock(loc, owner)
    lock.acquire()
    try:
        yield loc
    finally:
        lock.release()
