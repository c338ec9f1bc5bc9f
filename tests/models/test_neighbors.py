"""Neighbour lists against a brute-force reference, and the two probe paths against each other."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from chgdata.models import atom_edges, grid_positions, grid_probe_edges, probe_edges

from tests.models.conftest import CO_FCC, FECO, SI, load_structure

pytestmark = pytest.mark.usefixtures("float64_models")


def brute_force(points, positions, cell, r_cut, exclude_zero=False):
    """All (point, atom, shift) with |point - atom - S @ cell| < r_cut, by enumerating a big shift box."""
    n = int(np.ceil(r_cut * np.linalg.norm(np.linalg.inv(cell), axis=0).max())) + 2
    shifts = np.array(list(itertools.product(range(-n - 2, n + 3), repeat=3)))
    images = positions[:, None, :] + (shifts @ cell)[None]  # (n_atoms, n_shifts, 3)
    out = set()
    for k, p in enumerate(points):
        d = np.linalg.norm(p - images, axis=-1)
        mask = d < r_cut
        if exclude_zero:
            mask &= d > 0
        for a, s in zip(*np.nonzero(mask)):
            out.add((k, a, *shifts[s]))
    return out


def as_set(edge_index, shifts):
    edge_index, shifts = np.asarray(edge_index), np.asarray(shifts)
    return {(int(a), int(b), *map(int, s)) for a, b, s in zip(edge_index[0], edge_index[1], shifts)}


@pytest.mark.parametrize("material", [SI, CO_FCC, FECO])
def test_atom_edges_match_brute_force(material, rng):
    s = load_structure(material)
    pos = s.cart_coords + rng.normal(scale=0.05, size=s.cart_coords.shape)  # break symmetry ties
    cell = s.lattice.matrix
    ei, shift = atom_edges(pos, cell, 4.0)
    assert as_set(ei, shift) == brute_force(pos, pos, cell, 4.0, exclude_zero=True)
    # the receiver sees the sender at the vector given by the convention of keys.py
    vec = pos[ei[1]] + shift @ cell - pos[ei[0]]
    assert np.all(np.linalg.norm(vec, axis=1) < 4.0)


def test_short_lattice_vectors_give_several_images():
    s = load_structure(CO_FCC)
    assert min(s.lattice.abc) < 3.0
    ei, shift = atom_edges(s.cart_coords, s.lattice.matrix, 4.0)
    assert np.all(ei[0] == ei[1])  # one atom: every neighbour is an image of itself
    assert len(ei[0]) > 12  # fcc: 12 nearest + 6 second neighbours within 4 Å


@pytest.mark.parametrize("material", [SI, CO_FCC])
def test_probe_paths_agree_with_brute_force(material, rng):
    s = load_structure(material)
    cell = s.lattice.matrix
    pos = s.cart_coords + rng.normal(scale=0.05, size=s.cart_coords.shape) + cell[0]  # outside the cell
    shape = (5, 6, 7)
    points = grid_positions(torch.tensor(cell), shape).numpy()
    reference = brute_force(points, pos, cell, 3.3)
    kd = as_set(*probe_edges(points, pos, cell, 3.3))
    grid = as_set(*grid_probe_edges(torch.tensor(pos), torch.tensor(cell), shape, 3.3))
    assert kd == reference
    assert grid == reference
    # one slab of the grid gives the matching subset, probe indices relative to the slab
    ei, sh = grid_probe_edges(torch.tensor(pos), torch.tensor(cell), shape, 3.3, x_range=(2, 4))
    per_x = shape[1] * shape[2]
    slab = {(k + 2 * per_x, *rest) for k, *rest in as_set(ei, sh)}
    assert slab == {e for e in reference if 2 * per_x <= e[0] < 4 * per_x}
    with pytest.raises(ValueError, match="slab"):
        grid_probe_edges(torch.tensor(pos), torch.tensor(cell), shape, 3.3, x_range=(3, 9))


def test_probe_edges_arbitrary_points_outside_cell(rng):
    s = load_structure(SI)
    cell, pos = s.lattice.matrix, s.cart_coords
    points = rng.uniform(-8, 8, size=(40, 3))
    points[0] = pos[1]  # a probe exactly on an atom keeps the zero-distance edge
    assert as_set(*probe_edges(points, pos, cell, 3.0)) == brute_force(points, pos, cell, 3.0)
    ei, _ = probe_edges(points[:1], pos, cell, 0.5)
    assert ei.shape[1] == 1


def test_grid_edges_float32_match_float64():
    s = load_structure(FECO)
    pos, cell = torch.tensor(s.cart_coords), torch.tensor(s.lattice.matrix)
    e64 = as_set(*grid_probe_edges(pos, cell, (9, 9, 9), 3.1))
    e32 = as_set(*grid_probe_edges(pos.float(), cell.float(), (9, 9, 9), 3.1))
    assert len(e64 ^ e32) <= 0.001 * len(e64)  # only pairs at |r| = r_cut to rounding may differ
