"""Densities for viewers and other codes, written by ASE: Gaussian cube (e/Bohr³) and XCrySDen XSF (e/Å³).

Both take ρ in e/Å³ on the periodic grid (nx, ny, nz), point (i, j, k) at fractional (i/nx, j/ny, k/nz), as the
store and ``chgdata predict`` hold it. Needs ASE (``pip install chgdata[ase]``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

#: Bohr radius in Å (ase.units.Bohr, CODATA).
BOHR_A = 0.5291772105638411


def _atoms(structure):
    try:
        from pymatgen.io.ase import AseAtomsAdaptor

        return AseAtomsAdaptor.get_atoms(structure)
    except ImportError as exc:
        raise ImportError("cube/xsf output needs ASE: pip install ase (or chgdata[ase])") from exc


def write_cube(structure, rho: np.ndarray, path: str | os.PathLike, comment: str = "") -> Path:
    """Gaussian cube of ρ (given in e/Å³, written in e/Bohr³ as the format expects); ∫ρ dV is unchanged."""
    from ase.io.cube import write_cube as ase_write_cube

    data = np.asarray(rho, dtype=np.float64) * BOHR_A**3
    path = Path(path)
    with open(path, "w") as fh:
        ase_write_cube(fh, _atoms(structure), data=data, comment=" ".join(comment.split())[:70] or None)
    return path


def write_xsf(structure, rho: np.ndarray, path: str | os.PathLike) -> Path:
    """XCrySDen XSF of the structure with ρ (e/Å³) as a periodic 3-D data grid (VESTA and XCrySDen read it)."""
    from ase.io.xsf import write_xsf as ase_write_xsf

    path = Path(path)
    with open(path, "w") as fh:
        ase_write_xsf(fh, [_atoms(structure)], data=np.asarray(rho, dtype=np.float64))
    return path
