"""Equivariant models (torch + e3nn): atom encoder, charge-density head, DOS head.

torch is imported only under this package. The batch contract is :mod:`chgdata.models.keys`.
"""

from . import keys
from .config import ChargeDensityConfig, DosConfig, EncoderConfig, count_parameters
from .density import ChargeDensityModel, DensityHead, density_in_chunks
from .dos import DosHead, DosModel
from .encoder import AtomEncoder, GatedTensorProductBlock, IrrepsSequential, check_irreps
from .graph import collate, edge_vectors, probe_edge_vectors, structure_batch
from .neighbors import atom_edges, grid_positions, grid_probe_edges, probe_edges
from .radial import BesselBasis, geometric_weight, polynomial_cutoff

__all__ = [
    "AtomEncoder",
    "BesselBasis",
    "ChargeDensityConfig",
    "ChargeDensityModel",
    "DensityHead",
    "DosConfig",
    "DosHead",
    "DosModel",
    "EncoderConfig",
    "GatedTensorProductBlock",
    "IrrepsSequential",
    "atom_edges",
    "check_irreps",
    "collate",
    "count_parameters",
    "density_in_chunks",
    "edge_vectors",
    "geometric_weight",
    "grid_positions",
    "grid_probe_edges",
    "keys",
    "polynomial_cutoff",
    "probe_edge_vectors",
    "probe_edges",
    "structure_batch",
]
