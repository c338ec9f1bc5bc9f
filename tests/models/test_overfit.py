"""Tiny overfit tests on real data: the heads can represent one material's density grid and DOS window."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch
from chgdata.models import (
    ChargeDensityConfig,
    ChargeDensityModel,
    DosConfig,
    DosModel,
    grid_positions,
    structure_batch,
)

from tests.models.conftest import FECO, GPAW, C, load_chgcar, small_encoder


def test_density_head_overfits_one_grid(float32_models, rng):
    structure, data = load_chgcar(C)
    rho = data["total"] / structure.volume  # e/Å^3
    idx = rng.choice(rho.size, 2000, replace=False)
    probes = grid_positions(torch.tensor(structure.lattice.matrix), rho.shape).numpy()[idx]
    target = torch.tensor(rho.reshape(-1)[idx], dtype=torch.float32)[:, None]
    cfg = ChargeDensityConfig(
        encoder=small_encoder(n_scalars=16, n_vectors=8, n_layers=1, r_cut=3.0, n_radial_basis=8, radial_hidden=32,
                              avg_num_neighbors=10.0),
        probe_r_cut=2.5, n_edge_layers=1, n_edge_scalars=16, mlp_hidden=32, target="total")
    model = ChargeDensityModel(cfg)
    batch = structure_batch(structure.cart_coords, structure.atomic_numbers, structure.lattice.matrix,
                            cfg.encoder.r_cut, probe_positions=probes, probe_r_cut=cfg.probe_r_cut,
                            dtype=torch.float32)
    steps = 300
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=steps)
    nmae0 = None
    for _ in range(steps):
        opt.zero_grad()
        pred = model(batch)
        loss = (pred - target).abs().mean() / target.abs().mean()
        loss.backward()
        opt.step()
        sched.step()
        nmae0 = nmae0 if nmae0 is not None else 100 * float(loss.detach())
    with torch.no_grad():
        nmae = 100 * float((model(batch) - target).abs().sum() / target.abs().sum())
    assert nmae0 > 10
    assert nmae < 2.0, f"NMAE {nmae:.2f} % after {steps} steps (start {nmae0:.1f} %)"


def dos_window(material, n_points=400, window=(-10.0, 10.0), sigma=0.1):
    """Gaussian-smeared DOS on n_points energies in ``window`` around E_F, per spin, normalised to max 1."""
    path = GPAW / material / "dos.json.gz"
    if not path.exists():
        pytest.skip(f"shared data not found: {path}")
    with gzip.open(path, "rt") as fh:
        dos = json.load(fh)
    energies = np.asarray(dos["energies"]) - dos["efermi"]
    de = np.gradient(energies)
    grid = np.linspace(*window, n_points)
    kernel = np.exp(-0.5 * ((grid[:, None] - energies[None]) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
    spins = [np.asarray(dos["densities"][key]) for key in ("1", "-1") if key in dos["densities"]]
    out = np.stack([kernel @ (d * de) for d in spins])
    return out / out.max()


def test_dos_head_overfits_one_window(float32_models):
    structure, _ = load_chgcar(FECO)
    target = torch.tensor(dos_window(FECO), dtype=torch.float32)[None]  # (1, 2, 400)
    assert target.shape == (1, 2, 400)
    cfg = DosConfig(encoder=small_encoder(n_layers=1), n_points=400, n_spin=2, mlp_hidden=64)
    model = DosModel(cfg)
    batch = structure_batch(structure.cart_coords, structure.atomic_numbers, structure.lattice.matrix,
                            cfg.encoder.r_cut, dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    with torch.no_grad():
        mse0 = float(((model(batch) - target) ** 2).mean())
    for _ in range(300):
        opt.zero_grad()
        loss = ((model(batch) - target) ** 2).mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        mse = float(((model(batch) - target) ** 2).mean())
    assert mse < 1e-3 and mse < mse0 / 20, f"MSE {mse:.2e} (start {mse0:.2e})"
