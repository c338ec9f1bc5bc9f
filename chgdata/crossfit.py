"""Cross-fitted SAED references: each training material's reference fitted without its own fold of groups.

Why: build-delta fits the reference on the training materials themselves, so their Δρ = ρ − ρ_SAED are
*in-sample* residuals, small and anti-correlated between the compounds that share an element (the reference is
their compromise). A held-out compound's Δρ is an *out-of-sample* residual that also carries the reference's
transfer error (elemental Si: 17 % NMAE with a Si reference fitted on SiC and Co₂MnSi). A model trained on the
first kind of target learns little about the second. With cross-fitting, the training target of a material in
fold k is ρ − ρ_SAED(k), the reference fitted on the other folds, so training sees residuals of the kind it must
predict. Prediction still uses the reference fitted on the whole train split.

:func:`crossfit_tables` is pure: it takes the per-material normal equations
(:func:`chgdata.references.material_normal_equations`), each material's group and the valence counts.
"""

from __future__ import annotations

from collections.abc import Mapping

from chgdata.references import NormalEquations, ReferenceTable, solve_reference, sum_normal_equations
from chgdata.splits import grouped_folds

__all__ = ["crossfit_tables"]


def crossfit_tables(normal: Mapping[str, NormalEquations], groups: Mapping[str, str], valence: Mapping[str, int],
                    n_folds: int = 5, seed: int = 0, dataset_version: str = "crossfit") -> dict[str, ReferenceTable]:
    """{material id: reference fitted on the materials of the other folds} for the materials in ``normal``.

    Folds hold whole groups (:func:`chgdata.splits.grouped_folds`). A material with an element that no other
    fold contains gets no entry (its out-of-fold reference does not exist; callers keep the full-fit one)."""
    ids = sorted(normal)
    tables: dict[str, ReferenceTable] = {}
    for held in grouped_folds([groups.get(m, m) for m in ids], n_folds, seed):
        held_ids = {ids[i] for i in held}
        rest = sum_normal_equations(normal[m] for m in ids if m not in held_ids)
        table = solve_reference(rest, {e: valence[e] for e in rest.elements}, dataset_version=dataset_version)
        known = set(table.elements)
        tables.update({m: table for m in sorted(held_ids) if set(normal[m].elements) <= known})
    return tables
