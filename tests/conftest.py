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
