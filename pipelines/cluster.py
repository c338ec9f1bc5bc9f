"""Where the Dask graph runs: a local process cluster by default, or an existing scheduler."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from distributed import Client, LocalCluster, as_completed
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

log = logging.getLogger(__name__)

#: Seconds to wait for the local workers to leave the scheduler before it is closed anyway.
CLOSE_TIMEOUT_S = 30.0


@contextlib.contextmanager
def dask_client(workers: int = 2, scheduler: str | None = None, processes: bool = True,
                memory_limit: str | None = "auto") -> Iterator[Client]:
    """A ``distributed.Client``: on ``scheduler`` (or ``$DASK_SCHEDULER_ADDRESS``) if given, else a local
    cluster of ``workers`` single-threaded worker processes (threads when ``processes`` is False). The dashboard
    address is logged (``chgdata.pipelines.cluster``, INFO) when the client opens."""
    address = scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
    with _quiet_client_errors():
        if address:
            with Client(address, timeout="30s") as client:
                log.info("Dask scheduler %s, dashboard %s", address, client.dashboard_link)
                yield client
            return
        yield from _local_client(workers, processes, memory_limit)


@contextlib.contextmanager
def _quiet_client_errors() -> Iterator[None]:
    """Unless chgdata logs at DEBUG (``--verbose``): no tracebacks from ``distributed.client`` while it tries to
    reconnect to a lost scheduler; the failed futures reach the caller, which reports them in one line."""
    lg = logging.getLogger("distributed.client")
    saved = lg.level
    if logging.getLogger("chgdata").getEffectiveLevel() > logging.DEBUG:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        lg.setLevel(saved)


def _local_client(workers: int, processes: bool, memory_limit: str | None) -> Iterator[Client]:
    cluster = LocalCluster(n_workers=max(1, workers), threads_per_worker=1, processes=processes,
                           memory_limit=memory_limit, dashboard_address=":0")
    client = None
    try:
        client = Client(cluster)
        level = logging.getLogger("chgdata").getEffectiveLevel()
        if processes and level < logging.WARNING:  # the CLI asked for chgdata's messages: workers' too
            client.run(log_to_stderr, level)
        if processes and level > logging.DEBUG:  # a failed task is re-raised and reported by the driver
            client.run(_quiet_task_errors)
        n = max(1, workers)
        log.info("Dask dashboard: %s (local cluster, %d worker %s)", cluster.dashboard_link, n,
                 ("process" if n == 1 else "processes") if processes else ("thread" if n == 1 else "threads"))
        yield client
    finally:
        close_local_cluster(cluster, client)


def log_to_stderr(level: int) -> None:
    """In a worker process: chgdata's module loggers to stderr at ``level`` (the driver's level)."""
    import sys

    root = logging.getLogger("chgdata")
    if not any(getattr(h, "_chgdata_worker", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler._chgdata_worker = True
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [worker %(process)d]: "
                                               "%(message)s", "%H:%M:%S"))
        root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


def _distributed_loggers() -> list[logging.Logger]:
    """The ``distributed`` logger and every ``distributed.*`` logger this process has created."""
    names = ["distributed"] + [n for n in logging.root.manager.loggerDict if n.startswith("distributed.")]
    return [logging.getLogger(n) for n in names]


@contextlib.contextmanager
def quiet_distributed(level: int = logging.CRITICAL) -> Iterator[None]:
    """Raise the ``distributed`` loggers of this process to ``level`` for the duration (shutdown chatter)."""
    loggers = _distributed_loggers()
    saved = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(level)
    try:
        yield
    finally:
        for lg, lvl in zip(loggers, saved):
            lg.setLevel(lvl)


def _quiet_task_errors() -> None:
    """In a worker process: no "Compute Failed" traceback from ``distributed.worker`` (the driver gets the task's
    exception and reports it in one line; ``--verbose`` keeps Dask's messages)."""
    logging.getLogger("distributed.worker").setLevel(logging.CRITICAL)


def _quiet_worker_shutdown() -> None:
    """In a worker process about to be closed: Dask's own loggers to CRITICAL (shutdown chatter only)."""
    for lg in _distributed_loggers():
        lg.setLevel(logging.CRITICAL)


def close_local_cluster(cluster: LocalCluster, client: Client | None, timeout: float = CLOSE_TIMEOUT_S) -> None:
    """Close a local cluster in order: workers first (waiting until they have left the scheduler, so none is
    still sending heartbeats), then the client, then the scheduler. The expected messages of a shutdown (closed
    comms, heartbeats to a scheduler going away) stay off the terminal."""
    with quiet_distributed():
        try:
            if client is not None and cluster.workers and getattr(cluster, "processes", True):
                client.run(_quiet_worker_shutdown)  # a late heartbeat of a closing worker is no error
            cluster.scale(0)
            deadline = time.monotonic() + timeout
            while ((cluster.workers or (client is not None and client.nthreads()))
                   and time.monotonic() < deadline):
                time.sleep(0.1)
        except Exception as exc:  # noqa: BLE001 - a cluster that is already going down: close what is left
            log.debug("closing workers: %s: %s", type(exc).__name__, exc)
        finally:
            try:
                if client is not None:
                    client.close(timeout=timeout)
                cluster.close(timeout=timeout)  # bounded: a close that never completes must not hang the run
            except Exception as exc:  # noqa: BLE001 - leftover processes end with this one (nannies are children)
                log.warning("local Dask cluster did not close within %.0f s (%s); continuing", timeout,
                            type(exc).__name__)


def run_tasks(client: Client, fn: Callable[..., dict], calls: Sequence[tuple[Any, ...]], label: str,
              weight: Callable[[tuple[Any, ...]], int] = lambda call: 1, show: bool = True) -> Iterable[dict]:
    """Submit ``fn(*call)`` for every call; yield results as they finish, with a progress bar on stderr."""
    futures = {client.submit(fn, *call, pure=False): i for i, call in enumerate(calls)}
    for res in run_futures(futures, label, lambda i: weight(calls[i]), show):
        yield from res.values()


def run_futures(futures: dict, label: str, weight: Callable[[Any], int] = lambda key: 1,
                show: bool = True) -> Iterable[dict]:
    """Yield ``{key: result}`` for each future of ``{future: key}`` as it finishes, with a progress bar."""
    total = sum(weight(k) for k in futures.values())
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not show, transient=False) as progress:
        bar = progress.add_task(label, total=total)
        for future in as_completed(futures):
            key = futures[future]
            result = future.result()
            progress.advance(bar, weight(key))
            yield {key: result}
