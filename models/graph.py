"""Build batch dicts (see :mod:`chgdata.models.keys`) for structures and compute edge vectors in torch."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from . import keys as K
from .neighbors import atom_edges, probe_edges


def edge_vectors(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Atom edge vectors ``r_ij = pos[j] + S @ cell - pos[i]`` (n_edges, 3), Å."""
    pos = batch[K.POSITIONS]
    i, j = batch[K.EDGE_INDEX]
    cell = batch[K.CELL][batch[K.ATOM_BATCH][i]]
    shift = batch[K.EDGE_CELL_SHIFT].to(pos.dtype)
    return pos[j] - pos[i] + torch.einsum("ea,eab->eb", shift, cell)


def probe_edge_vectors(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Probe edge vectors ``r_ik = probe[k] - pos[i] - S @ cell`` (n_probe_edges, 3), Å."""
    pos = batch[K.POSITIONS]
    k, i = batch[K.PROBE_EDGE_INDEX]
    cell = batch[K.CELL][batch[K.ATOM_BATCH][i]]
    shift = batch[K.PROBE_EDGE_CELL_SHIFT].to(pos.dtype)
    return batch[K.PROBE_POSITIONS][k] - pos[i] - torch.einsum("ea,eab->eb", shift, cell)


def structure_batch(
    positions,
    atomic_numbers,
    cell,
    r_cut: float,
    probe_positions=None,
    probe_r_cut: float | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> dict[str, torch.Tensor]:
    """Batch dict of one periodic structure, with atom edges and (optionally) probe edges.

    Parameters
    ----------
    positions : (n_atoms, 3) array-like, Å
    atomic_numbers : (n_atoms,) ints
    cell : (3, 3) array-like, lattice vectors as rows, Å
    r_cut : atom–atom cutoff, Å
    probe_positions : (n_probes, 3) array-like, Å, or None
    probe_r_cut : probe–atom cutoff, Å (needed with probes)
    """
    dtype = dtype or torch.get_default_dtype()
    pos = np.asarray(positions, np.float64).reshape(-1, 3)
    cell = np.asarray(cell, np.float64).reshape(3, 3)
    ei, shift = atom_edges(pos, cell, r_cut)
    out = {
        K.POSITIONS: torch.tensor(pos, dtype=dtype),
        K.ATOMIC_NUMBERS: torch.as_tensor(np.asarray(atomic_numbers), dtype=torch.int64).reshape(-1),
        K.ATOM_BATCH: torch.zeros(len(pos), dtype=torch.int64),
        K.CELL: torch.tensor(cell, dtype=dtype)[None],
        K.EDGE_INDEX: torch.as_tensor(ei),
        K.EDGE_CELL_SHIFT: torch.as_tensor(shift),
    }
    if probe_positions is not None:
        if probe_r_cut is None:
            raise ValueError("probe_r_cut is required with probe_positions")
        probes = np.asarray(probe_positions, np.float64).reshape(-1, 3)
        pei, pshift = probe_edges(probes, pos, cell, probe_r_cut)
        out[K.PROBE_POSITIONS] = torch.tensor(probes, dtype=dtype)
        out[K.PROBE_BATCH] = torch.zeros(len(probes), dtype=torch.int64)
        out[K.PROBE_EDGE_INDEX] = torch.as_tensor(pei)
        out[K.PROBE_EDGE_CELL_SHIFT] = torch.as_tensor(pshift)
    return {k: v.to(device) for k, v in out.items()} if device is not None else out


def collate(batches: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Concatenate batch dicts, offsetting structure, atom and probe indices.

    Keys absent from any input are dropped; fields of every kind (:data:`~chgdata.models.keys.FIELD_KINDS`) are
    concatenated along their first axis (index pairs along the second); a field of no declared kind is refused.
    """
    common = set(batches[0]).intersection(*batches[1:]) - {K.N_STRUCTURES}
    unknown = sorted(k for k in common if k not in K.FIELD_KINDS)
    if unknown:
        raise KeyError(f"batch fields of no declared kind: {unknown} (declare them with "
                       "chgdata.models.keys.register_field)")
    out: dict[str, list[torch.Tensor]] = {k: [] for k in common}
    n_struct = n_atom = n_probe = 0
    for b in batches:
        offsets = {
            "structure": n_struct,
            "atom": n_atom,
            "probe": n_probe,
        }
        for key in common:
            value = b[key]
            spec = K.INDEX_OFFSETS.get(key)
            if spec is None:
                out[key].append(value)
            elif isinstance(spec, str):
                out[key].append(value + offsets[spec])
            else:
                add = torch.tensor([offsets[s] for s in spec], device=value.device)[:, None]
                out[key].append(value + add)
        n_struct += b[K.CELL].shape[0]
        n_atom += b[K.POSITIONS].shape[0]
        if K.PROBE_POSITIONS in b:
            n_probe += b[K.PROBE_POSITIONS].shape[0]
    return {k: torch.cat(v, dim=1 if k in K.PAIR_FIELDS else 0) for k, v in out.items()}
