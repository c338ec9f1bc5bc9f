"""Batch keys: the single contract between data loading, training, prediction and the models.

A batch is a plain ``dict[str, torch.Tensor]`` holding one or more periodic structures concatenated along
the atom axis (NequIP style). Geometry is never stored as Cartesian edge vectors: edges carry *integer*
lattice shifts ``S`` so that rotating ``positions`` and ``cell`` together rotates every edge vector, and
``positions`` may be anywhere (they need not be wrapped into the cell).

Conventions
-----------
* Lattice vectors are the *rows* of ``cell`` (pymatgen ``Lattice.matrix``), in Å.
* Atom edge ``e = (i, j)`` with shift ``S_e``: the neighbour image of ``j`` seen from ``i`` is at
  ``positions[j] + S_e @ cell[b]``; the edge vector is ``r_ij = positions[j] + S_e @ cell[b] - positions[i]``.
  Messages flow from ``j`` (sender) to ``i`` (receiver); the list is full (both directions present).
* Probe edge ``e = (k, i)`` with shift ``S_e``: atom ``i``'s image at ``positions[i] + S_e @ cell[b]``; the
  edge vector points from that image to the probe, ``r_ik = probe_positions[k] - positions[i] - S_e @ cell[b]``.
* Densities are in e/Å^3 (CHGCAR values divided by the cell volume), DOS windows in states/eV as produced
  by the data pipeline (normalised or not, the model does not care).
"""

from __future__ import annotations

from chgdata import contract as C

# ---- per atom --------------------------------------------------------------------------------------------
POSITIONS = "positions"  # (n_atoms, 3) float, Cartesian, Å
ATOMIC_NUMBERS = C.COL_Z  # (n_atoms,) int64, Z (the store's column of the same name)
ATOM_BATCH = "batch"  # (n_atoms,) int64, index of the structure each atom belongs to

# ---- per structure ---------------------------------------------------------------------------------------
CELL = "cell"  # (n_struct, 3, 3) float, lattice vectors as rows, Å
N_STRUCTURES = "n_structures"  # () int64, number of structures in the batch

# ---- atom-atom edges -------------------------------------------------------------------------------------
EDGE_INDEX = "edge_index"  # (2, n_edges) int64, rows (receiver i, sender j), within r_cut, full list
EDGE_CELL_SHIFT = "edge_cell_shift"  # (n_edges, 3) int64 (or float holding integers), lattice shifts S

# ---- probes (query points of the density) ----------------------------------------------------------------
PROBE_POSITIONS = "probe_positions"  # (n_probes, 3) float, Cartesian, Å
PROBE_BATCH = "probe_batch"  # (n_probes,) int64, index of the structure each probe belongs to
PROBE_EDGE_INDEX = "probe_edge_index"  # (2, n_probe_edges) int64, rows (probe k, atom i), |r_ik| < r_cut
PROBE_EDGE_CELL_SHIFT = "probe_edge_cell_shift"  # (n_probe_edges, 3) int64, lattice shifts S of atom i
# atom images that can lie within the probe cutoff of a point of their cell (optional: made by the loader so
# that the device builds probe edges without asking the host; see data.attach_probe_edges)
IMAGE_ATOM = "image_atom"  # (n_images,) int64, atom of each image
IMAGE_SHIFT = "image_shift"  # (n_images, 3) int64, lattice shift S of the image
IMAGE_BATCH = "image_batch"  # (n_images,) int64, structure of each image

# ---- targets ---------------------------------------------------------------------------------------------
TARGET_DENSITY = "target_density"  # (n_probes, n_spin_channels) float, e/Å^3 (Δρ or ρ; ↑,↓ when spin)
PROBE_WEIGHT = "probe_weight"  # (n_probes,) float, loss weight of each probe (mean 1 over the training set)
TARGET_DOS = "target_dos"  # (n_struct, n_spin, n_points) float, DOS window on the model's energy grid


# Index-valued keys and what they index into; used when concatenating structures into one batch.
INDEX_OFFSETS = {
    ATOM_BATCH: "structure",
    PROBE_BATCH: "structure",
    EDGE_INDEX: ("atom", "atom"),
    PROBE_EDGE_INDEX: ("probe", "atom"),
    IMAGE_ATOM: "atom",
    IMAGE_BATCH: "structure",
}

#: The axis every field runs along (NequIP's per-atom / per-edge / per-graph field registry): collation joins
#: fields of a kind along that axis (pairs of indices, shape (2, n), along their second) and refuses fields it
#: does not know, so a new field is declared here (or with :func:`register_field`) before it is batched.
FIELD_KINDS: dict[str, str] = {
    POSITIONS: "atom", ATOMIC_NUMBERS: "atom", ATOM_BATCH: "atom",
    CELL: "structure", TARGET_DOS: "structure", N_STRUCTURES: "batch",
    EDGE_INDEX: "edge", EDGE_CELL_SHIFT: "edge",
    PROBE_POSITIONS: "probe", PROBE_BATCH: "probe", TARGET_DENSITY: "probe", PROBE_WEIGHT: "probe",
    PROBE_EDGE_INDEX: "probe_edge", PROBE_EDGE_CELL_SHIFT: "probe_edge",
    IMAGE_ATOM: "image", IMAGE_SHIFT: "image", IMAGE_BATCH: "image",
}
#: Index fields laid out as (2, n): rows of (receiver, sender) or (probe, atom).
PAIR_FIELDS = (EDGE_INDEX, PROBE_EDGE_INDEX)
KINDS = ("atom", "structure", "batch", "edge", "probe", "probe_edge", "image")


def register_field(key: str, kind: str) -> None:
    """Declare a new batch field and the axis it runs along (one of :data:`KINDS`)."""
    if kind not in KINDS:
        raise ValueError(f"field kind {kind!r}: one of {', '.join(KINDS)}")
    if FIELD_KINDS.get(key, kind) != kind:
        raise ValueError(f"field {key!r} is already registered as {FIELD_KINDS[key]!r}")
    FIELD_KINDS[key] = kind
