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
    """:class:`chgdata.references.MaterialCounts` of a :func:`chgcar_material` dict."""
    from chgdata.references import MaterialCounts

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
