"""What ``chgdata predict`` reads and writes: structures (files, MP ids, ``store:PATH#id``) and predictions as
VASP CHGCAR (ρ·V, ``diff`` = (ρ↑ − ρ↓)·V), .npy, Zarr, Gaussian cube (e/Bohr³) and XSF (e/Å³)."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import PredictError
from .density import GridTiming

GENERIC_NAMES = {"POSCAR", "CONTCAR", "CHGCAR", "AECCAR0", "AECCAR2", "vasprun", "structure", "model"}

MP_ID = re.compile(r"^(mp|mvc)-\d+$")

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

FORMATS = ("chgcar", "npy", "zarr", "cube", "xsf")

SPIN_MODES = ("auto", "on", "off")

#: --spin auto writes a diff block only when ∫|ρ↑ − ρ↓| dV of the prediction exceeds this (μB per cell).
MAGNETIC_THRESHOLD = 0.1

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
