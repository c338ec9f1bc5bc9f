"""Data workflows: ingest, split, build-delta, build-dos, the whole ``run``, and verify.

Each is what its command does, minus the printing: ``chgdata ingest --from-dir A --from-dir B`` is
``ingest(store, from_dir=[A, B])``. ``workers``/``scheduler``: local Dask worker processes or an existing
scheduler's address (also ``$DASK_SCHEDULER_ADDRESS``); ``processes=False``: threads instead of worker processes
(a local cluster only); ``client``: an open ``distributed.Client`` to run on instead; ``progress``: progress bars
on stderr.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

PathLike = str | os.PathLike

#: the defaults every data workflow and its command share
WORKERS = 2
DOS_SIGMA_EV, DOS_EMIN_EV, DOS_EMAX_EV, DOS_POINTS = 0.1, -10.0, 10.0, 400


def _dirs(from_dir: PathLike | Sequence[PathLike] | None) -> list[str]:
    if from_dir is None:
        return []
    if isinstance(from_dir, (str, os.PathLike)):
        return [os.fspath(from_dir)]
    return [os.fspath(d) for d in from_dir]


def ingest(store: PathLike, *, from_dir: PathLike | Sequence[PathLike] | None = None,
           mp_ids: Sequence[str] | None = None, api_key: str | None = None, workers: int = WORKERS,
           scheduler: str | None = None, processes: bool = True, progress: bool = False, client=None):
    """``chgdata ingest``: local calculation folders (one tree or several) and/or MP ids into ``store``
    (resumable); an IngestReport. The MP key comes from ``api_key``, ``$MP_API_KEY`` or ``PMG_MAPI_KEY``."""
    from chgdata.pipelines.ingest import run_ingest

    return run_ingest(os.fspath(store), from_dir=_dirs(from_dir), mp_ids=list(mp_ids or []), api_key=api_key,
                      workers=workers, scheduler=scheduler, processes=processes, progress=progress, client=client)


def split(store: PathLike, *, group_by: str | None = None, split_seed: int | None = None,
          fractions: Sequence[float] | None = None):
    """``chgdata split``: record the train/val/test split by group (default: the recorded grouping, else by
    reduced formula, seed 0, fractions 0.8/0.1/0.1); a SplitAssignment."""
    from chgdata.pipelines.split import run_split

    return run_split(os.fspath(store), group_by=group_by, fractions=fractions, seed=split_seed)


def build_delta(store: PathLike, *, reference: PathLike | None = None, nonnegative: bool = False,
                workers: int = WORKERS, scheduler: str | None = None, processes: bool = True, progress: bool = False,
                client=None):
    """``chgdata build-delta``: fit (or reuse) the SAED reference and store saed and Δρ (e/Å³); a DeltaReport.
    ``reference``: a table file or ``gpaw-free-atoms``; default the store's own, fitted on its train split."""
    from chgdata.pipelines.delta import run_build_delta

    return run_build_delta(os.fspath(store), reference=os.fspath(reference) if reference else None,
                           nonnegative=nonnegative, workers=workers, scheduler=scheduler, processes=processes,
                           progress=progress, client=client)


def build_dos(store: PathLike, *, sigma: float = DOS_SIGMA_EV, emin: float = DOS_EMIN_EV, emax: float = DOS_EMAX_EV,
              points: int = DOS_POINTS, workers: int = WORKERS, scheduler: str | None = None,
              processes: bool = True, progress: bool = False, client=None):
    """``chgdata build-dos``: Gaussian-smeared DOS windows (σ, window E − E_F in eV, points); a DosReport."""
    from chgdata.pipelines.dos import run_build_dos

    return run_build_dos(os.fspath(store), sigma=sigma, emin=emin, emax=emax, npoints=points, workers=workers,
                         scheduler=scheduler, processes=processes, progress=progress, client=client)


@dataclass
class RunReport:
    """The stages of :func:`run`; ``failed``: every material that failed in any stage, with its reason."""

    ingest: Any
    split: Any
    delta: Any
    dos: Any
    failed: dict[str, str] = field(default_factory=dict)


def run(store: PathLike, *, from_dir: PathLike | Sequence[PathLike] | None = None,
        mp_ids: Sequence[str] | None = None, api_key: str | None = None, sigma: float = DOS_SIGMA_EV,
        group_by: str | None = None, split_seed: int | None = None, reference: PathLike | None = None,
        workers: int = WORKERS, scheduler: str | None = None, processes: bool = True, progress: bool = False,
        on_stage=None) -> RunReport:
    """``chgdata run``: ingest, split, build-delta and build-dos on one Dask cluster (resumable).
    ``on_stage(name, report)`` is called after each stage (the CLI prints its line there)."""
    from chgdata.pipelines.cluster import dask_client

    def done(name: str, rep):
        if on_stage is not None:
            on_stage(name, rep)
        return rep

    with dask_client(workers, scheduler, processes=processes) as client:
        ing = done("ingest", ingest(store, from_dir=from_dir, mp_ids=mp_ids, api_key=api_key, client=client,
                                    progress=progress))
        assignment = done("split", split(store, group_by=group_by, split_seed=split_seed))
        delta = done("build-delta", build_delta(store, reference=reference, client=client, progress=progress))
        dos = done("build-dos", build_dos(store, sigma=sigma, client=client, progress=progress))
    return RunReport(ing, assignment, delta, dos, {**dos.failed, **delta.failed, **ing.failed})


def verify(store: PathLike):
    """``chgdata verify``: recompute checksums and electron counts; a VerifyReport (``.ok``, ``.problems``)."""
    from chgdata.verify import verify_store

    return verify_store(os.fspath(store))


def rebuild(ref: str, from_dir: PathLike, store: PathLike, *, catalog: PathLike | None = None,
            workers: int = WORKERS, progress: bool = True):
    """``chgdata rebuild``: a published ``NAME[@VERSION]`` rebuilt from exactly its recorded inputs in
    ``from_dir`` into ``store``, its checksums compared with the catalogue's; a RebuildReport (``ok``)."""
    from chgdata.pipelines.rebuild import run_rebuild

    return run_rebuild(ref, from_dir, os.fspath(store), catalog=catalog, workers=workers, progress=progress)
