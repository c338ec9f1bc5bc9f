"""The command line as Python functions, with the CLI's defaults (``chgdata.ingest(...)``, ``chgdata.predict(...)``).

Each wrapper imports its pipeline only when called, so ``import chgdata`` stays light; they return the
pipelines' reports (dataclasses with ``committed``, ``skipped``, ``failed``, ...), raise the library's errors
instead of exiting, and show no progress bar unless ``progress=True``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

PathLike = str | os.PathLike


def ingest(store: PathLike, *, from_dir: PathLike | Sequence[PathLike] | None = None,
           mp_ids: Sequence[str] | None = None, api_key: str | None = None, workers: int = 2,
           scheduler: str | None = None, progress: bool = False,
           **options: Any):
    """``chgdata ingest``: local calculation folders and/or MP ids into ``store`` (resumable); an IngestReport.
    ``from_dir``: one folder tree or several. The MP key comes from ``api_key`` or ``$MP_API_KEY``."""
    from chgdata.pipelines.ingest import run_ingest

    return run_ingest(os.fspath(store), from_dir=from_dir, mp_ids=list(mp_ids or []),
                      api_key=api_key, workers=workers, scheduler=scheduler, progress=progress, **options)


def build_delta(store: PathLike, *, reference: PathLike | None = None, nonnegative: bool = False, workers: int = 2,
                scheduler: str | None = None, progress: bool = False, **options: Any):
    """``chgdata build-delta``: fit (or reuse) the reference density and store saed and Δρ; a DeltaReport."""
    from chgdata.pipelines.delta import run_build_delta

    return run_build_delta(os.fspath(store), reference=os.fspath(reference) if reference else None,
                           nonnegative=nonnegative, workers=workers, scheduler=scheduler, progress=progress,
                           **options)


def build_dos(store: PathLike, *, sigma: float = 0.1, emin: float = -10.0, emax: float = 10.0, points: int = 400,
              workers: int = 2, scheduler: str | None = None, progress: bool = False, **options: Any):
    """``chgdata build-dos``: Gaussian-smeared DOS windows (σ, window in eV around E_F); a DosReport."""
    from chgdata.pipelines.dos import run_build_dos

    return run_build_dos(os.fspath(store), sigma=sigma, emin=emin, emax=emax, npoints=points, workers=workers,
                         scheduler=scheduler, progress=progress, **options)


def run(store: PathLike, *, from_dir: PathLike | Sequence[PathLike] | None = None, mp_ids: Sequence[str] | None = None,
        api_key: str | None = None, sigma: float = 0.1, workers: int = 2, scheduler: str | None = None,
        progress: bool = False) -> dict[str, Any]:
    """``chgdata run``: ingest, build-delta and build-dos on one Dask cluster; {"ingest", "delta", "dos"} reports."""
    from chgdata.pipelines.cluster import dask_client

    with dask_client(workers, scheduler) as client:
        return {"ingest": ingest(store, from_dir=from_dir, mp_ids=mp_ids, api_key=api_key, client=client,
                                 progress=progress),
                "delta": build_delta(store, client=client, progress=progress),
                "dos": build_dos(store, sigma=sigma, client=client, progress=progress)}


def verify(store: PathLike):
    """``chgdata verify``: recompute checksums and electron counts; a VerifyReport (``.ok``, ``.problems``)."""
    from chgdata.verify import verify_store

    return verify_store(os.fspath(store))


def train(store: PathLike | None = None, *, config: PathLike | None = None, resume: bool = False,
          progress: bool = False, **options: Any) -> dict[str, Any]:
    """``chgdata train``: ``options`` are TrainConfig fields (target, max_steps, out, ...), overriding ``config``
    (YAML/TOML); returns the final metrics ({} when already trained)."""
    from chgdata.models.train import TrainConfig
    from chgdata.models.train import train as run_train

    if store is not None:
        options["store"] = os.fspath(store)
    cfg = TrainConfig.from_file(config, **options) if config else TrainConfig(**options)
    return run_train(cfg, resume=resume, progress=progress) or {}


def evaluate(checkpoint: PathLike | None = None, store: PathLike = "data/store", *, split: str = "test",
             materials: Sequence[str] | None = None, device: str = "cpu", chunk_size: int | None = None
             ) -> dict[str, Any]:
    """``chgdata evaluate``: {"summary": ..., "per_material": [...]} (NMAE % vs the reference, or DOS metrics)."""
    from chgdata.models.evaluate import run_evaluate

    return run_evaluate(os.fspath(checkpoint) if checkpoint else None, os.fspath(store), split,
                        list(materials) if materials else None, device, chunk_size)


def predict(structure, checkpoint: PathLike | None = None, *, grid: Sequence[int] | None = None,
            spacing: float | None = None, like: PathLike | None = None, device: str = "cpu",
            chunk_size: int | None = None, spin: str = "auto", conserve_electrons: bool = True,
            aug_from: PathLike | None = None, store: PathLike | None = None):
    """``chgdata predict`` for one pymatgen ``Structure`` or ``ase.Atoms``: a pymatgen ``Chgcar`` (ρ·V, ``diff``
    for a magnetic prediction as ``--spin``, augmentation occupancies with ``aug_from``). The density convention
    (e.g. GPAW pseudo-valence for the shipped model) is the Chgcar's comment and ``chgcar.density_convention``."""
    import numpy as np

    from chgdata.models.conventions import CONVENTION_KEY, check_input
    from chgdata.models.predict import (
        PredictError,
        grid_for_spacing,
        grid_of_chgcar,
        load,
        mag_to_write,
        predict_structure,
        read_augmentation,
        reference_table,
    )
    from chgdata.store import DensityGrid

    if not hasattr(structure, "lattice"):  # ase.Atoms
        from pymatgen.io.ase import AseAtomsAdaptor

        structure = AseAtomsAdaptor.get_structure(structure)
    if sum(x is not None for x in (grid, spacing, like)) > 1:
        raise PredictError("give at most one of grid, spacing and like")
    model, ckpt = load(os.fspath(checkpoint) if checkpoint else None, device)
    reference = reference_table(ckpt, store) if getattr(model.config, "target", None) == "delta" else None
    convention = ckpt[CONVENTION_KEY]
    for what, path in (("like", like), ("aug_from", aug_from)):
        if path:
            check_input(path, reference, convention, what)
    shape = (tuple(grid) if grid else grid_of_chgcar(like) if like else
             grid_for_spacing(structure.lattice.matrix, spacing or 0.1))
    pred = predict_structure(model, ckpt, structure, shape, reference=reference, device=device,
                             chunk_size=chunk_size, conserve_electrons=conserve_electrons)
    grid_ = DensityGrid(structure.composition.reduced_formula, pred.rho, mag_to_write(pred, spin),
                        np.asarray(structure.lattice.matrix))
    chg = grid_.to_chgcar(structure, read_augmentation(aug_from, structure) if aug_from else None)
    chg.name = chg.poscar.comment = f"predicted by chgdata: {convention}"  # the CHGCAR's first line
    chg.density_convention = convention
    return chg


def dft_calculation(structure, checkpoint: PathLike | None = None, *, start: str = "predicted", nscf: bool = False,
        spin: str = "auto"):
    """``chgdata dft`` for one pymatgen ``Structure`` or ``ase.Atoms``: GPAW (the shared settings) from the
    predicted density (``start``: predicted, saed or default), or with ``nscf`` the bands of the fixed start
    density. Returns a :class:`chgdata.dft.runs.Run` (iterations, seconds, energy, E_F and gaps in eV,
    eigenvalues; its ``calc`` is the GPAW calculator)."""
    from chgdata.dft.settings import require_gpaw
    from chgdata.models.dft import dft_structure
    from chgdata.models.predict import load

    require_gpaw()
    if not hasattr(structure, "lattice"):  # ase.Atoms
        from pymatgen.io.ase import AseAtomsAdaptor

        structure = AseAtomsAdaptor.get_structure(structure)
    model, ckpt = load(os.fspath(checkpoint) if checkpoint else None)
    return dft_structure(structure, model, ckpt, start=start, nscf=nscf, spin=spin)[0]

