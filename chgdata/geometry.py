"""Geometry sanity checks of input structures (pure numpy/pymatgen): atoms that overlap.

A crystal's nearest neighbours are ≥ 0.7 Å apart (H–H in H₂ 0.74 Å; shortest bonds in the shared data ≥ 1.6 Å);
two atoms closer than :data:`MIN_DISTANCE_A` are an input error (a duplicated site, a wrong unit), for which a
model's density and a DFT calculation are meaningless."""

from __future__ import annotations

import numpy as np

#: Å; the closest periodic distance below which two atoms count as overlapping
MIN_DISTANCE_A = 0.5


def closest_pair(structure) -> tuple[int, int, float] | None:
    """(i, j, d): the two sites of a pymatgen Structure at the smallest periodic distance d (Å), or None for one
    atom."""
    n = len(structure)
    if n < 2:
        return None
    dist = np.asarray(structure.distance_matrix, dtype=float)
    iu = np.triu_indices(n, 1)
    k = int(np.argmin(dist[iu]))
    return int(iu[0][k]), int(iu[1][k]), float(dist[iu][k])


def overlap_reason(structure, min_distance: float = MIN_DISTANCE_A) -> str | None:
    """Why ``structure`` has overlapping atoms ("atoms 0 (Si) and 1 (Si) are 0.00 Å apart (< 0.5 Å)"), or None."""
    pair = closest_pair(structure)
    if pair is None or pair[2] >= min_distance:
        return None
    i, j, d = pair
    return (f"overlapping atoms: sites {i} ({structure[i].specie}) and {j} ({structure[j].specie}) are {d:.2f} Å "
            f"apart (< {min_distance} Å)")
