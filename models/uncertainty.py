"""What the density model does not know: the disagreement of the ensemble's members, cheap on a coarse grid.

For an ensemble checkpoint (``chgdata ensemble``; the shipped model has four members) each member predicts Δρ̂ on a
coarse grid (default 0.3 Å); the spread is Σ_grid std_members(Δρ̂) / Σ_grid ρ_SAED in percent, in the units of
NMAE, so that it reads as "the error the members' disagreement suggests". ``chgdata propose`` ranks candidate
structures by it: the most uncertain are computed first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from chgdata.grid import grid_for_spacing

from .checkpoint import PredictError, reference_table
from .density import member_grids
from .kinds import is_ensemble
from .predict import atomic_numbers

#: Grid spacing [Å] of the spread: coarse, as the spread is an average over the cell.
SPREAD_SPACING_A = 0.3


@dataclass
class Spread:
    """One structure's ensemble spread (%, NMAE units) on ``grid``."""

    name: str
    formula: str
    spread_pct: float
    grid: tuple[int, int, int]


def member_spread(model, ckpt: dict, structure, spacing: float = SPREAD_SPACING_A,
                  grid: Sequence[int] | None = None, name: str = "") -> Spread:
    """The spread of ``model``'s members for one pymatgen ``structure`` (see the module docstring)."""
    from chgdata.saed import saed_for_structure

    if not is_ensemble(model) or len(model.members) < 2:
        raise PredictError("the spread needs an ensemble checkpoint of two or more members (chgdata ensemble)")
    grid = tuple(int(n) for n in (grid or grid_for_spacing(structure.lattice.matrix, spacing)))
    z = atomic_numbers(structure)
    outs = member_grids(model, structure.cart_coords, z, structure.lattice.matrix, grid).numpy().sum(-1)
    outs = outs.astype(np.float64)  # (members, nx, ny, nz), all members in one pass
    saed = saed_for_structure(structure, grid, reference_table(ckpt)).astype(np.float64)
    spread = float(outs.std(axis=0).sum() / np.abs(saed).sum() * 100.0)
    return Spread(name, structure.composition.reduced_formula, spread, grid)


def rank_by_spread(named_structures: Sequence[tuple[str, object]], model, ckpt: dict,
                   spacing: float = SPREAD_SPACING_A,
                   callback: Callable[[int, int], None] | None = None) -> list[Spread]:
    """Spreads of ``(name, structure)`` pairs, most uncertain first."""
    out = []
    for i, (name, s) in enumerate(named_structures):
        out.append(member_spread(model, ckpt, s, spacing, name=name))
        if callback is not None:
            callback(i + 1, len(named_structures))
    return sorted(out, key=lambda sp: -sp.spread_pct)
