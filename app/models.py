"""Model workflows: train, evaluate, predict (one structure, in memory) and a GPAW calculation started from a
prediction. ``chgdata predict`` (files, many structures) is :func:`chgdata.models.predict.run_predict`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

PathLike = str | os.PathLike


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
             materials: Sequence[str] | None = None, device: str = "cpu", chunk_size: int | None = None,
             out: PathLike | None = None, plot: PathLike | None = None, progress=None) -> dict[str, Any]:
    """``chgdata evaluate``: {"summary": ..., "per_material": [...]} (NMAE % vs the reference, or DOS metrics).
    ``out``: results.json and a per-material CSV next to it (their paths in ``res["files"]``); ``plot``: DOS
    models, a PNG grid of the worst and median materials; ``progress(material, i, n)`` is called per material."""
    from chgdata.models.evaluate import run_evaluate, write_results

    res = run_evaluate(os.fspath(checkpoint) if checkpoint else None, os.fspath(store), split,
                       list(materials) if materials else None, device, chunk_size, progress,
                       plot=os.fspath(plot) if plot else None)
    if out:
        res["files"] = [str(p) for p in write_results(res, out)]
    return res


def evaluation_report(res: dict[str, Any]) -> str:
    """Markdown tables of a density evaluation: per split (model vs SAED) and per group of the first split."""
    from chgdata.models.evaluate import format_report

    return format_report(res)


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
    from chgdata.models.dft import dft_structure
    from chgdata.models.predict import load

    from chgdata.dft.settings import require_gpaw

    require_gpaw()
    if not hasattr(structure, "lattice"):  # ase.Atoms
        from pymatgen.io.ase import AseAtomsAdaptor

        structure = AseAtomsAdaptor.get_structure(structure)
    model, ckpt = load(os.fspath(checkpoint) if checkpoint else None)
    return dft_structure(structure, model, ckpt, start=start, nscf=nscf, spin=spin)[0]



def fit_dos(store: PathLike, out: PathLike, *, folds: int = 5, energy_exponents: Sequence[float] = (0.0,)
            ) -> dict[str, Any]:
    """``chgdata fit-dos``: the kernel DOS model, (γ, λ, p) chosen by grouped cross-validation over the train split's
    groups (val and test are not read); writes the checkpoint ``out``; the fit's summary (``selected``)."""
    from chgdata.models.dos_kernel import kernel_grid
    from chgdata.models.fit_dos import fit_dos_kernel

    exponents = [float(v) for v in energy_exponents]
    if not exponents or min(exponents) < 0:
        raise ValueError(f"energy exponents: one or more numbers >= 0, got {list(energy_exponents)!r}")
    return fit_dos_kernel(os.fspath(store), out, grid=kernel_grid(exponents), n_folds=folds)
