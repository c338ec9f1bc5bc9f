"""Rotation-invariant descriptors of a whole crystal: chemistry of its elements and of its nearest-neighbour bonds.

A short, fixed vector per structure (:data:`DESCRIPTOR_NAMES`), for models that must transfer to compositions
absent from training (the kernel DOS model of :mod:`chgdata.models.dos_kernel`). Per-element properties come
from pymatgen's periodic table, never from the data, so an unseen element still gets its place:

* composition-weighted mean and standard deviation of electronegativity (Pauling), period, group, atomic
  radius (Å), atomic number and outer-shell electron count (group-derived: 1–12 for groups 1–12, group − 10
  for 13–18), the spread max − min of electronegativity, the number of elements, and the atomic fractions in the
  s, p, d and f blocks;
* the first coordination shell of every site (neighbours within 15 % of its shortest distance, searched out to
  ``r_max`` Å): mean coordination number, mean electronegativity difference across those bonds, mean shortest
  distance (Å); and the mean atomic volume as a length, (V / N)^(1/3) (Å).

These are the ingredients that place a DOS on E − E_F: the electron count per atom fills the bands, the
electronegativity difference across bonds separates ionic (gapped) from metallic crystals, and coordination and
distances set band widths.
"""

from __future__ import annotations

import warnings
from functools import cache

import numpy as np

__all__ = ["DESCRIPTOR_NAMES", "structure_descriptors", "outer_electrons"]

_ELEMENT_PROPS = ("electronegativity", "period", "group", "atomic_radius", "Z", "outer_electrons")
DESCRIPTOR_NAMES: tuple[str, ...] = (
    tuple(f"mean_{p}" for p in _ELEMENT_PROPS) + tuple(f"std_{p}" for p in _ELEMENT_PROPS)
    + ("electronegativity_spread", "n_elements", "frac_s", "frac_p", "frac_d", "frac_f",
       "coordination", "bond_electronegativity_difference", "nearest_distance_A", "atomic_volume_length_A")
)


def outer_electrons(group: int) -> int:
    """Outer-shell electrons from the periodic-table group: the group for 1–12, group − 10 for 13–18."""
    return group if group <= 12 else group - 10


@cache
def _element(symbol: str) -> tuple[np.ndarray, str]:
    from pymatgen.core.periodic_table import Element

    el = Element(symbol)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen warns for missing electronegativity / radius
        x = el.X if el.X == el.X else 2.0  # noble gases have none: a mid value
        radius = float(el.atomic_radius or 1.5)
    props = np.array([x, el.row, el.group, radius, el.Z, outer_electrons(el.group)], dtype=np.float64)
    return props, el.block


def structure_descriptors(structure, r_max: float = 6.0) -> np.ndarray:
    """:data:`DESCRIPTOR_NAMES` of a pymatgen ``Structure`` (float64); ValueError for an empty structure or one
    whose atoms have no neighbour within ``r_max`` Å."""
    if len(structure) == 0:
        raise ValueError("structure has no sites")
    comp = structure.composition.fractional_composition.element_composition
    symbols = [el.symbol for el in comp]
    x = np.array([float(comp[el]) for el in comp])
    props = np.array([_element(s)[0] for s in symbols])
    mean = x @ props
    std = np.sqrt(x @ (props - mean) ** 2)
    blocks = [sum(xi for xi, s in zip(x, symbols, strict=True) if _element(s)[1] == b) for b in "spdf"]
    chem = props[:, 0]

    cn, dx, dmin = [], [], []
    for site, neighbours in zip(structure, structure.get_all_neighbors(r_max), strict=True):
        if not neighbours:
            raise ValueError(f"site {site.species_string} has no neighbour within {r_max} Å")
        d = np.array([n.nn_distance for n in neighbours])
        shell = [n for n, dn in zip(neighbours, d, strict=True) if dn < 1.15 * d.min()]
        xi = _element(site.specie.symbol)[0][0]
        cn.append(len(shell))
        dx.append(np.mean([abs(xi - _element(n.specie.symbol)[0][0]) for n in shell]))
        dmin.append(d.min())
    return np.concatenate([mean, std, [chem.max() - chem.min(), len(symbols)], blocks,
                           [np.mean(cn), np.mean(dx), np.mean(dmin), (structure.volume / len(structure)) ** (1 / 3)]])
