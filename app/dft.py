"""DFT workflows with GPAW (the ``dft`` extra): compute new crystals, rank candidates by the ensemble's
disagreement, and run GPAW started from a predicted density. A missing GPAW, or a compute folder another run
holds, is a ValueError with one line saying so."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

PathLike = str | os.PathLike


def compute(candidates: Sequence, out: PathLike, *, workers: int = 2, scheduler: str | None = None,
            timeout_s: float = 900.0, budget_min: float | None = None, limit: int | None = None,
            max_atoms: int = 16, retry_failed: bool = False, progress: bool = False):
    """``chgdata compute``: GPAW calculations of ``candidates`` (chgdata.candidates) in the shared crystals'
    settings, one subprocess per structure on Dask, into ``out`` (resumable); a ComputeReport."""
    from chgdata.pipelines.compute import ComputeLocked, run_compute

    from chgdata.dft.settings import DFTUnavailable

    try:
        return run_compute(list(candidates), out, workers=workers, scheduler=scheduler, timeout_s=timeout_s,
                           budget_min=budget_min, limit=limit, max_atoms=max_atoms, retry_failed=retry_failed,
                           progress=progress)
    except (DFTUnavailable, ComputeLocked) as exc:
        raise ValueError(str(exc)) from None


def propose(candidates: Sequence, *, checkpoint: PathLike | None = None,
            callback: Callable[[int, int], None] | None = None) -> list:
    """``chgdata propose``: candidates ranked by the density ensemble's spread of Δρ̂ (NMAE units, %), most
    uncertain first; a list of spreads (``name``, ``formula``, ``spread_pct``)."""
    from chgdata.models.checkpoint import load
    from chgdata.models.uncertainty import rank_by_spread

    model, ckpt = load(os.fspath(checkpoint) if checkpoint else None)
    return rank_by_spread([(c.id, c.structure) for c in candidates], model, ckpt, callback=callback)


def dft(structures: Sequence[str], out: PathLike, *, start: str = "predicted", nscf: bool = False,
        checkpoint: PathLike | None = None, spin: str = "auto", paw: str = "atomic",
        progress: bool = False) -> list[dict]:
    """``chgdata dft``: GPAW from the predicted (or SAED, or default) start density, or NSCF bands of it (``paw``:
    GPAW's atomic PAW D_asii, or ``relaxed`` to self-consistency with the fixed density), per structure
    file; one summary dict per structure (``error`` for a failed one)."""
    from chgdata.models.dft import run_dft

    from chgdata.dft.settings import DFTUnavailable

    try:
        return run_dft(structures, out, start=start, nscf=nscf, checkpoint=os.fspath(checkpoint) if checkpoint
                       else None, spin=spin, paw=paw, progress=progress)
    except DFTUnavailable as exc:
        raise ValueError(str(exc)) from None
