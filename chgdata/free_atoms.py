"""SAED references from isolated neutral atoms instead of crystals, and the tables that ship with chgdata.

:func:`isolated_atom_reference` fits the Gaussian reference of :mod:`chgdata.references` to atoms computed alone
in a periodic box (``tools/gpaw_free_atoms.py`` computes them with GPAW); :data:`SHIPPED_REFERENCES` names the
tables in ``chgdata/atoms/`` that ``build-delta --reference NAME`` takes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from chgdata.references import (
    DEFAULT_SIGMAS,
    ReferenceTable,
    material_normal_equations,
    solve_reference,
    sum_normal_equations,
)

__all__ = ["SHIPPED_REFERENCES", "isolated_atom_reference", "reference_kind", "shipped_reference_path"]

#: Reference tables that ship with chgdata, by name (``build-delta --reference NAME``).
SHIPPED_REFERENCES = {
    # GPAW 26.7 free neutral atoms (tools/gpaw_free_atoms.py): the convention of ../shared/data/gpaw*.
    "gpaw-free-atoms": Path(__file__).parent / "atoms" / "gpaw-pbe-free-atoms.json",
}


def reference_kind(reference_id: str | None, source: str | None = None) -> str:
    """What a SAED reference is, in words: a shipped free-atom table (by its name), or by the card's
    ``reference_source`` (fitted: on the store's train split; file: given by the user)."""
    import json

    for name, path in SHIPPED_REFERENCES.items():
        if reference_id and json.loads(path.read_text()).get("id") == reference_id:
            return f"free-atom reference (shipped {name})"
    return {"fitted": "train-fitted reference (the store's train split)", "file": "reference from a file",
            "free-atoms": "free-atom reference"}.get(source or "", "reference")


def shipped_reference_path(name_or_path: str | Path) -> Path:
    """``name_or_path`` itself, or the file of a shipped table named in :data:`SHIPPED_REFERENCES`."""
    if str(name_or_path) in SHIPPED_REFERENCES:
        return SHIPPED_REFERENCES[str(name_or_path)]
    path = Path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(f"no reference table {name_or_path!r}: give a JSON file or one of "
                                f"{sorted(SHIPPED_REFERENCES)}")
    return path


def isolated_atom_reference(
    atoms: Iterable[tuple[str, np.ndarray, np.ndarray, float]],
    *,
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    provenance: Mapping | None = None,
) -> ReferenceTable:
    """A reference fitted to isolated neutral atoms, each alone in a periodic box, instead of to crystals.

    ``atoms`` yields (element, lattice 3×3 Å, ρ on the box grid e/Å^3, electron count ∫ρ dV) with the atom at
    the box centre. Each element's Gaussian coefficients are the sum-constrained least-squares fit to its atom's
    density at every grid point, built with the periodic images exactly as a crystal's SAED is, so the table
    does not depend on which compounds a dataset holds (no crystal enters the fit). The valence count is the
    atom's rounded electron count, which must be within 10⁻³ e of an integer (a charged or truncated density
    is refused).
    """
    parts, valence = [], {}
    for element, lattice, rho, n_electrons in atoms:
        n_int = round(float(n_electrons))
        if abs(float(n_electrons) - n_int) > 1e-3 or n_int < 1:
            raise ValueError(f"{element}: electron count {n_electrons:.4f} is not a whole valence count")
        if element in valence:
            raise ValueError(f"{element} given twice")
        valence[element] = n_int
        rho = np.asarray(rho, dtype=np.float64)
        if not np.all(np.isfinite(rho)):
            raise ValueError(f"{element}: density has non-finite values")
        parts.append(material_normal_equations(
            np.asarray(lattice, dtype=np.float64), np.full((1, 3), 0.5), [element], rho,
            np.random.default_rng(0), sigmas=sigmas, n_points=rho.size, material_id=f"atom:{element}",
        ))
    normal = sum_normal_equations(parts)
    prov = {"source": "isolated neutral atoms", **dict(provenance or {})}
    table = solve_reference(normal, valence, dataset_version=str(prov.get("dataset_version", "free-atoms")))
    table.provenance.update(prov)  # the id is unchanged: it covers dataset_version, passed to the solve above
    return table
