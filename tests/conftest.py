"""Shared fixtures: the real data in ../shared/data and stores ingested from it (built once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
VASP = SHARED_DATA / "vasp"
GPAW = SHARED_DATA / "gpaw"
# VASP folders of ../shared/data/vasp with a CHGCAR (reference fits and SAED tests)
VASP_CHGCARS = ["Si_static", "Al_fcc", "Fe_bcc_spin", "Fe_bcc_nospin", "Li_bcc_spin", "Li_bcc_nospin", "NaCl",
                "TiPt_slab_adsorbate"]


def chgcar_material(chgcar: Path, material_id: str) -> dict:
    """One CHGCAR as the dict the reference and SAED tests use: lattice (Å), fractional coordinates, species,
    ρ (e/Å³), volume (Å³) and the electron count."""
    from pymatgen.io.vasp import Chgcar

    c = Chgcar.from_file(str(chgcar))
    s = c.structure
    return {
        "id": material_id, "lattice": s.lattice.matrix, "frac": s.frac_coords,
        "species": [site.specie.symbol for site in s], "rho": c.data["total"] / s.volume, "volume": s.volume,
        "n_electrons": float(c.data["total"].mean()),
    }


def material_counts(m: dict):
    """:class:`chgdata.valences.MaterialCounts` of a :func:`chgcar_material` dict."""
    from chgdata.valences import MaterialCounts

    return MaterialCounts(m["id"], {e: m["species"].count(e) for e in set(m["species"])}, m["n_electrons"])


def need_shared() -> None:
    if not GPAW.is_dir() or not VASP.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")


def _ingested(tmp_path_factory, root: Path) -> str:
    """``root`` ingested into a fresh store through the local process cluster (no failures allowed)."""
    need_shared()
    from chgdata.pipelines.ingest import run_ingest

    store = str(tmp_path_factory.mktemp("stores") / root.name)
    report = run_ingest(store, from_dir=str(root), workers=2, progress=False)
    assert not report.failed, report.failed
    return store


@pytest.fixture(scope="session")
def vasp_store(tmp_path_factory) -> str:
    """All of ../shared/data/vasp, ingested once per session."""
    return _ingested(tmp_path_factory, VASP)


@pytest.fixture(scope="session")
def gpaw_store(tmp_path_factory) -> str:
    """All of ../shared/data/gpaw, ingested once per session."""
    return _ingested(tmp_path_factory, GPAW)


# ---- the Materials Project boundary ---------------------------------------------------------------------


def _rester_class(route: str) -> type:
    """The rester class mp-api mounts at ``route`` ("materials/core", "materials/tasks", …), or AttributeError."""
    import importlib

    from mp_api.client.mprester import RESTER_LAYOUT

    lazy = RESTER_LAYOUT.get(route)
    if lazy is None:
        raise AttributeError(f"the installed mp-api's MPRester has no {route.replace('/core', '').replace('/', '.')}")
    return getattr(importlib.import_module(lazy._module_name), lazy._class_name)


def _autospec(cls: type, path: str, answers: dict):
    """``cls`` autospecced; its public methods not in ``answers`` raise when called (no silent MagicMock)."""
    import inspect
    from unittest import mock

    double = mock.create_autospec(cls, instance=True)
    for name, _ in inspect.getmembers(cls, inspect.isfunction):
        if not name.startswith("_") and f"{path}{name}" not in answers:
            getattr(double, name).side_effect = AssertionError(f"unexpected MPRester call {path}{name}")
    return double


def fake_mprester(answers: dict, db_version: str = "2025.09.25"):
    """A test double of ``mp_api.client.MPRester`` that cannot have names the real client lacks.

    Built with ``unittest.mock.create_autospec`` from the installed MPRester and from the rester classes mp-api
    mounts under it (``materials`` → MaterialsRester, ``materials.tasks`` → TaskRester, …, from mp-api's own
    ``RESTER_LAYOUT``): reading an attribute the real client lacks raises AttributeError, a call with arguments the
    real method does not take raises TypeError, and building the double with an answer for a name MP lacks
    (``materials.chgcar.search``) fails at once. ``answers`` maps dotted method names to the callables that
    answer them; every other real method raises AssertionError when called. ``db_version`` is the instance
    attribute MPRester.__init__ sets from the server's heartbeat.
    """
    from mp_api.client import MPRester

    root = _autospec(MPRester, "", answers)
    root.db_version = db_version
    root.__enter__.return_value = root
    resters: dict[str, object] = {"": root}
    for dotted, fn in answers.items():
        *route, method = dotted.split(".")
        for depth in range(1, len(route) + 1):
            key = ".".join(route[:depth])
            if key not in resters:
                top, sub = route[0], "/".join(route[1:depth]) or "core"
                if depth > 2:
                    raise AttributeError(f"the installed mp-api's MPRester has no {key}")
                resters[key] = _autospec(_rester_class(f"{top}/{sub}"), key + ".", answers)
                setattr(resters[".".join(route[:depth - 1])], route[depth - 1], resters[key])
        owner = resters[".".join(route)]
        getattr(owner, method).side_effect = fn  # AttributeError when the real class has no such method
    return root
