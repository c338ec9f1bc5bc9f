"""Periodic neighbour lists: atom–atom edges (vesin) and probe–atom edges (cKDTree or regular grid).

All functions follow the conventions of :mod:`chgdata.models.keys`: lattice vectors are rows of ``cell``
(Å), shifts are integer lattice translations, an atom edge ``(i, j, S)`` has vector
``positions[j] + S @ cell - positions[i]`` and a probe edge ``(k, i, S)`` has vector
``probe[k] - positions[i] - S @ cell``. Every periodic image within ``r_cut`` is found, also when a lattice
vector is shorter than ``r_cut`` (several images of the same atom are then neighbours). Pairs at distance
exactly ``>= r_cut`` are excluded; self pairs at zero distance are excluded for atom edges only.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from scipy.spatial import cKDTree


def reciprocal_lengths(cell: np.ndarray) -> np.ndarray:
    """Lengths |b_a| (1/Å) of the reciprocal vectors without 2π; 1/|b_a| is the spacing of lattice planes."""
    return np.linalg.norm(np.linalg.inv(cell), axis=0)


def atom_edges(positions: np.ndarray, cell: np.ndarray, r_cut: float) -> tuple[np.ndarray, np.ndarray]:
    """Full periodic atom–atom neighbour list within ``r_cut`` using vesin.

    Parameters
    ----------
    positions : (n_atoms, 3) array, Å
    cell : (3, 3) array, lattice vectors as rows, Å
    r_cut : float, Å

    Returns
    -------
    edge_index : (2, n_edges) int64, rows (receiver i, sender j)
    edge_cell_shift : (n_edges, 3) int64, so that ``positions[j] + S @ cell - positions[i]`` is the edge vector
    """
    from vesin import NeighborList

    positions = np.ascontiguousarray(positions, dtype=np.float64)
    cell = np.ascontiguousarray(cell, dtype=np.float64)
    nl = NeighborList(cutoff=float(r_cut), full_list=True)
    i, j, shifts, dist = nl.compute(points=positions, box=cell, periodic=True, quantities="ijSd")
    keep = (dist < r_cut) & (dist > 0)
    edge_index = np.stack([i[keep], j[keep]]).astype(np.int64)
    edge_cell_shift = np.asarray(shifts[keep], dtype=np.int64).reshape(-1, 3)
    # vesin may wrap positions internally; re-derive shifts from the actual vectors to be safe.
    vec = positions[edge_index[1]] + edge_cell_shift @ cell - positions[edge_index[0]]
    d_check = np.linalg.norm(vec, axis=1)
    if not np.allclose(d_check, dist[keep], atol=1e-6):
        raise RuntimeError("vesin shifts do not reproduce its distances; check the vesin version")
    return edge_index, edge_cell_shift


def images_near_box(frac: np.ndarray, lo: np.ndarray, hi: np.ndarray, delta: np.ndarray):
    """Integer shifts S for each atom such that ``frac + S`` lies in ``[lo - delta, hi + delta]`` per axis."""
    s_min = np.floor(lo - delta - frac.max(0)).astype(np.int64)
    s_max = np.ceil(hi + delta - frac.min(0)).astype(np.int64)
    shifts = np.array(list(itertools.product(*[range(a, b + 1) for a, b in zip(s_min, s_max)])), np.int64)
    centres = frac[:, None, :] + shifts[None, :, :]
    keep = np.all((centres >= lo - delta) & (centres <= hi + delta), axis=-1)
    atom, s_idx = np.nonzero(keep)
    return atom, shifts[s_idx]


def probe_edges(
    probe_positions: np.ndarray, positions: np.ndarray, cell: np.ndarray, r_cut: float
) -> tuple[np.ndarray, np.ndarray]:
    """Probe–atom edges within ``r_cut`` for arbitrary query points (vectorised cKDTree search).

    Probes are wrapped into the cell, a tree is built over the atom images that can reach the cell, and all
    pairs are found at once with ``cKDTree.sparse_distance_matrix``.

    Parameters
    ----------
    probe_positions : (n_probes, 3) array, Å (anywhere in space)
    positions : (n_atoms, 3) array, Å
    cell : (3, 3) array, Å
    r_cut : float, Å

    Returns
    -------
    probe_edge_index : (2, n_edges) int64, rows (probe k, atom i)
    probe_edge_cell_shift : (n_edges, 3) int64, with ``probe[k] - positions[i] - S @ cell`` the edge vector
    """
    probe_positions = np.asarray(probe_positions, np.float64).reshape(-1, 3)
    positions = np.asarray(positions, np.float64).reshape(-1, 3)
    cell = np.asarray(cell, np.float64)
    inv = np.linalg.inv(cell)
    empty = np.zeros((2, 0), np.int64), np.zeros((0, 3), np.int64)
    if len(probe_positions) == 0 or len(positions) == 0:
        return empty
    t_probe = np.floor(probe_positions @ inv).astype(np.int64)
    wrapped = probe_positions - t_probe @ cell
    delta = r_cut * reciprocal_lengths(cell)
    atom, shifts = images_near_box(positions @ inv, np.zeros(3), np.ones(3), delta)
    images = positions[atom] + shifts @ cell
    pairs = cKDTree(wrapped).sparse_distance_matrix(cKDTree(images), r_cut, output_type="ndarray")
    pairs = pairs[pairs["v"] < r_cut]
    k, img = pairs["i"].astype(np.int64), pairs["j"].astype(np.int64)
    order = np.lexsort((img, k))
    k, img = k[order], img[order]
    return np.stack([k, atom[img]]), shifts[img] + t_probe[k]


def _check_x_range(grid_shape, x_range) -> tuple[int, int]:
    x0, x1 = (0, int(grid_shape[0])) if x_range is None else (int(x_range[0]), int(x_range[1]))
    if not 0 <= x0 < x1 <= grid_shape[0]:
        raise ValueError(f"x_range {x_range} is not a non-empty slab of a grid with n_x = {grid_shape[0]}")
    return x0, x1


def grid_positions(
    cell: torch.Tensor, grid_shape: tuple[int, int, int], x_range: tuple[int, int] | None = None
) -> torch.Tensor:
    """Cartesian positions (Å) of the points ``(n / N) @ cell`` of a regular grid, C order (x slowest).

    ``x_range = (start, stop)`` restricts to the slab ``start <= n_x < stop`` (one chunk of the grid).
    """
    n0, n1, n2 = grid_shape
    x0, x1 = _check_x_range(grid_shape, x_range)
    axes = [
        torch.arange(x0, x1, device=cell.device, dtype=cell.dtype) / n0,
        torch.arange(n1, device=cell.device, dtype=cell.dtype) / n1,
        torch.arange(n2, device=cell.device, dtype=cell.dtype) / n2,
    ]
    frac = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
    return frac @ cell


def grid_probe_edges(
    positions: torch.Tensor,
    cell: torch.Tensor,
    grid_shape: tuple[int, int, int],
    r_cut: float,
    x_range: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Probe–atom edges for the points of a regular grid, fully in torch (runs on the tensors' device).

    For every atom image that can reach the slab, the rows ``(n_x, n_y)`` of its fractional bounding box are
    enumerated and, per row, the range of ``n_z`` inside the sphere is solved from a quadratic; edges are
    then expanded with ``repeat_interleave`` and filtered by the exact distance. Work is proportional to the
    number of edges, not to ``n_probes × n_atoms``.

    Parameters
    ----------
    positions : (n_atoms, 3) tensor, Å
    cell : (3, 3) tensor, Å
    grid_shape : (n_x, n_y, n_z), points at ``(n / N) @ cell``
    r_cut : float, Å
    x_range : (start, stop) or None; probes are the slab's points in C order (see :func:`grid_positions`)

    Returns
    -------
    probe_edge_index : (2, n_edges) int64 on the device, rows (probe k within the slab, atom i)
    probe_edge_cell_shift : (n_edges, 3) int64
    """
    dev, dt = positions.device, positions.dtype
    n = torch.tensor(grid_shape, device=dev, dtype=torch.int64)
    nf = n.to(dt)
    x0, x1 = _check_x_range(grid_shape, x_range)
    inv = torch.linalg.inv(cell)
    delta = r_cut * torch.linalg.norm(inv, dim=0)
    lo = torch.tensor([x0 / grid_shape[0], 0.0, 0.0], device=dev, dtype=dt)
    hi = torch.stack([(x1 - 1) / nf[0], (nf[1] - 1) / nf[1], (nf[2] - 1) / nf[2]])
    atom_np, shifts_np = images_near_box(
        (positions @ inv).detach().cpu().double().numpy(),
        lo.cpu().double().numpy(),
        hi.detach().cpu().double().numpy(),
        delta.detach().cpu().double().numpy() + 1e-9,
    )
    atom = torch.as_tensor(atom_np, device=dev)
    shifts = torch.as_tensor(shifts_np, device=dev)
    centre = (positions @ inv)[atom] + shifts.to(dt)  # fractional image centres (n_img, 3)

    # rows (image, n_x, n_y) of the bounding box, clipped to the slab / grid
    lo_idx = torch.ceil((centre[:, :2] - delta[:2]) * nf[:2]).long() - 1
    hi_idx = torch.floor((centre[:, :2] + delta[:2]) * nf[:2]).long() + 1
    lo_idx[:, 0].clamp_(min=x0)
    hi_idx[:, 0].clamp_(max=x1 - 1)
    lo_idx[:, 1].clamp_(min=0)
    hi_idx[:, 1].clamp_(max=grid_shape[1] - 1)
    count = (hi_idx - lo_idx + 1).clamp(min=0)
    k0 = int(count[:, 0].max()) if len(count) else 0
    k1 = int(count[:, 1].max()) if len(count) else 0
    empty = torch.zeros((2, 0), dtype=torch.int64, device=dev), torch.zeros((0, 3), dtype=torch.int64, device=dev)
    if k0 == 0 or k1 == 0:
        return empty
    o0 = torch.arange(k0, device=dev)
    o1 = torch.arange(k1, device=dev)
    i0 = lo_idx[:, 0, None, None] + o0[None, :, None]  # (n_img, k0, 1)
    i1 = lo_idx[:, 1, None, None] + o1[None, None, :]  # (n_img, 1, k1)
    valid = (i0 <= hi_idx[:, 0, None, None]) & (i1 <= hi_idx[:, 1, None, None])
    img, a, b = torch.nonzero(valid, as_tuple=True)
    r0 = lo_idx[img, 0] + a
    r1 = lo_idx[img, 1] + b

    # per row: |A + t a_z|^2 < r^2 with t = n_z / N_z - c_z
    az = cell[2]
    big_a = (r0.to(dt) / nf[0] - centre[img, 0])[:, None] * cell[0] + (
        r1.to(dt) / nf[1] - centre[img, 1]
    )[:, None] * cell[1]
    qa = az @ az
    qb = big_a @ az
    qc = (big_a * big_a).sum(-1) - r_cut**2
    disc = qb * qb - qa * qc
    has = disc > 0
    root = torch.sqrt(disc.clamp(min=0))
    t_lo = (-qb - root) / qa
    t_hi = (-qb + root) / qa
    z_lo = (torch.ceil((centre[img, 2] + t_lo) * nf[2]).long() - 1).clamp(min=0)
    z_hi = (torch.floor((centre[img, 2] + t_hi) * nf[2]).long() + 1).clamp(max=grid_shape[2] - 1)
    nz = torch.where(has, (z_hi - z_lo + 1).clamp(min=0), torch.zeros_like(z_lo))
    total = int(nz.sum())
    if total == 0:
        return empty
    row = torch.repeat_interleave(torch.arange(len(nz), device=dev), nz)
    start = torch.cumsum(nz, 0) - nz
    r2 = z_lo[row] + (torch.arange(total, device=dev) - start[row])

    vec = big_a[row] + (r2.to(dt) / nf[2] - centre[img[row], 2])[:, None] * az
    keep = (vec * vec).sum(-1) < r_cut**2
    row, r2 = row[keep], r2[keep]
    probe = ((r0[row] - x0) * grid_shape[1] + r1[row]) * grid_shape[2] + r2
    edge_img = img[row]
    return torch.stack([probe, atom[edge_img]]), shifts[edge_img]
