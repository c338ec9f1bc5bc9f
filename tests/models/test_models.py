"""Model behaviour: periodic cell choice, batching, cutoff continuity, empty probes, chunking, configs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from chgdata.models import (
    AtomEncoder,
    ChargeDensityConfig,
    ChargeDensityModel,
    DensityHead,
    DosConfig,
    DosModel,
    EncoderConfig,
    GatedTensorProductBlock,
    IrrepsSequential,
    collate,
    count_parameters,
    density_in_chunks,
    grid_positions,
    keys,
    structure_batch,
)
from e3nn import o3

from tests.models.conftest import (
    CO_FCC,
    FECO,
    MIXED,
    SI,
    load_structure,
    small_density_config,
    small_dos_config,
    small_encoder,
)

pytestmark = pytest.mark.usefixtures("float64_models")


def batch_for(structure, probes, cfg):
    return structure_batch(structure.cart_coords, structure.atomic_numbers, structure.lattice.matrix,
                           cfg.encoder.r_cut, probe_positions=probes, probe_r_cut=cfg.probe_r_cut,
                           dtype=torch.float64)


@pytest.mark.parametrize("material", [SI, FECO])
def test_supercell_gives_tiled_prediction(material, rng):
    s = load_structure(material)
    sup = s * (2, 1, 1)
    cfg = small_density_config(n_spin_channels=2)
    dens = ChargeDensityModel(cfg).double()
    probes = rng.random((50, 3)) @ sup.lattice.matrix  # points all over the supercell
    torch.testing.assert_close(dens(batch_for(sup, probes, cfg)), dens(batch_for(s, probes, cfg)))
    dos = DosModel(small_dos_config(encoder=cfg.encoder)).double()
    torch.testing.assert_close(dos(batch_for(sup, probes, cfg)), dos(batch_for(s, probes, cfg)))
    sum_dos = DosModel(small_dos_config(encoder=cfg.encoder, pooling="sum")).double()
    sum_dos.load_state_dict(dos.state_dict())
    torch.testing.assert_close(sum_dos(batch_for(sup, probes, cfg)), 2 * sum_dos(batch_for(s, probes, cfg)))


def test_batch_equals_separate_structures(rng):
    cfg = small_density_config()
    dens = ChargeDensityModel(cfg).double()
    dos = DosModel(small_dos_config(encoder=cfg.encoder)).double()
    singles = []
    for material, n in [(SI, 30), (CO_FCC, 20), (MIXED, 25)]:
        s = load_structure(material)
        singles.append(batch_for(s, rng.random((n, 3)) @ s.lattice.matrix, cfg))
    batch = collate(singles)
    assert batch[keys.CELL].shape == (3, 3, 3) and int(batch[keys.PROBE_BATCH].max()) == 2
    torch.testing.assert_close(dens(batch), torch.cat([dens(b) for b in singles]))
    torch.testing.assert_close(dos(batch), torch.cat([dos(b) for b in singles]))


def test_every_batch_field_has_a_kind_and_unknown_fields_are_refused(rng):
    """The field registry (keys.FIELD_KINDS): every key constant is declared; collation refuses a field of no
    kind instead of joining it along a guessed axis, and takes it once registered."""
    from chgdata import contract as C

    declared = {v for k, v in vars(keys).items() if k.isupper() and isinstance(v, str)}
    assert declared <= set(keys.FIELD_KINDS) and keys.ATOMIC_NUMBERS == C.COL_Z
    cfg = small_density_config()
    s = load_structure(SI)
    singles = [batch_for(s, rng.random((5, 3)) @ s.lattice.matrix, cfg) for _ in range(2)]
    for b in singles:
        b["probe_charge_test"] = torch.ones(5)
    with pytest.raises(KeyError, match="probe_charge_test"):
        collate(singles)
    keys.register_field("probe_charge_test", "probe")
    try:
        assert collate(singles)["probe_charge_test"].shape == (10,)
        with pytest.raises(ValueError, match="already registered"):
            keys.register_field("probe_charge_test", "atom")
    finally:
        del keys.FIELD_KINDS["probe_charge_test"]


def test_density_smooth_when_atom_crosses_probe_cutoff(rng):
    """Move an atom radially through the probe sphere: ρ and its first two differences have no jump."""
    s = load_structure(MIXED)
    cfg = small_density_config()
    dens = ChargeDensityModel(cfg).double()
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    probe = s.cart_coords[0] + cfg.probe_r_cut * direction  # atom 0 exactly at the cutoff for λ = 0
    lambdas = np.linspace(-0.03, 0.03, 61)
    values, n_edges = [], []
    for lam in lambdas:
        pos = s.cart_coords.copy()
        pos[0] -= lam * direction  # λ < 0: atom 0 inside the sphere
        b = structure_batch(pos, s.atomic_numbers, s.lattice.matrix, cfg.encoder.r_cut,
                            probe_positions=probe[None], probe_r_cut=cfg.probe_r_cut, dtype=torch.float64)
        n_edges.append(b[keys.PROBE_EDGE_INDEX].shape[1])
        with torch.no_grad():
            values.append(float(dens(b)[0, 0]))
    values = np.array(values)
    assert n_edges[0] == n_edges[-1] + 1  # the atom does cross the cutoff (inside at λ < 0)
    h = lambdas[1] - lambdas[0]
    d1 = np.diff(values) / h
    d2 = np.diff(values, 2) / h**2
    assert np.ptp(values) > 0  # not a constant: the check below is meaningful
    # a kink would make one |Δ²ρ|/h² ~ |jump of ρ'|/h, far above the smooth background
    assert np.abs(d2).max() <= 5 * np.median(np.abs(d2)) + 1e-6
    assert np.abs(np.diff(d1)).max() <= 5 * np.median(np.abs(np.diff(d1))) + 1e-8


def test_probe_without_neighbours_and_probe_on_atom():
    s = load_structure(SI)
    cfg = small_density_config(probe_r_cut=1.0)
    dens = ChargeDensityModel(cfg).double()
    frac_void = np.array([[0.5, 0.5, 0.5], [0.6, 0.6, 0.6]])  # Si at 0 and 1/4: far from both
    probes = np.vstack([frac_void @ s.lattice.matrix, s.cart_coords[:1]])  # last probe sits on an atom
    b = batch_for(s, probes, cfg)
    assert set(b[keys.PROBE_EDGE_INDEX][0].tolist()) == {2}
    b[keys.POSITIONS].requires_grad_(True)
    out = dens(b)
    assert torch.isfinite(out).all()
    assert torch.equal(out[:2], torch.zeros_like(out[:2]))
    (grad,) = torch.autograd.grad(out.sum(), b[keys.POSITIONS])
    assert torch.isfinite(grad).all()


def test_density_in_chunks_matches_single_pass():
    s = load_structure(FECO)
    cfg = small_density_config(n_spin_channels=2)
    dens = ChargeDensityModel(cfg).double()
    shape = (6, 5, 7)
    grid = density_in_chunks(dens, s.cart_coords, s.atomic_numbers, s.lattice.matrix, grid_shape=shape,
                             chunk_size=40)  # slabs of one x-plane
    points = grid_positions(torch.tensor(s.lattice.matrix), shape).numpy()
    full = dens(batch_for(s, points, cfg)).detach()
    torch.testing.assert_close(grid.reshape(-1, 2), full)
    chunked_points = density_in_chunks(dens, s.cart_coords, s.atomic_numbers, s.lattice.matrix,
                                       probe_positions=points, chunk_size=37)
    torch.testing.assert_close(chunked_points, full)
    with pytest.raises(ValueError):
        density_in_chunks(dens, s.cart_coords, s.atomic_numbers, s.lattice.matrix)


def test_irreps_mismatch_raises_at_construction():
    sh = o3.Irreps.spherical_harmonics(2, p=-1)
    a = GatedTensorProductBlock("4x0e", sh, "4x0e+2x1o", 4, 8, 5.0)
    b = GatedTensorProductBlock("4x0e+2x1e", sh, "4x0e", 4, 8, 5.0)
    with pytest.raises(ValueError, match="irreps mismatch"):
        IrrepsSequential([a, b])
    IrrepsSequential([a, GatedTensorProductBlock(a.irreps_out, sh, "4x0e", 4, 8, 5.0)])  # consistent: fine
    with pytest.raises(ValueError, match="no scalar"):
        GatedTensorProductBlock("2x1o", "0e", "3x0e", 4, 8)  # 1o ⊗ 0e cannot make scalars
    with pytest.raises(ValueError, match="cannot parse"):
        GatedTensorProductBlock("4x0q", sh, "4x0e", 4, 8)
    enc = AtomEncoder(small_encoder())
    with pytest.raises(ValueError, match="irreps mismatch"):
        IrrepsSequential(list(enc.blocks), irreps_in="3x0e")
    head = DensityHead(small_density_config(), enc.irreps_out)
    with pytest.raises(ValueError):
        head(torch.zeros(2, 5), {})


def test_configs_round_trip_and_validate():
    cfg = small_density_config(n_spin_channels=2)
    assert ChargeDensityConfig.from_dict(cfg.to_dict()) == cfg
    dcfg = small_dos_config()
    assert DosConfig.from_dict(dcfg.to_dict()) == dcfg
    assert EncoderConfig.from_dict(EncoderConfig().to_dict()) == EncoderConfig()
    with pytest.raises(ValueError):
        ChargeDensityConfig.from_dict({**cfg.to_dict(), "typo": 1})
    with pytest.raises(ValueError):
        ChargeDensityConfig(n_spin_channels=3)
    with pytest.raises(ValueError):
        DosConfig(pooling="max")
    # a model rebuilt from the stored config loads the stored weights
    model = ChargeDensityModel(cfg)
    clone = ChargeDensityModel(ChargeDensityConfig.from_dict(cfg.to_dict()))
    clone.load_state_dict(model.state_dict())
    assert count_parameters(model) == count_parameters(clone) > 1000
    assert EncoderConfig(l_max=1, parity=False).hidden_irreps() == "32x0e+8x1o"


@pytest.mark.parametrize("l_max", [1, 2, 3])
def test_scalar_only_head_layer_fast_path_equals_e3nn(l_max, rng):
    """A probe-edge layer that keeps scalars takes the per-channel dot-product path; it equals e3nn's TP."""
    sh_irreps = o3.Irreps.spherical_harmonics(l_max, p=-1)
    hidden = EncoderConfig(n_scalars=6, n_vectors=3, l_max=l_max).hidden_irreps()
    block = GatedTensorProductBlock(hidden, sh_irreps, "5x0e", 8, 16)
    assert block.scalar_paths is not None and len(block.scalar_paths) == l_max + 1
    x = torch.as_tensor(rng.normal(size=(50, block.irreps_in.dim)))
    sh = o3.spherical_harmonics(sh_irreps, torch.as_tensor(rng.normal(size=(50, 3))), normalize=True,
                                normalization="component")
    radial = torch.as_tensor(rng.uniform(size=(50, 8)))
    fast = block(x, sh, radial)
    paths, block.scalar_paths = block.scalar_paths, None  # e3nn's generic TensorProduct
    torch.testing.assert_close(fast, block(x, sh, radial), rtol=1e-12, atol=1e-12)
    block.scalar_paths = paths
    # layers with vector outputs (the encoder's, a first head layer of two) keep e3nn's TP
    assert GatedTensorProductBlock(hidden, sh_irreps, hidden, 8, 16).scalar_paths is None
