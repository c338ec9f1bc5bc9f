"""Full-grid prediction with a trained charge-density checkpoint, written as a VASP CHGCAR (and .npy / Zarr).

ρ = ρ_SAED + Δρ̂ for a Δ model (the SAED reference table comes with the checkpoint, see :func:`reference_table`),
ρ = ρ̂ for a total-density model. A spin model's two channels are (↑, ↓); the CHGCAR gets ``total`` = ρ·V and
``diff`` = (ρ↑ − ρ↓)·V (VASP convention). The encoder runs once per structure; the head runs over x-slabs of the
grid whose probe edges are built on the device (:func:`predict_grid`).
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from chgdata.references import ReferenceTable
from chgdata.store import Location

from .density import GridTiming, predict_grid
from .kinds import is_density

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "default" / "density.pt"
REFERENCE_KEY = "saed_reference"  # checkpoint entry: the SAED reference table as JSON text
REFERENCE_FILE = "saed_reference.json"  # as pipelines.delta writes it into a store
GENERIC_NAMES = {"POSCAR", "CONTCAR", "CHGCAR", "AECCAR0", "AECCAR2", "vasprun", "structure", "model"}
MP_ID = re.compile(r"^(mp|mvc)-\d+$")


class PredictError(ValueError):
    """A prediction that cannot run as asked (no model, no reference table, unreadable structure)."""


# ------------------------------------------------------------------------------------------- checkpoint


def default_checkpoint() -> Path:
    """The model shipped inside the package (``chgdata/models/default/density.pt``), or PredictError."""
    if not DEFAULT_CHECKPOINT.is_file():
        raise PredictError(f"no default model is shipped with this chgdata yet (looked for {DEFAULT_CHECKPOINT}); "
                           "pass --checkpoint path/to/model.pt from a `chgdata train` run")
    return DEFAULT_CHECKPOINT


def load(checkpoint: str | os.PathLike | None, device: str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """(model in eval mode, checkpoint dict) of ``checkpoint`` or of the shipped default model."""
    from .checkpoint import load_checkpoint
    from .conventions import CONVENTION_KEY, density_convention

    path = Path(checkpoint) if checkpoint else default_checkpoint()
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    model, ckpt = load_checkpoint(path, device=device)
    ckpt[CONVENTION_KEY] = density_convention(ckpt, default=path.resolve() == DEFAULT_CHECKPOINT.resolve())
    return model, ckpt


def attach_reference(checkpoint_path: str | os.PathLike, table: ReferenceTable | str | os.PathLike) -> Path:
    """Embed the SAED reference table (object, JSON file, or a store directory holding saed_reference.json)
    in a checkpoint, in place (atomic replace). The table id must match ``data_version["saed_reference_id"]``
    when the checkpoint records one. Returns the checkpoint path.
    """
    path = Path(checkpoint_path)
    if not isinstance(table, ReferenceTable):  # a JSON file, or a store (local or fsspec URL) holding one
        loc = Location.parse(table)
        path_in = loc.root if loc.fs.isfile(loc.root) else loc.path(REFERENCE_FILE)
        table = ReferenceTable.from_json(loc.fs.cat_file(path_in).decode())
    from .checkpoint import read_checkpoint, save_checkpoint

    ckpt = read_checkpoint(path)
    want = (ckpt.get("data_version") or {}).get("saed_reference_id")
    if want and want != table.id:
        raise PredictError(f"{path}: trained with reference {want}, not {table.id}")
    ckpt[REFERENCE_KEY] = table.to_json()
    save_checkpoint(path, ckpt)
    return path


def reference_table(ckpt: dict[str, Any], store: str | os.PathLike | None = None) -> ReferenceTable:
    """The SAED reference a Δ checkpoint was trained with.

    Looked up in order: ``store`` (if given), the training store recorded in ``data_version["store"]``
    (its saed_reference.json, used only if its id matches the checkpoint's), then the copy embedded by
    :func:`attach_reference`. PredictError when none is found.
    """
    want = (ckpt.get("data_version") or {}).get("saed_reference_id")
    tried = []
    for where in (store, (ckpt.get("data_version") or {}).get("store")):
        if not where:
            continue
        p = Path(str(where)) / REFERENCE_FILE
        tried.append(str(p))
        if p.is_file():
            try:
                table = ReferenceTable.load(p)
            except ValueError:
                continue
            if not want or table.id == want:
                return table
    text = ckpt.get(REFERENCE_KEY)
    if text:
        table = ReferenceTable.from_json(text)
        if want and table.id != want:
            raise PredictError(f"embedded reference {table.id} does not match the checkpoint's {want}")
        return table
    raise PredictError(f"the checkpoint's SAED reference {want or '(unknown)'} was not found (tried {tried} and "
                       "an embedded copy): give --store of the training data, or embed it with "
                       "chgdata.models.predict.attach_reference(checkpoint, table)")


# ------------------------------------------------------------------------------------------- structures


@dataclass
class StructureInput:
    name: str
    structure: Any  # pymatgen Structure
    source: str


def _name_from_path(p: Path) -> str:
    stem = p.name
    for suffix in (".gz", ".bz2", ".xz"):
        stem = stem.removesuffix(suffix)
    stem = stem.rsplit(".", 1)[0] if "." in stem and not stem.startswith(".") else stem
    if stem.split(".")[0] in GENERIC_NAMES:  # POSCAR, CHGCAR.gz: the folder names the calculation
        return p.resolve().parent.name or stem
    return stem


def read_structure(spec: str, mp_source=None) -> StructureInput:
    """One structure from a file (CIF, POSCAR, CHGCAR, anything pymatgen reads), an MP id (through
    :class:`chgdata.sources.mp.MPSource`, or the given ``mp_source`` with its ``structure(mid)`` method), or
    ``store:PATH#material_id``."""
    from pymatgen.core import Structure

    if spec.startswith("store:"):
        path, _, mid = spec[len("store:"):].partition("#")
        if not mid:
            raise PredictError(f"{spec!r}: write store:PATH#material_id")
        from chgdata.store import open_dataset

        return StructureInput(mid, open_dataset(path).structure(mid), spec)
    p = Path(spec)
    if p.exists():
        try:
            s = Structure.from_file(str(p))
        except Exception as exc:  # noqa: BLE001 - pymatgen raises many types for unreadable files
            raise PredictError(f"{spec}: pymatgen cannot read a structure ({type(exc).__name__}: {exc})") from None
        return StructureInput(_name_from_path(p), s, str(p))
    if MP_ID.match(spec):
        if mp_source is None:
            from chgdata.sources.mp import MPSource

            mp_source = MPSource()
        s = mp_source.structure(spec)  # the structure only: no density or DOS download, none needed at MP
        return StructureInput(spec, s, f"mp:{spec}")
    raise PredictError(f"{spec!r} is neither a file, an MP id (mp-149) nor store:PATH#material_id")


# ------------------------------------------------------------------------------------------------ grids


def _fft_size(n: int) -> int:
    """Smallest m >= n with only the prime factors 2, 3, 5 (the sizes VASP and FFTs like)."""
    m = max(1, n)
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def grid_for_spacing(lattice: np.ndarray, spacing: float = 0.1) -> tuple[int, int, int]:
    """Grid with point spacing at most ``spacing`` Å along each lattice vector (2·3·5-smooth sizes)."""
    if spacing <= 0:
        raise PredictError("grid spacing must be positive")
    lengths = np.linalg.norm(np.asarray(lattice, np.float64).reshape(3, 3), axis=1)
    return tuple(_fft_size(math.ceil(L / spacing - 1e-9)) for L in lengths)


def grid_of_chgcar(path: str | os.PathLike) -> tuple[int, int, int]:
    """The (nx, ny, nz) of a CHGCAR/PARCHG/AECCAR file, read from its header (gzip allowed)."""
    from chgdata.grid import read_chgcar_header

    return read_chgcar_header(path).grid_shape


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


def parse_grid(text: str) -> tuple[int, int, int]:
    parts = [t for t in re.split(r"[,x× ]+", text.strip()) if t]
    if len(parts) != 3 or not all(t.isdigit() and int(t) > 0 for t in parts):
        raise PredictError(f"--grid wants three positive integers nx,ny,nz, got {text!r}")
    return tuple(int(t) for t in parts)


# ----------------------------------------------------------------------------------------------- engine


@dataclass
class Prediction:
    """One structure's predicted grids (nx, ny, nz), e/Å³; ``saed`` only for Δ models, ``mag`` only for spin."""

    name: str
    structure: Any
    rho: np.ndarray
    mag: np.ndarray | None = None
    saed: np.ndarray | None = None
    delta: np.ndarray | None = None
    timing: GridTiming = field(default_factory=GridTiming)
    files: list[Path] = field(default_factory=list)
    grid_shape: tuple[int, int, int] = (0, 0, 0)
    n_electrons: float = float("nan")  # ∫ρ dV, kept after the grids are dropped
    charge_correction: float = 0.0  # electrons added by conserve_electrons
    convention: str = ""  # what ρ is (models.conventions.density_convention)

    @property
    def electrons(self) -> float:
        return float(self.rho.astype(np.float64).mean() * self.structure.volume)


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


# --------------------------------------------------------------------------------------------- writing

FORMATS = ("chgcar", "npy", "zarr", "cube", "xsf")
SPIN_MODES = ("auto", "on", "off")
#: --spin auto writes a diff block only when ∫|ρ↑ − ρ↓| dV of the prediction exceeds this (μB per cell).
MAGNETIC_THRESHOLD = 0.1


def write_chgcar(structure, rho: np.ndarray, path: str | os.PathLike, mag: np.ndarray | None = None,
                 comment: str | None = None, data_aug: dict | None = None) -> Path:
    """VASP CHGCAR of ρ (e/Å³) and the magnetisation (e/Å³): blocks ρ·V and (ρ↑ − ρ↓)·V; ``comment`` is the
    first line, ``data_aug`` PAW augmentation occupancies (pymatgen ``Chgcar.data_aug``) written after each block."""
    from chgdata.store import DensityGrid

    if data_aug:
        data_aug = {k: v for k, v in data_aug.items() if k == "total" or (k == "diff" and mag is not None)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    comment = " ".join((comment or structure.composition.reduced_formula).split())
    grid = DensityGrid(comment, np.asarray(rho), None if mag is None else np.asarray(mag), structure.lattice.matrix)
    chg = grid.to_chgcar(structure, data_aug or None)
    chg.name = chg.poscar.comment = comment  # pymatgen writes `name` as the first (comment) line
    chg.write_file(str(path))
    return path


def mag_to_write(pred: Prediction, spin: str = "auto") -> np.ndarray | None:
    """The magnetisation to write: ``off`` none, ``on`` always (zeros for a non-spin model), ``auto`` only when the
    prediction is magnetic (∫|m| dV > :data:`MAGNETIC_THRESHOLD` μB)."""
    if spin not in SPIN_MODES:
        raise PredictError(f"--spin must be one of {', '.join(SPIN_MODES)}, got {spin!r}")
    if spin == "off":
        return None
    if spin == "on":
        return pred.mag if pred.mag is not None else np.zeros_like(pred.rho)
    if pred.mag is None:
        return None
    abs_moment = float(np.abs(pred.mag.astype(np.float64)).mean() * pred.structure.volume)
    return pred.mag if abs_moment > MAGNETIC_THRESHOLD else None


def read_augmentation(path: str | os.PathLike, structure) -> dict:
    """PAW augmentation occupancies (pymatgen ``data_aug``) of a VASP CHGCAR, for ``structure``'s atoms: the
    file must hold the same species in the same site order (its occupancies are per atom)."""
    from pymatgen.io.vasp import Chgcar

    chg = Chgcar.from_file(str(path))
    if not chg.data_aug or not chg.data_aug.get("total"):
        raise PredictError(f"--aug-from {path}: the file has no augmentation occupancies (not a VASP CHGCAR?)")
    have = [s.specie.symbol for s in chg.structure]
    want = [s.specie.symbol for s in structure]
    if have != want:
        raise PredictError(f"--aug-from {path}: its atoms {chg.structure.composition.formula} (site order "
                           f"{'-'.join(have[:6])}…) are not those of the predicted structure "
                           f"{structure.composition.formula}")
    return dict(chg.data_aug)


def write_prediction(pred: Prediction, out: str | os.PathLike, formats: Sequence[str] = ("chgcar",),
                     single_file: bool = False, spin: str = "auto", convention: str = "",
                     data_aug: dict | None = None) -> list[Path]:
    """Write ``pred`` under ``out/<name>/`` (CHGCAR, rho.npy [+ mag.npy, saed.npy], density.zarr, density.cube in
    e/Bohr³, density.xsf in e/Å³); with ``single_file`` and only the chgcar format, ``out`` is the CHGCAR path
    itself. ``spin``: see :func:`mag_to_write`; ``convention`` goes into the CHGCAR comment line."""
    bad = sorted(set(formats) - set(FORMATS))
    if bad:
        raise PredictError(f"unknown output formats {bad}; choose from {list(FORMATS)}")
    out = Path(out)
    files: list[Path] = []
    mag = mag_to_write(pred, spin)
    comment = f"{pred.name} predicted by chgdata: {convention}" if convention else None
    if single_file:
        files.append(write_chgcar(pred.structure, pred.rho, out, mag, comment, data_aug))
        pred.files = files
        return files
    folder = out / pred.name
    folder.mkdir(parents=True, exist_ok=True)
    if "chgcar" in formats:
        files.append(write_chgcar(pred.structure, pred.rho, folder / "CHGCAR", mag, comment, data_aug))
    if "cube" in formats or "xsf" in formats:
        from chgdata.viewers import write_cube, write_xsf

        if "cube" in formats:
            files.append(write_cube(pred.structure, pred.rho, folder / "density.cube", comment or pred.name))
        if "xsf" in formats:
            files.append(write_xsf(pred.structure, pred.rho, folder / "density.xsf"))
    grids = {"rho": pred.rho, "mag": mag, "saed": pred.saed, "delta": pred.delta}
    grids = {k: v for k, v in grids.items() if v is not None}
    if "npy" in formats:
        for k, v in grids.items():
            np.save(folder / f"{k}.npy", np.asarray(v, np.float32))
            files.append(folder / f"{k}.npy")
    if "zarr" in formats:  # xr.open_zarr(".../density.zarr"): dims (x, y, z), units, lattice, sites
        from chgdata.xarray_io import grid_dataset, write_zarr

        attrs = {"name": pred.name, "predicted_by": "chgdata predict", "charge_correction_e": pred.charge_correction,
                 "density_convention": convention}
        write_zarr(grid_dataset(pred.structure, grids, attrs, {"rho": "predicted valence electron density"}),
                   folder / "density.zarr")
        files.append(folder / "density.zarr")
    pred.files = files
    return files


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
