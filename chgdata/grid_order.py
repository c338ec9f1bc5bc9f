"""Is a density grid in the order its header says? Checked against the superposition of free atoms.

A CHGCAR stores its values x fastest; a header whose "nx ny nz" line is permuted (same count, other order)
parses without error into a scrambled grid. The shipped free-atom SAED (:mod:`chgdata.free_atoms`) says where
the electrons should be: read the same values in each other order of the dimensions, and if one of them
correlates with the SAED far better than the declared order, the header is wrong. Pearson correlations of
correct grids with the free-atom SAED: ≥ 0.98 on the GPAW set, 0.30–0.96 on the VASP set (other
pseudopotentials); of permuted ones ≤ 0.74. Cubic grids (nx = ny = nz) have nothing to permute.
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np

#: a permuted reading must beat the declared order's correlation with the SAED by this much, and reach
#: :data:`MIN_CORRELATION`, to count as the true order
MARGIN = 0.2
MIN_CORRELATION = 0.8


@lru_cache(maxsize=1)
def _free_atoms():
    from chgdata.free_atoms import shipped_reference_path
    from chgdata.references import ReferenceTable

    return ReferenceTable.load(shipped_reference_path("gpaw-free-atoms"))


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a = a.ravel().astype(np.float64) - a.mean()
    b = b.ravel().astype(np.float64) - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else 0.0


def grid_order_problem(structure, rho: np.ndarray) -> str | None:
    """Why ``rho`` (nx, ny, nz; e/Å³) is not in the order of its header, or None (also when the shipped free
    atoms lack an element of ``structure``, or the grid is cubic)."""
    from chgdata.saed import saed_for_structure

    shape = tuple(int(n) for n in rho.shape)
    others = sorted(set(itertools.permutations(shape)) - {shape})
    table = _free_atoms()
    if not others or not {el.symbol for el in structure.composition} <= set(table.elements):
        return None
    declared = _correlation(rho, saed_for_structure(structure, shape, table))
    flat = rho.transpose(2, 1, 0).ravel()  # the file's order: x fastest
    best, order = max((_correlation(flat.reshape(p[::-1]).transpose(2, 1, 0), saed_for_structure(structure, p,
                                                                                                  table)), p)
                      for p in others)
    if best >= MIN_CORRELATION and best > declared + MARGIN:
        return (f"the grid's values follow the atoms as a {'×'.join(map(str, order))} grid (correlation "
                f"{best:.2f} with free atoms) far better than as the declared {'×'.join(map(str, shape))} "
                f"({declared:.2f}): is the header's grid line permuted?")
    return None
