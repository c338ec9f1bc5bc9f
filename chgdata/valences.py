"""Valence electron counts per element, recovered from the electron counts ∫ρ dV of stored materials (no
pseudopotential library consulted): the integer counts that explain every material, with the SAED reference
fit's tolerance for the materials that no integer count explains."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

class ValenceCountError(ValueError):
    """The electron counts of the materials are not explained by one integer valence count per element.
    ``material_id``: the material worst explained, when one is."""

    def __init__(self, message: str, material_id: str | None = None):
        super().__init__(message)
        self.material_id = material_id


@dataclass(frozen=True)
class MaterialCounts:
    """What :func:`valence_counts` needs of one material: its id, species counts and ∫ρ dV (electrons)."""

    material_id: str
    species: Mapping[str, int]
    n_electrons: float


_CLOSED_CORES = (0, 2, 4, 10, 12, 18, 28, 30, 36, 46, 48, 54, 68, 78, 80, 86)


def candidate_valences(element: str) -> tuple[int, ...]:
    """Plausible valence counts of ``element``: Z minus each closed-sub-shell core, between 1 and 20."""
    from pymatgen.core.periodic_table import Element

    z = Element(element).Z
    return tuple(sorted({z - c for c in _CLOSED_CORES if 1 <= z - c <= 20}))


def valence_counts(
    materials: Iterable[MaterialCounts],
    *,
    known: Mapping[str, int] | None = None,
    rtol: float = 2e-3,
) -> dict[str, int]:
    """Each element's valence electron count from the materials' electron counts.

    Solves N_e(m) = Σ_Z n_Z(m) v_Z by least squares over the materials, rounds to integers and checks that
    every material is reproduced within ``rtol`` (relative). Elements the data cannot separate (the count
    matrix is rank-deficient, e.g. NaCl alone, or Ga only in GaAs and GaP) are resolved by trying the
    :func:`candidate_valences` of the ambiguous elements; exactly one consistent combination must remain, or
    pass ``known`` (element → count) to fix them. Raises :class:`ValenceCountError` when no integer assignment
    fits (e.g. one element computed with two different pseudopotentials) or when it stays ambiguous.
    """
    mats = list(materials)
    if not mats:
        raise ValenceCountError("no materials given")
    known = dict(known or {})
    elements = sorted({e for m in mats for e, n in m.species.items() if n})
    idx = {e: i for i, e in enumerate(elements)}
    a = np.zeros((len(mats), len(elements)))
    for row, m in enumerate(mats):
        for e, n in m.species.items():
            a[row, idx[e]] += n
    b = np.array([m.n_electrons for m in mats], dtype=np.float64)

    fixed = np.array([e in known for e in elements])
    v = np.zeros(len(elements))
    v[fixed] = [known[e] for e in elements if e in known]
    free = ~fixed
    rhs = b - a[:, fixed] @ v[fixed]
    af = a[:, free]
    sol, *_ = np.linalg.lstsq(af, rhs, rcond=None)
    # Null space of the free columns: directions the data cannot determine.
    _, sv, vt = np.linalg.svd(af, full_matrices=True)
    rank = int(np.sum(sv > 1e-9 * max(sv.max(initial=0.0), 1.0)))
    null = vt[rank:]
    free_names = [e for e in elements if e not in known]
    ambiguous = [free_names[j] for j in range(len(free_names)) if null.size and np.abs(null[:, j]).max() > 1e-9]

    def check(vfull: np.ndarray) -> np.ndarray:
        return np.abs(a @ vfull - b) / np.maximum(np.abs(b), 1.0)

    if not ambiguous:
        v[free] = np.round(sol)
        rel = check(v)
        if rel.max() > rtol or np.any(v <= 0):
            bad = int(np.argmax(rel))
            raise ValenceCountError(
                f"electron counts are inconsistent with integer valences {dict(zip(elements, v.astype(int)))}: "
                f"material {mats[bad].material_id} has {b[bad]:.4f} e but the valences give {a[bad] @ v:.4f} "
                f"(relative residual {rel[bad]:.2e} > {rtol:g}); one element may use two pseudopotentials",
                material_id=mats[bad].material_id,
            )
        return {e: int(x) for e, x in zip(elements, v)}

    # Enumerate candidate counts of the ambiguous elements; the rest follow by least squares.
    options = [candidate_valences(e) for e in ambiguous]
    n_combo = int(np.prod([len(o) for o in options]))
    if n_combo > 200_000:
        raise ValenceCountError(f"valences of {ambiguous} are not determined by the data; pass known=")
    solutions = []
    amb_cols = [idx[e] for e in ambiguous]
    rest = [j for j in range(len(elements)) if free[j] and j not in amb_cols]
    closest: tuple[float, int] = (np.inf, -1)  # (largest residual, its material) of the best failing combo
    for combo in itertools.product(*options):
        vv = v.copy()
        vv[amb_cols] = combo
        if rest:
            r_sol, *_ = np.linalg.lstsq(a[:, rest], b - np.delete(a, rest, axis=1) @ np.delete(vv, rest), rcond=None)
            vv[rest] = np.round(r_sol)
        if not np.all(vv > 0):
            continue
        rel = check(vv)
        if rel.max() <= rtol:
            solutions.append(vv)
        elif rel.max() < closest[0]:
            closest = (float(rel.max()), int(np.argmax(rel)))
    if len(solutions) > 1:
        # Tie-break: the assignment with the smallest largest count (Cd 12/Te 6 rather than Cd 2/Te 16 for CdTe
        # alone): semicore-heavy setups are the exception, and the fit's provenance records the counts used.
        peak = [float(s[amb_cols].max()) for s in solutions]
        best = [s for s, p in zip(solutions, peak) if p == min(peak)]
        if len(best) == 1:
            log.warning("valences of %s are ambiguous in the data; took the smallest-maximum assignment %s",
                        ambiguous, {e: int(best[0][idx[e]]) for e in ambiguous})
            solutions = best
    if len(solutions) != 1:
        found = [{e: int(x) for e, x in zip(elements, s)} for s in solutions[:4]]
        worst = mats[closest[1]].material_id if not solutions and closest[1] >= 0 else None
        raise ValenceCountError(
            f"valences of {ambiguous} are not determined by the electron counts "
            f"({len(solutions)} consistent candidate assignments, e.g. {found}"
            + (f"; {worst} is explained worst" if worst else "") + "); pass known=",
            material_id=worst,
        )
    return {e: int(x) for e, x in zip(elements, solutions[0])}


def robust_valence_counts(materials: Iterable[MaterialCounts], *, max_excluded: float = 0.05,
                          **kw) -> tuple[dict[str, int], dict[str, str]]:
    """:func:`valence_counts` that one bad material cannot break: non-integer electron counts (> 0.05 off) are left
    out, then the worst-explained material while no integer assignment fits, up to ``max_excluded`` (fraction, at
    least one); (valences, {left-out id: why}). More to leave out raises (a systematic error)."""
    mats = list(materials)
    excluded = {m.material_id: f"{m.n_electrons:.4f} electrons is not an integer count: left out of the "
                               "reference fit" for m in mats if abs(m.n_electrons - round(m.n_electrons)) > 0.05}
    limit = max(1, int(max_excluded * len(mats)))
    while True:
        kept = [m for m in mats if m.material_id not in excluded]
        try:
            return valence_counts(kept, **kw), excluded
        except ValenceCountError as exc:
            if exc.material_id is None or len(excluded) >= limit:
                raise
            excluded[exc.material_id] = f"left out of the reference fit: {exc}"
