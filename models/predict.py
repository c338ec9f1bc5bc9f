"""Full-grid prediction with a trained charge-density checkpoint, written as a VASP CHGCAR (and .npy / Zarr).

ρ = ρ_SAED + Δρ̂ for a Δ model (the SAED reference table comes with the checkpoint, see :func:`reference_table`),
ρ = ρ̂ for a total-density model. A spin model's two channels are (↑, ↓); the CHGCAR gets ``total`` = ρ·V and
``diff`` = (ρ↑ − ρ↓)·V (VASP convention). The encoder runs once per structure; the head runs over x-slabs of the
grid whose probe edges are built on the device (:func:`predict_grid`).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from chgdata.grid import grid_for_spacing, grid_of_chgcar
from chgdata.references import ReferenceTable

from .checkpoint import PredictError, load, reference_table
from .density import GridTiming, predict_grid
from .kinds import is_density
from .predict_io import SPIN_MODES, Prediction, read_augmentation, read_structure, write_prediction

#: Host bytes per grid point of one prediction, measured with tracemalloc on Si at 100³ and 160³ (numpy arrays:
#: Δρ̂, ρ_SAED, ρ, their float64 sums, the writers' buffers: 32 B per point) plus the torch output (8 B), with
#: margin for the writers (cube/xsf text).
PREDICT_BYTES_PER_POINT = 64

def available_memory() -> int:
    """Bytes this process can still allocate: the system's available memory, capped by a cgroup v2 limit."""
    import psutil

    avail = int(psutil.virtual_memory().available)
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            avail = min(avail, int(limit) - used)
    except (OSError, ValueError):
        pass
    return max(avail, 0)

def check_grid_memory(name: str, shape: Sequence[int], lattice: np.ndarray, available: int | None = None) -> None:
    """Refuse, before any work, a grid whose prediction needs more host memory than is available (one line that
    names the estimate and a spacing that would fit)."""
    n = int(np.prod([int(k) for k in shape]))
    need = n * PREDICT_BYTES_PER_POINT
    available = available_memory() if available is None else available
    if need <= 0.8 * available:
        return
    lengths = np.linalg.norm(np.asarray(lattice, np.float64).reshape(3, 3), axis=1)
    fits = (0.8 * available / PREDICT_BYTES_PER_POINT) ** (1 / 3)  # points per axis of a cube that fits
    spacing = max(float(np.max(lengths)) / max(fits, 1.0), 0.01)
    raise PredictError(f"{name}: grid {'×'.join(map(str, shape))} ({n:.3g} points) needs about {need / 2**30:.1f} "
                       f"GiB for the prediction, {available / 2**30:.1f} GiB available; use a coarser grid "
                       f"(--spacing {math.ceil(spacing * 100) / 100:.2f} fits; the default 0.1 Å gives "
                       f"{'×'.join(map(str, grid_for_spacing(lattice, 0.1)))})")

def atomic_numbers(structure) -> np.ndarray:
    if not structure.is_ordered:
        raise PredictError("disordered structures (partial occupancies) cannot be predicted; order them first")
    return np.array([site.specie.Z for site in structure], dtype=np.int64)

class UnseenElementWarning(UserWarning):
    """The structure holds elements the checkpoint never trained on: its prediction there is an extrapolation."""

def warn_unseen_elements(ckpt: dict[str, Any], structure, name: str = "structure") -> list[str]:
    """Warn (and return them) when ``structure`` has elements outside the checkpoint's training set."""
    known = ckpt.get("train_elements")
    if not known:
        return []
    unseen = sorted({site.specie.symbol for site in structure} - set(known))
    if unseen:
        warnings.warn(f"{name}: {', '.join(unseen)} never occurred in this model's training data "
                      f"(trained on {', '.join(known)}); its prediction there is an extrapolation",
                      UnseenElementWarning, stacklevel=2)
    return unseen

def predict_structure(model, ckpt: dict[str, Any], structure, grid_shape: Sequence[int], *, name: str = "structure",
                      reference: ReferenceTable | None = None, device: str = "cpu", chunk_size: int | None = None,
                      callback: Callable[[int, int], None] | None = None,
                      conserve_electrons: bool = True) -> Prediction:
    """ρ (and magnetisation) of one pymatgen Structure on ``grid_shape``; see the module docstring.

    ``conserve_electrons`` (Δ models): shift Δρ̂ by a constant so that ∫Δρ̂ dV = 0, i.e. ∫ρ dV equals the
    valence count of the SAED reference exactly; the shift (electrons) is kept in ``charge_correction``.
    """
    from chgdata.saed import saed_for_structure

    cfg = model.config
    if not is_density(model):
        raise PredictError("this checkpoint is a DOS model; `chgdata predict` needs a charge-density checkpoint")
    warn_unseen_elements(ckpt, structure, name)
    z = atomic_numbers(structure)
    cell = structure.lattice.matrix
    timing = GridTiming()
    out = predict_grid(model, structure.cart_coords, z, cell, grid_shape, chunk_size, device, callback, timing)
    out = out.numpy()
    total = out.sum(-1)
    mag = (out[..., 0] - out[..., 1]) if out.shape[-1] == 2 else None
    pred = Prediction(name, structure, total, mag, timing=timing, grid_shape=tuple(int(n) for n in grid_shape))
    if cfg.target == "delta":
        if reference is None:
            reference = reference_table(ckpt)
        pred.saed = saed_for_structure(structure, tuple(grid_shape), reference)
        if conserve_electrons:
            # ρ_SAED already integrates to the valence count: remove the (small) net charge of Δρ̂ uniformly.
            pred.charge_correction = -float(total.astype(np.float64).mean() * structure.volume)
            total = (total - total.astype(np.float64).mean()).astype(np.float32)
        pred.delta = total
        pred.rho = (pred.saed.astype(np.float64) + total).astype(np.float32)
    return pred

