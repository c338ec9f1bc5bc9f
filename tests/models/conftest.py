"""Shared fixtures for the model tests: real gpaw structures, small float64 models, seeded generators."""

from __future__ import annotations

import functools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("e3nn")
pytest.importorskip("vesin")

from chgdata.models import ChargeDensityConfig, DosConfig, EncoderConfig  # noqa: E402

from tests.conftest import GPAW  # noqa: E402

SI = "gpaw-0001"  # Si2 diamond, 24^3 grid
C = "gpaw-0008"  # C2 diamond, 15^3 grid (small, for the overfit test)
FECO = "gpaw-0160"  # FeCo B2, spin-polarised
CO_FCC = "gpaw-0152"  # Co fcc primitive, V = 9.6 Å^3: lattice vectors (2.4 Å) shorter than the cutoffs
MIXED = "gpaw-0103"  # AlN wurtzite, 4 atoms, two elements


@functools.cache
def load_chgcar(material: str):
    """(pymatgen Structure, {"total": ρ·V, "diff": ...}) of one gpaw folder, or skip when data are absent."""
    path = GPAW / material / "CHGCAR.gz"
    if not path.exists():
        pytest.skip(f"shared data not found: {path}")
    from pymatgen.io.vasp import Chgcar

    chg = Chgcar.from_file(str(path))
    return chg.structure, chg.data


def load_structure(material: str):
    return load_chgcar(material)[0]


def small_encoder(**kw) -> EncoderConfig:
    base = dict(n_scalars=8, n_vectors=4, l_max=2, n_layers=2, r_cut=3.5, n_radial_basis=6, radial_hidden=16,
                avg_num_neighbors=12.0)
    base.update(kw)
    return EncoderConfig(**base)


def small_density_config(n_spin_channels: int = 1, **kw) -> ChargeDensityConfig:
    base = dict(encoder=small_encoder(), probe_r_cut=3.0, n_edge_layers=2, n_edge_scalars=8, mlp_hidden=16,
                n_spin_channels=n_spin_channels)
    base.update(kw)
    return ChargeDensityConfig(**base)


def small_dos_config(**kw) -> DosConfig:
    base = dict(encoder=small_encoder(), n_points=50, n_spin=2, mlp_hidden=16)
    base.update(kw)
    return DosConfig(**base)


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def _torch_state(dtype):
    torch.manual_seed(0)
    previous, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(dtype)
    torch.set_num_threads(1)  # tiny tensors: one thread is faster and robust to a busy machine
    return previous, threads


@pytest.fixture
def float64_models():
    """Seed torch's global generator (model initialisation) and build models in float64.

    e3nn computes Clebsch–Gordan and Wigner matrices in the default dtype, so float64 comparisons need the
    modules to be *constructed* in float64, not only cast afterwards. Not autouse: other test modules in
    this folder keep torch's defaults.
    """
    previous, threads = _torch_state(torch.float64)
    yield
    torch.set_default_dtype(previous)
    torch.set_num_threads(threads)


@pytest.fixture
def float32_models():
    """Seeded, float32 (as in training), one thread."""
    previous, threads = _torch_state(torch.float32)
    yield
    torch.set_default_dtype(previous)
    torch.set_num_threads(threads)
