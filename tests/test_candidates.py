"""Generated candidates: sane lattice constants (against the shared crystals), the variants, and what is left out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Composition

from chgdata import candidates as C
from chgdata.reserved import reserved_formulas
from tests.conftest import GPAW, SHARED_DATA, VASP, need_shared

#: Shared eq crystals and the generator's cell of the same prototype and composition.
SAME_PROTOTYPE = {
    "NaCl-rocksalt": lambda: C.rocksalt("Na", "Cl", 1), "MgO-rocksalt": lambda: C.rocksalt("Mg", "O", 2),
    "BaO-rocksalt": lambda: C.rocksalt("Ba", "O", 2), "ScN-rocksalt": lambda: C.rocksalt("Sc", "N", 3),
    "GaAs-zincblende": lambda: C.zincblende("Ga", "As"), "ZnSe-zincblende": lambda: C.zincblende("Zn", "Se"),
    "InP-zincblende": lambda: C.zincblende("In", "P"), "GaN-wurtzite": lambda: C.wurtzite("Ga", "N"),
    "CaF2-fluorite": lambda: C.fluorite("Ca", "F", 2, -1), "FeAl-B2": lambda: C.b2("Fe", "Al"),
    "CuZn-B2": lambda: C.b2("Cu", "Zn"), "Cu3Au-L12": lambda: C.l12("Cu", "Au"),
}


def _shared_eq() -> dict[str, dict]:
    out = {}
    for meta in sorted(SHARED_DATA.glob("gpaw*/*/meta.json")):
        m = json.loads(meta.read_text())
        if m["variant"] == "eq":
            out.setdefault(m["prototype"], m)
    return out


def test_lattice_constants_match_the_shared_crystals():
    """Volume per atom within 9 % (3 % in length) of the shared crystal of the same prototype."""
    need_shared()
    shared = _shared_eq()
    errors = {}
    for name, build in SAME_PROTOTYPE.items():
        cell = build()
        m = shared[name]
        assert cell.composition.reduced_formula == m["reduced_formula"], name
        errors[name] = (cell.volume / len(cell)) / (m["volume_A3"] / m["natoms"]) - 1
    bad = {k: f"{v:+.1%}" for k, v in errors.items() if abs(v) > 0.09}
    assert not bad, bad


def test_generated_list_is_new_sane_and_deterministic():
    need_shared()
    cands = C.generate_new(seed=0)
    assert cands == C.generate_new(seed=0)  # same ids in the same order
    ids = [c.id for c in cands]
    assert len(set(ids)) == len(ids)
    formulas = {c.reduced_formula for c in cands}
    assert len(formulas) >= 200
    assert not formulas & C.shared_formulas()
    assert not formulas & set(reserved_formulas())
    free_atoms = set(json.loads((Path(C.__file__).parent / "atoms" / "gpaw-pbe-free-atoms.json").read_text())
                     ["elements"])
    assert {el.symbol for c in cands for el in c.structure.composition} <= free_atoms
    eq = [c for c in cands if c.variant == "eq"]
    assert cands[:len(eq)] == eq  # every composition's eq first
    assert 0.2 < np.mean([c.spin for c in cands]) < 0.5
    for c in cands[::7]:
        s = c.structure
        d = s.distance_matrix[np.triu_indices(len(s), 1)].min() if len(s) > 1 else s.lattice.abc[0]
        assert d > 1.5, (c.id, d)
        assert len(s) <= 10
        assert len(c.magmoms) == len(s)


def test_variants_strain_and_rattle():
    cell = C.rocksalt("Na", "Br", 1)
    v = dict(C.variants("rocksalt", cell, seed=0))
    assert v["strain+4%"].volume == pytest.approx(cell.volume * 1.04 ** 3)
    assert v["strain-4%"].volume == pytest.approx(cell.volume * 0.96 ** 3)
    (label,) = [k for k in v if k.startswith("rattle")]
    rattled = v[label]
    assert len(rattled) == 2 * len(cell)
    assert rattled.composition.reduced_formula == "NaBr"
    assert 0.03 <= float(label[6:11]) <= 0.1


def test_ionic_prototypes_are_charge_balanced():
    for cell in (C.rocksalt("Sc", "As", 3), C.fluorite("O", "K", -2, 1), C.rutile("Zr", "O", 4),
                 C.perovskite("K", "Nb", "O", 1, 5, -2)):
        assert Composition(cell.composition.reduced_formula).oxi_state_guesses(), cell.composition


def test_structure_files_are_named_after_their_stem(tmp_path):
    need_shared()
    (c,) = C.from_files([GPAW / "gpaw-0001" / "CHGCAR.gz"])
    assert c.id == "CHGCAR" and c.reduced_formula == "Si" and not c.spin
    bad = tmp_path / "broken.cif"
    bad.write_text("data_x\n_cell_length_a 3\n")
    with pytest.raises(ValueError, match="broken.cif"):
        C.from_files([bad])
    with pytest.raises(ValueError, match="same name stem"):
        C.from_files([VASP / "Si_static" / "CHGCAR.gz", VASP / "NaCl" / "CHGCAR.gz"])