def run_predict(specs: Sequence[str], out: str | os.PathLike, *, checkpoint: str | None = None,
                grid: Sequence[int] | None = None, spacing: float | None = None, like: str | None = None,
                device: str = "cpu", chunk_size: int | None = None, formats: Sequence[str] = ("chgcar",),
                store: str | None = None, mp_source=None, progress: bool = True,
                conserve_electrons: bool = True, spin: str = "auto", aug_from: str | None = None) -> list[Prediction]:
    """The ``chgdata predict`` pipeline: read structures, pick grids, predict, write; returns the predictions
    (grids dropped after writing to keep memory bounded; names, electron counts, timings and files kept).

    ``spin``: auto|on|off (:func:`mag_to_write`); ``aug_from``: a VASP CHGCAR of the same atoms whose PAW
    augmentation occupancies are copied into the written CHGCAR (so VASP can start from it with ICHARG=1).
    Inputs (``like``, ``aug_from``, CHGCAR structure files) whose electron count differs from the model's
    convention raise a :class:`~chgdata.models.conventions.ConventionWarning`."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from .conventions import CONVENTION_KEY, check_input

    if sum(x is not None for x in (grid, spacing, like)) > 1:
        raise PredictError("give at most one of --grid, --spacing and --like")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PredictError("--device cuda asked for, but torch sees no CUDA device")
    from chgdata.geometry import overlap_reason

    inputs = [read_structure(s, mp_source) for s in specs]
    for inp in inputs:
        if why := overlap_reason(inp.structure):
            raise PredictError(f"{inp.name} ({inp.source}): {why}")
    names: dict[str, int] = {}
    for inp in inputs:
        n = names.get(inp.name, 0)
        names[inp.name] = n + 1
        if n:
            inp.name = f"{inp.name}-{n + 1}"
    like_shape = grid_of_chgcar(like) if like else None
    shapes = [tuple(grid) if grid else like_shape if like_shape else
              grid_for_spacing(inp.structure.lattice.matrix, spacing or 0.1) for inp in inputs]
    for inp, shape in zip(inputs, shapes):
        check_grid_memory(inp.name, shape, inp.structure.lattice.matrix)
    model, ckpt = load(checkpoint, device)
    reference = reference_table(ckpt, store) if getattr(model.config, "target", None) == "delta" else None
    if spin not in SPIN_MODES:
        raise PredictError(f"--spin must be one of {', '.join(SPIN_MODES)}, got {spin!r}")
    if aug_from and len(inputs) != 1:
        raise PredictError("--aug-from takes one structure (augmentation occupancies are per atom)")
    convention = ckpt[CONVENTION_KEY]
    data_aug = read_augmentation(aug_from, inputs[0].structure) if aug_from else None
    checked: set[str] = set()
    for what, path in [("--like", like), ("--aug-from", aug_from)] + [
            ("input", i.source) for i in inputs if "CHGCAR" in Path(i.source).name.upper()]:
        if path and Path(path).is_file() and str(Path(path).resolve()) not in checked:
            checked.add(str(Path(path).resolve()))
            check_input(path, reference, convention, what)
    out_p = Path(out)
    single = (len(inputs) == 1 and list(formats) == ["chgcar"] and "CHGCAR" in out_p.name.upper()
              and not out_p.is_dir())
    results = []
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), TimeRemainingColumn(), disable=not progress, transient=True) as bar:
        for inp, shape in zip(inputs, shapes):
            task = bar.add_task(f"{inp.name} {shape[0]}×{shape[1]}×{shape[2]}", total=int(np.prod(shape)))
            pred = predict_structure(model, ckpt, inp.structure, shape, name=inp.name, reference=reference,
                                     device=device, chunk_size=chunk_size, conserve_electrons=conserve_electrons,
                                     callback=lambda done, total, t=task: bar.update(t, completed=done))
            write_prediction(pred, out, formats, single_file=single, spin=spin, convention=convention,
                             data_aug=data_aug)
            pred.convention = convention
            pred.n_electrons = pred.electrons
            pred.grid_shape = tuple(int(n) for n in shape)
            if len(inputs) > 1:  # keep memory bounded over a batch: the grids are on disk now
                pred.rho = pred.rho[:0, :0, :0]
                pred.mag = pred.saed = pred.delta = None
            results.append(pred)
    return results
