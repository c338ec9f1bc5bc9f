"""Which density a checkpoint predicts, and warnings when an input carries another convention.

A density model predicts the density of the code its training store came from. The shipped model was trained on
the GPAW set: GPAW's pseudo-valence density with the valence counts of the gpaw-data PAW setups (NaCl: Na 7 + Cl 7
= 14 e), not VASP's (the NaCl CHGCAR of ../shared/data/vasp, Na POTCAR: Na 1 + Cl 7 = 8 e). A Δ checkpoint's SAED
reference integrates to exactly those valence counts, so they say what ∫ρ dV of a prediction is.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

#: Checkpoint key: one line naming the code and kind of density the model predicts.
CONVENTION_KEY = "density_convention"
#: The shipped model's convention (models/default/README.md).
DEFAULT_CONVENTION = ("GPAW pseudo-valence density (gpaw-data PAW setups, PBE; e.g. NaCl integrates to 14 e = "
                      "Na 7 + Cl 7, where VASP with the Na POTCAR gives 8 e)")
#: An input whose electron count differs from the model's by more than this (electrons) gets a warning.
ELECTRON_TOLERANCE = 0.5


class ConventionWarning(UserWarning):
    """An input's density convention (electron count) differs from the model's."""


def density_convention(ckpt: dict[str, Any], default: bool = False) -> str:
    """One line naming what the checkpoint's ρ is: the stored ``density_convention``, the shipped model's, or the
    DFT code of the training store's card when it can be read."""
    text = ckpt.get(CONVENTION_KEY)
    if text:
        return str(text)
    if default:
        return DEFAULT_CONVENTION
    store = (ckpt.get("data_version") or {}).get("store")
    if store:
        try:
            from chgdata.store import Location, read_card

            codes = (read_card(Location.parse(store)).get("dft") or {}).get("codes") or []
        except Exception:  # noqa: BLE001 - a moved or remote store: fall back to the generic line
            codes = []
        if codes:
            return f"{'/'.join(c.upper() for c in codes)} valence density of the training store {store}"
    return "valence density of the model's training data (code not recorded in the checkpoint)"


def model_electrons(structure, reference) -> float | None:
    """∫ρ dV the model gives ``structure`` (Σ valence of its SAED reference), or None without a reference or
    when an element is missing from it."""
    if reference is None:
        return None
    try:
        return float(sum(reference.valence[site.specie.symbol] for site in structure))
    except KeyError:
        return None


def chgcar_electrons(path: str | os.PathLike) -> tuple[Any, float]:
    """(structure, ∫ρ dV in electrons) of a CHGCAR's total block (gzip/bz2/xz allowed)."""
    from pymatgen.io.vasp import Chgcar

    try:
        chg = Chgcar.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt: one line naming the file
        raise ValueError(f"{path}: unreadable CHGCAR ({type(exc).__name__}: {str(exc)[:160]})") from None
    return chg.structure, float(np.asarray(chg.data["total"], dtype=np.float64).mean())


def check_input(path: str | os.PathLike, reference, convention: str, what: str) -> str | None:
    """Warn (:class:`ConventionWarning`) and return the message when the CHGCAR at ``path`` holds a different
    number of electrons than the model gives its structure; None when they agree or cannot be compared."""
    structure, have = chgcar_electrons(path)
    want = model_electrons(structure, reference)
    if want is None or abs(have - want) <= ELECTRON_TOLERANCE:
        return None
    msg = (f"{what} {Path(path).name} holds {have:.2f} e but this model's density of that structure integrates to "
           f"{want:.0f} e: it predicts a {convention}, not the density convention of that file")
    warnings.warn(msg, ConventionWarning, stacklevel=2)
    return msg
