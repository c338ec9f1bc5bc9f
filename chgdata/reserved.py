"""Compositions reserved for external evaluation: never computed, ingested for training or trained on.

The list is ``../shared/RESERVED-FORMULAS.txt`` (reduced formulas, one per line, ``#`` comments); a copy ships in
the package (``chgdata/atoms/reserved-formulas.txt``) so that an installed chgdata refuses them too, and the two
are united where the shared file is present (the list may grow; it never shrinks).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pymatgen.core import Composition

SHIPPED = Path(__file__).parent / "atoms" / "reserved-formulas.txt"
#: Where the shared list lies beside a checkout (``$CHGDATA_RESERVED_FORMULAS`` overrides).
SHARED = Path(__file__).resolve().parents[2] / "shared" / "RESERVED-FORMULAS.txt"


def read_formulas(path: Path) -> set[str]:
    """Reduced formulas of one list file."""
    lines = (ln.split("#")[0].strip() for ln in path.read_text().splitlines())
    return {Composition(ln).reduced_formula for ln in lines if ln}


@lru_cache(maxsize=1)
def reserved_formulas() -> frozenset[str]:
    """The shipped list united with the shared one (and ``$CHGDATA_RESERVED_FORMULAS`` when set)."""
    out = read_formulas(SHIPPED)
    extra = os.environ.get("CHGDATA_RESERVED_FORMULAS")
    for path in (SHARED, Path(extra) if extra else None):
        if path is not None and path.is_file():
            out |= read_formulas(path)
    return frozenset(out)


def is_reserved(formula: str) -> bool:
    """True when the reduced formula of ``formula`` (any formula pymatgen reads) is reserved."""
    return Composition(formula).reduced_formula in reserved_formulas()
