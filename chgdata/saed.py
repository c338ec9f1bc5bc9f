"""Superposition of atomic electron densities (SAED) on periodic grids and at points (numpy/scipy only).

ρ_SAED(r) = Σ_i Σ_T ρ_{Z_i}(|r − R_i − T|) (e/Å^3) over atoms i and lattice translations T, with the per-element
references of :mod:`chgdata.references` (sums of normalised Gaussians). The Δ-learning target is
Δρ = ρ − ρ_SAED.

The grid sum itself is :func:`chgdata.gaussians.spectral_density` (method and cost described there); the
points are summed in real space here.

Spin: atomic references are spin-unpolarised, so the SAED of the magnetisation density ρ↑ − ρ↓ is zero; a
Δ model of the magnetisation learns the magnetisation itself.

User-supplied references: a VASP run with ICHARG=12, NELM=0 (superposition of the POTCARs' atomic charge
densities, no SCF step) on the same structure and grid is read from ``CHGCAR.saed`` or ``CHGCAR.saed.gz`` in
the folder of the material's CHGCAR (:func:`user_reference_density`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from chgdata.gaussians import basis_fields, spectral_density  # noqa: F401  (basis_fields: re-export)
from chgdata.numerics import exp

if TYPE_CHECKING:
    from chgdata.references import ReferenceTable

__all__ = [
    "USER_REFERENCE_NAMES",
    "basis_fields",
    "find_user_reference",
    "saed_at_points",
    "saed_density",
    "saed_for_structure",
    "user_reference_density",
]

USER_REFERENCE_NAMES = ("CHGCAR.saed", "CHGCAR.saed.gz")


def saed_density(
    lattice: np.ndarray,
    frac_coords: np.ndarray,
    species: Sequence[str],
    grid_shape: Sequence[int],
    table: ReferenceTable,
) -> np.ndarray:
    """ρ_SAED on the periodic grid, float32 array (nx, ny, nz) in e/Å^3.

    ``lattice``: 3×3 row vectors (Å); ``frac_coords``: (n, 3) fractional positions; ``species``: element symbols;
    grid point (i, j, k) sits at fractional (i/nx, j/ny, k/nz), C order as pymatgen's ``Chgcar.data``.
    Its grid mean × V equals Σ_i v_{Z_i} (the electron count) to float32 rounding.
    """
    return spectral_density(lattice, frac_coords, table.weights(list(species)), table.sigmas, grid_shape)


def saed_for_structure(structure, grid_shape: Sequence[int], table: ReferenceTable) -> np.ndarray:
    """:func:`saed_density` for a pymatgen ``Structure`` (ordered sites)."""
    return saed_density(
        structure.lattice.matrix, structure.frac_coords, [site.specie.symbol for site in structure], grid_shape,
        table,
    )


def saed_at_points(
    lattice: np.ndarray,
    frac_coords: np.ndarray,
    species: Sequence[str],
    points: np.ndarray,
    table: ReferenceTable,
    *,
    rel_cutoff: float = 1e-10,
    chunk: int = 512,
) -> np.ndarray:
    """ρ_SAED (e/Å^3, float64) at Cartesian ``points`` (P, 3) Å, summed in real space.

    All periodic images within the radius where the widest Gaussian has fallen below ``rel_cutoff`` of its
    peak (:meth:`ReferenceTable.cutoff_radius`) are included; this is the naive reference the grid method is
    checked against, and the way to evaluate a few scattered points.
    """
    lat = np.asarray(lattice, dtype=np.float64).reshape(3, 3)
    frac = np.asarray(frac_coords, dtype=np.float64).reshape(-1, 3)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    w = table.weights(list(species))
    sig = np.asarray(table.sigmas)
    v = 2 * np.pi * sig**2
    norm = 1.0 / (v * np.sqrt(v))  # not np.power: the same bits on every CPU (chgdata.numerics)
    rc = table.cutoff_radius(rel_cutoff)
    # Reduce points and atoms into the cell so that a fixed image range covers the cutoff.
    inv = np.linalg.inv(lat)
    pfrac = pts @ inv
    shift = np.floor(pfrac)
    pin = (pfrac - shift) @ lat
    ain = (frac - np.floor(frac)) @ lat
    recip_len = np.linalg.norm(2 * np.pi * inv.T, axis=1)
    nimg = np.ceil(rc * recip_len / (2 * np.pi)).astype(int) + 1
    rng = [np.arange(-n, n + 1) for n in nimg]
    tvec = np.stack(np.meshgrid(*rng, indexing="ij"), axis=-1).reshape(-1, 3) @ lat
    out = np.zeros(pts.shape[0])
    rc2 = rc * rc
    for i in range(frac.shape[0]):
        imgs = ain[i] + tvec
        for p0 in range(0, pts.shape[0], chunk):
            d2 = ((pin[p0:p0 + chunk, None, :] - imgs[None, :, :]) ** 2).sum(-1)
            pi, ti = np.nonzero(d2 < rc2)
            vals = exp(-0.5 * d2[pi, ti][:, None] / sig**2) @ (norm * w[i])
            out[p0:p0 + chunk] += np.bincount(pi, weights=vals, minlength=min(chunk, pts.shape[0] - p0))
    return out


# ---------------------------------------------------------------------------------------- user reference


def find_user_reference(chgcar_path: str | Path) -> Path | None:
    """The ICHARG=12 reference next to ``chgcar_path`` (``CHGCAR.saed`` or ``CHGCAR.saed.gz``), or None."""
    folder = Path(chgcar_path).parent
    for name in USER_REFERENCE_NAMES:
        p = folder / name
        if p.is_file():
            return p
    return None


def user_reference_density(chgcar_path: str | Path) -> np.ndarray | None:
    """User-supplied SAED for the material whose CHGCAR is ``chgcar_path``: float32 (nx, ny, nz), e/Å^3.

    Reads ``CHGCAR.saed[.gz]`` from the same folder (VASP ICHARG=12, NELM=0 run on the same structure and
    grid); returns None when there is none. Raises ValueError when its grid shape or lattice differs from the
    material's CHGCAR.
    """
    from pymatgen.io.vasp import Chgcar

    from chgdata.grid import read_chgcar_header

    ref_path = find_user_reference(chgcar_path)
    if ref_path is None:
        return None
    expected, got = read_chgcar_header(chgcar_path), read_chgcar_header(ref_path)
    if expected.grid_shape != got.grid_shape:
        raise ValueError(f"{ref_path} has grid {got.grid_shape} but {chgcar_path} has {expected.grid_shape}")
    if not np.allclose(expected.lattice, got.lattice, atol=1e-4):
        raise ValueError(f"{ref_path} has a different lattice from {chgcar_path}")
    ref = Chgcar.from_file(str(ref_path))
    return (ref.data["total"] / got.volume).astype(np.float32)
