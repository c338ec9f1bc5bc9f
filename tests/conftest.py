"""Shared fixtures: the real data in ../shared/data and stores ingested from it (built once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
VASP = SHARED_DATA / "vasp"
GPAW = SHARED_DATA / "gpaw"


def need_shared() -> None:
    if not GPAW.is_dir() or not VASP.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")


@pytest.fixture(scope="session")
def vasp_store(tmp_path_factory) -> str:
    """All of ../shared/data/vasp ingested through the local process cluster."""
    need_shared()
    from chgdata.pipelines.ingest import run_ingest

    store = str(tmp_path_factory.mktemp("stores") / "vasp")
    report = run_ingest(store, from_dir=str(VASP), workers=2, progress=False)
    assert not report.failed, report.failed
    return store


@pytest.fixture(scope="session")
def gpaw_store(tmp_path_factory) -> str:
    """All of ../shared/data/gpaw ingested through the local process cluster."""
    need_shared()
    from chgdata.pipelines.ingest import run_ingest

    store = str(tmp_path_factory.mktemp("stores") / "gpaw")
    report = run_ingest(store, from_dir=str(GPAW), workers=2, progress=False)
    assert not report.failed, report.failed
    return store
