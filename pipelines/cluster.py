"""Where the Dask graph runs: a local process cluster by default, or an existing scheduler."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from distributed import Client, LocalCluster, as_completed
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


@contextlib.contextmanager
def dask_client(workers: int = 2, scheduler: str | None = None, processes: bool = True,
                memory_limit: str | None = "auto") -> Iterator[Client]:
    """A ``distributed.Client``: on ``scheduler`` (or ``$DASK_SCHEDULER_ADDRESS``) if given, else a local
    cluster of ``workers`` single-threaded worker processes (threads when ``processes`` is False)."""
    address = scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if address:
        with Client(address, timeout="30s") as client:
            yield client
        return
    cluster = LocalCluster(n_workers=max(1, workers), threads_per_worker=1, processes=processes,
                           memory_limit=memory_limit, dashboard_address=":0")
    try:
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()


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
