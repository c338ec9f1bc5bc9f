"""Model workflows: train, evaluate, predict (one structure, in memory) and a GPAW calculation started from a
prediction. ``chgdata predict`` (files, many structures) is :func:`chgdata.models.predict.run_predict`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PathLike = str | os.PathLike


def train_config(store: PathLike | None = None, *, config: PathLike | None = None, preset: str | None = None,
                 resume: bool = False, **options: Any):
    """The run's TrainConfig from, in increasing precedence: defaults, the preset (``cpu``/``gpu``; default ``gpu``
    for a CUDA device, else ``cpu``), ``config`` (YAML/TOML; or, resuming without one, the run's own config.json,
    with no preset: a run keeps what it was started with) and ``options`` (TrainConfig fields; None = not given)."""
    from chgdata.models.presets import default_preset, preset_options
    from chgdata.models.schema import ConfigError
    from chgdata.models.train_config import TrainConfig

    flags = {k: (os.fspath(v) if isinstance(v, os.PathLike) else v) for k, v in options.items() if v is not None}
    if store is not None:
        flags["store"] = os.fspath(store)
    run_dir = Path(flags.get("out") or TrainConfig.out)
    recorded = run_dir / "config.json"
    if resume and config is None and recorded.is_file():
        if preset:
            raise ValueError(f"--preset with --resume: {run_dir} keeps the config it was started with ({recorded})")
        return TrainConfig.from_file(recorded, **flags)
    data = TrainConfig.read_file(config) if config is not None else {}
    device = flags.get("device") or data.get("device") or TrainConfig.device
    target = flags.get("target") or data.get("target") or TrainConfig.target
    base = preset_options(preset or default_preset(str(device)), str(target))
    if ("epochs" in data or "epochs" in flags) and not ("max_steps" in data or "max_steps" in flags):
        base.pop("max_steps")  # epochs asked for: the preset's step count must not cut them short
    try:
        return TrainConfig.from_dict({**base, **data}, **flags)
    except ConfigError as exc:
        raise ConfigError(f"{config}: {exc}" if config is not None else str(exc)) from None


def train(store: PathLike | None = None, *, config=None, preset: str | None = None, resume: bool = False,
          progress: bool = False, **options: Any) -> dict[str, Any]:
    """``chgdata train``: ``config`` is a TrainConfig, or a file resolved with ``preset`` and ``options`` as
    :func:`train_config` does (so ``chgdata.train(store)`` is ``chgdata train --store STORE``); returns the final
    metrics ({} when already trained). Raises TrainingInterrupted (with the checkpoint) on SIGINT/SIGTERM."""
    from chgdata.models.train import train as run_train
    from chgdata.models.train_config import TrainConfig

    cfg = config if isinstance(config, TrainConfig) else train_config(store, config=config, preset=preset,
                                                                      resume=resume, **options)
    return run_train(cfg, resume=resume, progress=progress) or {}


def ensemble(checkpoints: Sequence[PathLike], out: PathLike) -> Path:
    """``chgdata ensemble``: one checkpoint predicting the mean Δρ̂ of density models trained on the same data."""
    from chgdata.models.checkpoint import combine_checkpoints

    return combine_checkpoints(list(checkpoints), out)


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
    from chgdata.models.checkpoint import PredictError, load, reference_table
    from chgdata.models.conventions import CONVENTION_KEY, check_input
    from chgdata.models.predict import predict_structure
    from chgdata.models.predict_io import mag_to_write, read_augmentation

    from chgdata.grid import grid_for_spacing, grid_of_chgcar
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
    from chgdata.models.checkpoint import load
    from chgdata.models.dft import dft_structure

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


def parse_grid(text: str) -> tuple[int, int, int]:
    """``"nx,ny,nz"`` (also ``x`` or spaces between) as three positive integers."""
    from chgdata.grid import parse_grid as parse

    return parse(text)


def predict_files(structures: Sequence[str], out: PathLike = "predictions", *, checkpoint: PathLike | None = None,
                  grid: Sequence[int] | None = None, spacing: float | None = None, like: PathLike | None = None,
                  device: str = "cpu", chunk_size: int | None = None, formats: Sequence[str] = ("chgcar",),
                  spin: str = "auto", aug_from: PathLike | None = None, store: str | None = None,
                  conserve_electrons: bool = True, dos: bool = False, dos_only: bool = False,
                  dos_checkpoint: PathLike | None = None, dos_method: str = "kernel", progress: bool = False,
                  echo=print) -> list:
    """``chgdata predict``: densities of structure files, MP ids or ``store:PATH#id`` written under ``out`` (one
    folder per structure, named after it) in ``formats``; with ``dos``/``dos_only`` also the DOS window, from the
    kernel model or, ``dos_method="nscf"``, GPAW bands of the predicted density. ``echo`` receives the DOS
    reports' lines. Returns the density predictions (names, grids' shapes, electron counts, files, timings)."""
    from chgdata.models.predict import run_predict

    if dos_method not in ("kernel", "nscf"):
        raise ValueError(f"--dos-method must be kernel or nscf, got {dos_method!r}")
    ckpt = os.fspath(checkpoint) if checkpoint else None
    if (dos or dos_only) and dos_method == "nscf":
        from chgdata.models.dft import report_nscf_dos

        report_nscf_dos(structures, Path(out) / "nscf", ckpt, echo)
    elif dos or dos_only:
        from chgdata.models.predict_dos import report_dos

        report_dos(structures, Path(out), dos_checkpoint, device, echo)
    if dos_only:
        return []
    return run_predict(structures, out, checkpoint=ckpt, grid=grid, spacing=spacing,
                       like=os.fspath(like) if like else None, device=device, chunk_size=chunk_size,
                       formats=[f.strip().lower() for f in formats], store=store, progress=progress,
                       conserve_electrons=conserve_electrons, spin=spin.lower(),
                       aug_from=os.fspath(aug_from) if aug_from else None)
