"""O(3) (incl. parity), translation and permutation symmetry of every layer and of both models, in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from chgdata.models import (
    AtomEncoder,
    BesselBasis,
    ChargeDensityModel,
    DensityHead,
    DosHead,
    DosModel,
    GatedTensorProductBlock,
    keys,
    structure_batch,
)
from chgdata.models.symmetry import BATCH_SPEC, assert_equivariant, permute_atoms, random_o3, transform
from e3nn import o3

from tests.models.conftest import FECO, MIXED, SI, load_structure, small_density_config, small_dos_config, small_encoder

pytestmark = pytest.mark.usefixtures("float64_models")


def real_batch(material, rng, n_probes=24, probe_r_cut=3.0, r_cut=3.5):
    s = load_structure(material)
    cell = s.lattice.matrix
    probes = rng.random((n_probes, 3)) @ cell
    return structure_batch(s.cart_coords, s.atomic_numbers, cell, r_cut, probe_positions=probes,
                           probe_r_cut=probe_r_cut, dtype=torch.float64)


def test_checker_detects_a_non_equivariant_function(generator):
    x = torch.randn(5, 3, dtype=torch.float64, generator=generator)
    assert_equivariant(lambda v: v.norm(dim=-1, keepdim=True), [x], ["cartesian"], "0e")
    with pytest.raises(AssertionError):
        assert_equivariant(lambda v: v[:, :1], [x], ["cartesian"], "0e")
    # parity: a pseudo-scalar (triple product) is not a true scalar
    with pytest.raises(AssertionError):
        assert_equivariant(lambda v: torch.linalg.det(v[:3])[None], [x], ["cartesian"], "0e")
    assert_equivariant(lambda v: torch.linalg.det(v[:3])[None], [x], ["cartesian"], "0o")


def test_bessel_basis_invariant(generator):
    basis = BesselBasis(3.0, 6).double()
    vec = torch.randn(20, 3, dtype=torch.float64, generator=generator)
    assert_equivariant(lambda v: basis(v.norm(dim=-1)), [vec], ["cartesian"], "6x0e")


@pytest.mark.parametrize("aggregate", [False, True])
def test_gated_block_equivariant(aggregate, generator):
    irreps_in = "4x0e+2x0o+3x1o+2x1e+2x2e"
    irreps_sh = o3.Irreps.spherical_harmonics(2, p=-1)
    block = GatedTensorProductBlock(irreps_in, irreps_sh, "4x0e+4x0o+3x1o+3x1e+2x2e+2x2o", 5, 8,
                                    avg_num_neighbors=3.0 if aggregate else None).double()
    sh = o3.SphericalHarmonics(irreps_sh, normalize=True, normalization="component")
    basis = BesselBasis(3.0, 5).double()
    n_nodes, n_edges = 6, 15
    edge_index = torch.randint(0, n_nodes, (2, n_edges), generator=generator)
    n_rows = n_nodes if aggregate else n_edges
    x = torch.randn(n_rows, o3.Irreps(irreps_in).dim, dtype=torch.float64, generator=generator)
    vec = torch.randn(n_edges, 3, dtype=torch.float64, generator=generator) * 2

    def fn(x, vec):
        return block(x, sh(vec), basis(vec.norm(dim=-1)), edge_index if aggregate else None)

    assert_equivariant(fn, [x, vec], [irreps_in, "cartesian"], block.irreps_out)
    assert block.irreps_out.lmax == 2 and "0o" in str(block.irreps_out)


@pytest.mark.parametrize("material,element_features", [(SI, False), (FECO, False), (MIXED, False), (MIXED, True)])
def test_encoder_equivariant(material, element_features, rng):
    enc = AtomEncoder(small_encoder(n_layers=3, element_features=element_features)).double()
    batch = real_batch(material, rng)
    jitter = rng.normal(scale=0.1, size=batch[keys.POSITIONS].shape)
    batch[keys.POSITIONS] = batch[keys.POSITIONS] + torch.tensor(jitter)
    assert_equivariant(enc, [batch], [BATCH_SPEC], enc.irreps_out)
    assert enc.irreps_out.lmax == 2


def test_density_head_equivariant(rng):
    cfg = small_density_config(n_spin_channels=2)
    enc = AtomEncoder(cfg.encoder).double()
    head = DensityHead(cfg, enc.irreps_out).double()
    batch = real_batch(FECO, rng)
    feats = enc.irreps_out.randn(len(batch[keys.POSITIONS]), -1, dtype=torch.float64)
    assert_equivariant(head, [feats, batch], [enc.irreps_out, BATCH_SPEC], "2x0e", n_trials=2)


def test_dos_head_invariant(rng):
    cfg = small_dos_config()
    enc = AtomEncoder(cfg.encoder).double()
    head = DosHead(cfg, enc.irreps_out).double()
    batch = real_batch(SI, rng)
    feats = enc.irreps_out.randn(len(batch[keys.POSITIONS]), -1, dtype=torch.float64)
    assert_equivariant(lambda f, b: head(f, b).reshape(1, -1), [feats, batch], [enc.irreps_out, BATCH_SPEC], None)


@pytest.mark.parametrize("material", [SI, FECO])
def test_full_models_invariant(material, rng):
    batch = real_batch(material, rng)
    dens = ChargeDensityModel(small_density_config(n_spin_channels=2)).double()
    out = dens(batch)
    assert out.shape == (24, 2) and out.abs().sum() > 0
    assert_equivariant(dens, [batch], [BATCH_SPEC], "2x0e", n_trials=2)
    dos = DosModel(small_dos_config()).double()
    assert_equivariant(lambda b: dos(b).reshape(1, -1), [batch], [BATCH_SPEC], None, n_trials=2)


def test_permutation_of_atoms(rng, generator):
    batch = real_batch(MIXED, rng)
    perm = torch.randperm(len(batch[keys.POSITIONS]), generator=generator)
    assert not torch.equal(perm, torch.arange(len(perm)))
    permuted = permute_atoms(batch, perm)
    enc = AtomEncoder(small_encoder()).double()
    torch.testing.assert_close(enc(permuted), enc(batch)[perm])
    dens = ChargeDensityModel(small_density_config()).double()
    torch.testing.assert_close(dens(permuted), dens(batch))
    dos = DosModel(small_dos_config()).double()
    torch.testing.assert_close(dos(permuted), dos(batch))


def test_model_output_changes_when_structure_changes(rng, generator):
    """Guards against trivially invariant (e.g. constant) models passing the checks above."""
    batch = real_batch(MIXED, rng)
    dens = ChargeDensityModel(small_density_config()).double()
    rot = random_o3(False, generator)
    moved = dict(batch)
    moved[keys.POSITIONS] = transform(batch[keys.POSITIONS], "points", rot, torch.zeros(3))  # atoms only
    assert (dens(moved) - dens(batch)).abs().max() > 1e-6


def _probe_values(model, s, probes, cell=None, positions=None):
    cell = s.lattice.matrix if cell is None else cell
    positions = s.cart_coords if positions is None else positions
    batch = structure_batch(positions, s.atomic_numbers, cell, model.config.encoder.r_cut,
                            probe_positions=probes, probe_r_cut=model.config.probe_r_cut, dtype=torch.float64)
    with torch.no_grad():
        return model(batch)


@pytest.mark.parametrize("probe_sh", ["scaled", "unit"])
def test_density_continuous_at_nuclei(probe_sh, rng):
    """Probes approaching a nucleus from any direction tend to the value on it (fails for the legacy Y_l(r̂))."""
    s = load_structure(FECO)
    torch.manual_seed(3)
    model = ChargeDensityModel(small_density_config(2, probe_sh=probe_sh)).double().eval()
    dirs = rng.normal(size=(16, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    atom = s.cart_coords[0]
    out = _probe_values(model, s, np.vstack([atom, atom + 1e-7 * dirs]))
    spread = float((out[1:] - out[0]).abs().max() / out.abs().max())
    if probe_sh == "scaled":
        assert spread < 1e-5, spread
    else:  # the defect this option fixes: direction-dependent values as r -> 0
        assert spread > 1e-3, spread


def test_rotated_crystal_with_atoms_on_grid_points(rng):
    """FeCo B2 has both atoms on grid points: rotating the cell (fractions and grid unchanged) gives the same grid."""
    from chgdata.models.density import predict_grid

    s = load_structure(FECO)
    torch.manual_seed(4)
    model = ChargeDensityModel(small_density_config(2)).double().eval()
    grid = (8, 8, 8)
    assert np.allclose((s.frac_coords * 8) % 1, 0)  # atoms on grid points
    rot = random_o3(True, torch.Generator().manual_seed(5)).numpy()
    cell = s.lattice.matrix
    a = predict_grid(model, s.cart_coords, s.atomic_numbers, cell, grid, dtype=torch.float64)
    b = predict_grid(model, s.frac_coords @ (cell @ rot.T), s.atomic_numbers, cell @ rot.T, grid,
                     dtype=torch.float64)
    assert float((a - b).abs().max() / a.abs().max()) < 1e-10


# ----------------------------------------------------------------------------- DosNet blocks (seed 001)

DOSNET_PIECES = [(True, True), (True, False), (False, True), (False, False)]  # (attention, embedding_skip)


@pytest.mark.parametrize("attention,skip", DOSNET_PIECES)
def test_dosnet_block_equivariant(attention, skip, generator):
    from chgdata.models.dosnet import DosNetBlock
    from chgdata.models.radial import polynomial_cutoff

    irreps_in, irreps_f0 = "4x0e+2x0o+3x1o+2x1e+2x2e", "5x0e"
    irreps_sh = o3.Irreps.spherical_harmonics(2, p=-1)
    block = DosNetBlock(irreps_in, irreps_f0, irreps_sh, "4x0e+4x0o+3x1o+3x1e+2x2e+2x2o", 5, 8, 3.0, n_key=3,
                        attention=attention, embedding_skip=skip).double()
    sh = o3.SphericalHarmonics(irreps_sh, normalize=True, normalization="component")
    basis = BesselBasis(3.0, 5).double()
    n_nodes, n_edges = 6, 15
    edge_index = torch.randint(0, n_nodes, (2, n_edges), generator=generator)
    x = torch.randn(n_nodes, o3.Irreps(irreps_in).dim, dtype=torch.float64, generator=generator)
    f0 = torch.randn(n_nodes, 5, dtype=torch.float64, generator=generator)
    vec = torch.randn(n_edges, 3, dtype=torch.float64, generator=generator)

    def fn(x, f0, vec):
        r = vec.norm(dim=-1)
        return block(x, f0, sh(vec), basis(r), polynomial_cutoff(r, 3.0), edge_index)

    assert_equivariant(fn, [x, f0, vec], [irreps_in, irreps_f0, "cartesian"], block.irreps_out)
    assert block.irreps_out.lmax == 2 and "0o" in str(block.irreps_out)
    assert hasattr(block, "query") == attention


@pytest.mark.parametrize("material", [SI, FECO, MIXED])
def test_dosnet_encoder_and_model_invariant(material, rng):
    from chgdata.models.dosnet import DosNetEncoder

    enc = DosNetEncoder(small_encoder(n_layers=2), n_key=3).double()
    batch = real_batch(material, rng)
    batch[keys.POSITIONS] = batch[keys.POSITIONS] + torch.tensor(rng.normal(scale=0.1, size=(len(
        batch[keys.POSITIONS]), 3)))
    assert_equivariant(enc, [batch], [BATCH_SPEC], enc.irreps_out)
    dos = DosModel(small_dos_config(backbone="dosnet", n_key=3, element_features=material == MIXED,
                                    n_skip=3 if material == FECO else 0)).double()
    with torch.no_grad():  # a non-zero per-element bias (zero at construction)
        dos.head.bias.normal_(generator=torch.Generator().manual_seed(0))
    out = dos(batch)
    assert out.shape == (1, 2, 50) and out.abs().sum() > 0
    assert_equivariant(lambda b: dos(b).reshape(1, -1), [batch], [BATCH_SPEC], None, n_trials=2)


def test_dosnet_permutation_supercell_and_sensitivity(rng, generator):
    dos = DosModel(small_dos_config(backbone="dosnet", n_key=3)).double()
    batch = real_batch(MIXED, rng)
    perm = torch.randperm(len(batch[keys.POSITIONS]), generator=generator)
    torch.testing.assert_close(dos(permute_atoms(batch, perm)), dos(batch))
    s = load_structure(MIXED)
    sup = s * (2, 1, 1)  # mean pooling over atoms: a supercell is the same crystal, same window
    b_sup = structure_batch(sup.cart_coords, sup.atomic_numbers, sup.lattice.matrix, 3.5, dtype=torch.float64)
    b = structure_batch(s.cart_coords, s.atomic_numbers, s.lattice.matrix, 3.5, dtype=torch.float64)
    torch.testing.assert_close(dos(b_sup), dos(b))
    moved = dict(b)
    moved[keys.POSITIONS] = b[keys.POSITIONS] + torch.tensor(rng.normal(scale=0.2, size=(len(s), 3)))
    assert (dos(moved) - dos(b)).abs().max() > 1e-6  # not trivially invariant


def test_dosnet_continuous_when_a_neighbour_crosses_the_cutoff():
    """Two atoms in a big box moving apart through r_cut: the window changes continuously (the attention
    weights carry the smooth cutoff, the values vanish there)."""
    dos = DosModel(small_dos_config(backbone="dosnet", n_key=3)).double()
    r_cut = dos.config.encoder.r_cut
    cell = np.eye(3) * 20.0

    def window(d):
        pos = np.array([[0.0, 0.0, 0.0], [d, 0.3, 0.1]])
        b = structure_batch(pos, [14, 8], cell, r_cut, dtype=torch.float64)
        return dos(b)

    dist_cut = np.sqrt(r_cut**2 - 0.1)
    inside, outside = window(dist_cut - 1e-6), window(dist_cut + 1e-6)
    far = window(dist_cut - 0.5)
    assert (inside - outside).abs().max() < 1e-8
    assert (far - outside).abs().max() > 1e-6
