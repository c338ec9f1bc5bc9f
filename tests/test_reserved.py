"""Compositions reserved for external evaluation appear in no data or model of the project, and are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pymatgen.core import Composition

from chgdata import reserved
from tests.conftest import REPO, SHARED_DATA, need_shared


def test_shipped_list_contains_the_shared_one():
    need_shared()
    assert reserved.SHARED.is_file()
    assert reserved.read_formulas(reserved.SHARED) <= reserved.read_formulas(reserved.SHIPPED)
    assert {"KF", "Li2O", "SiGe", "Pd", "FeNi3"} <= reserved.reserved_formulas()
    assert reserved.is_reserved("Ni3Fe") and reserved.is_reserved("K2F2") and not reserved.is_reserved("NaF")


def _folder_formulas(root: Path) -> dict[str, str]:
    return {m.parent.name: json.loads(m.read_text())["reduced_formula"] for m in root.glob("*/meta.json")}


def test_no_dataset_of_the_project_holds_a_reserved_composition():
    """The shared training sets and every dataset this repository computed (``datasets/``)."""
    need_shared()
    roots = [SHARED_DATA / "gpaw", SHARED_DATA / "gpaw-more", *sorted((REPO / "datasets").glob("*"))]
    found = {f"{root.name}/{fid}": f for root in roots if root.is_dir()
             for fid, f in _folder_formulas(root).items() if f in reserved.reserved_formulas()}
    assert not found


@pytest.mark.parametrize("name", ["density.pt", "dos.pt"])
def test_shipped_models_saw_no_reserved_composition(name):
    """Every id in the shipped checkpoints' splits (train, val and test) is a crystal of an allowed composition."""
    torch = pytest.importorskip("torch")
    need_shared()
    ck = torch.load(REPO / "models" / "default" / name, map_location="cpu", weights_only=False)
    formulas = {}
    for root in (SHARED_DATA / "gpaw", SHARED_DATA / "gpaw-more", *sorted((REPO / "datasets").glob("*"))):
        formulas.update(_folder_formulas(root))
    ids = {i for split in ck["splits"].values() for i in split}
    assert ids and ids <= set(formulas), sorted(ids - set(formulas))[:5]
    assert not {i: formulas[i] for i in ids if Composition(formulas[i]).reduced_formula in reserved.reserved_formulas()}
