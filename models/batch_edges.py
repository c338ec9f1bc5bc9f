"""Probe–atom edges of training batches, built on the batch's device: the atom images that can reach each
structure's cell (made by the loader's workers), then every probe within ``probe_r_cut`` (Å) of an image."""

from __future__ import annotations

import numpy as np
import torch

from . import keys as K
from .neighbors import images_near_box, reciprocal_lengths


def atom_images(positions: np.ndarray, cell: np.ndarray, probe_r_cut: float) -> tuple[np.ndarray, np.ndarray]:
    """Atom images ``(atom, shift)`` that can lie within ``probe_r_cut`` (Å) of a point of the cell [0, 1)³."""
    cell = np.asarray(cell, np.float64)
    frac = np.asarray(positions, np.float64).reshape(-1, 3) @ np.linalg.inv(cell)
    return images_near_box(frac, np.zeros(3), np.ones(3), probe_r_cut * reciprocal_lengths(cell))


def _image_keys(batch: dict[str, torch.Tensor], probe_r_cut: float) -> dict[str, torch.Tensor]:
    """Image lists of every structure of ``batch``, made on the host (used when the loader did not add them)."""
    pos = batch[K.POSITIONS].detach().double().cpu().numpy()
    cells = batch[K.CELL].detach().double().cpu().numpy()
    abatch = batch[K.ATOM_BATCH].cpu().numpy()
    atoms, shifts, owners = [], [], []
    for s, cell in enumerate(cells):
        a_idx = np.flatnonzero(abatch == s)
        atom, shift = atom_images(pos[a_idx], cell, probe_r_cut)
        atoms.append(a_idx[atom])
        shifts.append(shift)
        owners.append(np.full(len(atom), s))
    dev = batch[K.POSITIONS].device
    return {K.IMAGE_ATOM: torch.as_tensor(np.concatenate(atoms), dtype=torch.int64, device=dev),
            K.IMAGE_SHIFT: torch.as_tensor(np.concatenate(shifts).reshape(-1, 3), dtype=torch.int64, device=dev),
            K.IMAGE_BATCH: torch.as_tensor(np.concatenate(owners), dtype=torch.int64, device=dev)}


def attach_probe_edges(batch: dict[str, torch.Tensor], probe_r_cut: float,
                       block: int = 1 << 24) -> dict[str, torch.Tensor]:
    """Add probe–atom edges (all periodic images within ``probe_r_cut``, Å) to ``batch``, on its device.

    Every probe is wrapped into its cell and compared with the atom images of its structure that can reach
    the cell (``IMAGE_*`` keys, made by the loader's workers when it knows the cutoff, else here on the host).
    The probe × image distance blocks of all structures are thresholded and flattened into one mask with a
    single ``nonzero``, so a batch costs two host synchronisations whatever its number of structures.
    ``block`` bounds the probe × image pairs held at once. Probes may lie anywhere.
    """
    if not all(k in batch for k in (K.IMAGE_ATOM, K.IMAGE_SHIFT, K.IMAGE_BATCH)):
        batch.update(_image_keys(batch, probe_r_cut))
    pos, cells = batch[K.POSITIONS].double(), batch[K.CELL].double()
    probes, pbatch = batch[K.PROBE_POSITIONS].double(), batch[K.PROBE_BATCH]
    img_atom, img_shift, img_batch = batch[K.IMAGE_ATOM], batch[K.IMAGE_SHIFT], batch[K.IMAGE_BATCH]
    dev, n_s = probes.device, cells.shape[0]

    p_order = torch.sort(pbatch, stable=True).indices  # probes grouped by structure (collate already does)
    i_order = torch.sort(img_batch, stable=True).indices
    counts = torch.stack([torch.bincount(pbatch, minlength=n_s), torch.bincount(img_batch, minlength=n_s)])
    (n_p, n_i) = counts.tolist()  # host sync 1: the block shapes
    t_probe = torch.floor(torch.einsum("kj,kji->ki", probes, torch.linalg.inv(cells)[pbatch]))
    wrapped = probes - torch.einsum("kj,kji->ki", t_probe, cells[pbatch])
    images = pos[img_atom] + torch.einsum("kj,kji->ki", img_shift.double(), cells[img_batch])

    masks, blocks = [], []  # blocks: (first flat index, first sorted probe, first sorted image, n images)
    flat = p0 = i0 = 0
    for s in range(n_s):
        if n_p[s] and n_i[s]:
            step = max(1, block // n_i[s])
            img_s = images[i_order[i0:i0 + n_i[s]]]
            for start in range(0, n_p[s], step):
                w = wrapped[p_order[p0 + start:p0 + min(n_p[s], start + step)]]
                masks.append((torch.cdist(w, img_s) < probe_r_cut).reshape(-1))
                blocks.append((flat, p0 + start, i0, n_i[s]))
                flat += w.shape[0] * n_i[s]
        p0, i0 = p0 + n_p[s], i0 + n_i[s]
    if not masks:
        batch[K.PROBE_EDGE_INDEX] = torch.zeros((2, 0), dtype=torch.int64, device=dev)
        batch[K.PROBE_EDGE_CELL_SHIFT] = torch.zeros((0, 3), dtype=torch.int64, device=dev)
        return batch
    hit = torch.nonzero(torch.cat(masks)).reshape(-1)  # host sync 2: the number of edges
    table = torch.tensor(blocks, dtype=torch.int64, device=dev)
    first, p_first, i_first, width = table[torch.searchsorted(table[:, 0].contiguous(), hit, right=True) - 1].T
    local = hit - first
    row = local // width
    k = p_order[p_first + row]
    j = i_order[i_first + local - row * width]
    batch[K.PROBE_EDGE_INDEX] = torch.stack([k, img_atom[j]])
    batch[K.PROBE_EDGE_CELL_SHIFT] = img_shift[j] + t_probe[k].long()
    return batch
