"""Model configurations: plain dataclasses with ``to_dict``/``from_dict`` so checkpoints can store them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from torch import nn

CONFIG_VERSION = 1  # bump on breaking changes of the fields below (checkpoint format)


class _DictMixin:
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (nested configs become dicts), tagged with the config version."""
        out = dataclasses.asdict(self)
        out["config_version"] = CONFIG_VERSION
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        data = dict(data)
        version = data.pop("config_version", CONFIG_VERSION)
        if version != CONFIG_VERSION:
            raise ValueError(f"{cls.__name__}: config_version {version} != supported {CONFIG_VERSION}")
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(data) - set(names)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown config keys {sorted(unknown)}")
        kwargs = {}
        for key, value in data.items():
            if key == "encoder" and isinstance(value, dict):
                value = EncoderConfig.from_dict(value)
            elif isinstance(value, list):
                value = tuple(value)
            kwargs[key] = value
        return cls(**kwargs)


@dataclass
class EncoderConfig(_DictMixin):
    """NequIP-like atom encoder.

    Attributes
    ----------
    n_elements : embedding table size (atomic numbers 0..n_elements-1)
    n_scalars : channels of each l = 0 irrep
    n_vectors : channels of each l > 0 irrep
    l_max : highest angular momentum of the spherical harmonics and of the features
    parity : keep both parities for every l (O(3) features); False keeps only (-1)^l (SO(3)-like features)
    n_layers : interaction blocks
    r_cut : atom–atom cutoff, Å
    n_radial_basis : Bessel functions
    cutoff_p : polynomial cutoff order
    radial_hidden : hidden width of the radial MLP that makes tensor-product weights
    avg_num_neighbors : normalisation of the neighbour sum, messages are divided by its square root
    element_features : add a linear map of chemical descriptors of each element (group, row,
        electronegativity, radius, Mendeleev number, block, metal) to its learned embedding
    """

    n_elements: int = 100
    n_scalars: int = 32
    n_vectors: int = 8
    l_max: int = 2
    parity: bool = True
    n_layers: int = 3
    r_cut: float = 4.0
    n_radial_basis: int = 8
    cutoff_p: int = 6
    radial_hidden: int = 32
    avg_num_neighbors: float = 20.0
    element_features: bool = False

    def hidden_irreps(self) -> str:
        """Irreps of the hidden features, e.g. ``32x0e+32x0o+8x1o+8x1e+8x2e+8x2o`` (as a string)."""
        parts = []
        for ell in range(self.l_max + 1):
            mul = self.n_scalars if ell == 0 else self.n_vectors
            natural = "e" if ell % 2 == 0 else "o"
            other = "o" if natural == "e" else "e"
            parts.append(f"{mul}x{ell}{natural}")
            if self.parity:
                parts.append(f"{mul}x{ell}{other}")
        return "+".join(parts)


@dataclass
class ChargeDensityConfig(_DictMixin):
    """Encoder + charge-density head (seed 000).

    Attributes
    ----------
    encoder : EncoderConfig
    probe_r_cut : probe–atom cutoff, Å (3 Å: in 3000-step CPU runs on the gpaw set it gave a lower held-out
        Δρ NMAE than 4 Å, 1.68 vs 1.83 %, with half the probe edges)
    n_edge_layers : M probe-edge tensor-product layers (the last keeps scalars only), >= 1
    n_edge_scalars : scalar width of the last edge layer (input of the logit and intensity MLPs)
    mlp_hidden : hidden width of the logit and intensity MLPs
    n_spin_channels : 1 (ρ) or 2 (ρ↑, ρ↓) outputs per probe
    target : what the training data hold, ``"delta"`` (ρ - SAED) or ``"total"``; output in e/Å^3
    chunk_size : probes per chunk in :func:`density_in_chunks`
    output_scale : e/Å^3 per unit of the intensity MLP's output (training sets it to the targets' mean
        magnitude, so the network works with O(1) numbers and Adam's steps stay relative to the weights)
    probe_sh : angular features of the probe edges: ``"scaled"`` (default), (r/probe_r_cut)^l Y_l(r̂), continuous
        as a probe approaches a nucleus (every l > 0 term vanishes at r = 0); ``"unit"``, Y_l(r̂) alone, which
        jumps at r = 0 (checkpoints written before this option load with it)
    """

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    probe_r_cut: float = 3.0
    n_edge_layers: int = 2
    n_edge_scalars: int = 32
    mlp_hidden: int = 64
    n_spin_channels: int = 1
    target: str = "delta"
    chunk_size: int = 100_000
    output_scale: float = 1.0
    probe_sh: str = "scaled"

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        data = dict(data)
        data.setdefault("probe_sh", "unit")  # configs older than the option: the features they were trained with
        return super().from_dict(data)

    def __post_init__(self):
        if self.probe_sh not in ("scaled", "unit"):
            raise ValueError("probe_sh must be 'scaled' or 'unit'")
        if not self.output_scale > 0:
            raise ValueError("output_scale must be > 0")
        if self.n_edge_layers < 1:
            raise ValueError("n_edge_layers must be >= 1")
        if self.n_spin_channels not in (1, 2):
            raise ValueError("n_spin_channels must be 1 or 2")
        if self.target not in ("delta", "total"):
            raise ValueError("target must be 'delta' or 'total'")


@dataclass
class DosConfig(_DictMixin):
    """Encoder + DOS head (seed 001).

    Attributes
    ----------
    encoder : EncoderConfig
    n_points : energy points of the DOS window (400 for (-10, 10) eV around E_F in DosNet)
    n_spin : 1 or 2 spin channels of the output
    energy_window : (E_min, E_max) in eV relative to the Fermi level; metadata for the data pipeline
    pooling : ``"mean"`` (DosNet) or ``"sum"`` over the atoms of a structure
    mlp_hidden : hidden width of the per-atom MLP
    positive : softplus on the per-atom output (DOS >= 0)
    backbone : ``"dosnet"`` (default; seed 001's blocks,
        :mod:`chgdata.models.dosnet`: attention and the skip to the initial embedding, each switchable) or
        ``"nequip"`` (the shared gated encoder of the density model, DESIGN.md §6)
    attention : dosnet only, neighbour softmax attention (False: plain sum of messages / √n̄)
    embedding_skip : dosnet only, self-interaction as a tensor product with the initial embedding f_0
        (False: a linear self-interaction of f_k alone)
    n_key : dosnet only, channels per irrep of the attention queries and keys
    n_skip : dosnet only, channels of f_0 in the skip tensor product (0: the embedding's full width)
    element_features : dosnet only, add chemical descriptors of each element (group, row, electronegativity,
        radius, Mendeleev number, block, metal) to its one-hot embedding f_0 (the same as
        ``encoder.element_features``, which also serves the nequip backbone and the density encoder)
    output_bias : a learned bias inside the per-atom softplus, ``"element"`` (one window per element, training
        starts it at the per-element average windows of the training split, so that mean pooling starts the
        model exactly at the composition baseline), ``"mean"`` (one window, started at the mean training
        window) or ``"none"``

    Spin: with ``n_spin = 2`` the outputs are the (↑, ↓) windows; with ``n_spin = 1`` the output is the
    spin average ½(↑ + ↓), copied to both channels when compared or written (see
    :mod:`chgdata.dos`, "Normalisation", for both).
    """

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    n_points: int = 400
    n_spin: int = 2
    energy_window: tuple[float, float] = (-10.0, 10.0)
    pooling: str = "mean"
    mlp_hidden: int = 128
    positive: bool = True
    backbone: str = "dosnet"
    attention: bool = True
    embedding_skip: bool = True
    n_key: int = 8
    output_bias: str = "element"
    element_features: bool = False
    n_skip: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        data = dict(data)
        data.setdefault("output_bias", "none")  # configs older than these options: trained without them
        data.setdefault("backbone", "nequip")
        return super().from_dict(data)

    def __post_init__(self):
        if isinstance(self.output_bias, bool):  # early configs: True meant the mean-window bias
            self.output_bias = "mean" if self.output_bias else "none"
        if self.output_bias not in ("element", "mean", "none"):
            raise ValueError("output_bias must be 'element', 'mean' or 'none'")
        if self.backbone not in ("nequip", "dosnet"):
            raise ValueError("backbone must be 'nequip' or 'dosnet'")
        if self.n_spin not in (1, 2):
            raise ValueError("n_spin must be 1 or 2")
        if self.pooling not in ("mean", "sum"):
            raise ValueError("pooling must be 'mean' or 'sum'")
        self.energy_window = tuple(self.energy_window)


@dataclass
class DosKernelConfig(_DictMixin):
    """Kernel DOS model (:mod:`chgdata.models.dos_kernel`): Gaussian-kernel ridge regression from
    :func:`chgdata.descriptors.structure_descriptors` to the (↑, ↓) max-normalised windows.

    Attributes
    ----------
    kind : ``"dos-kernel"`` (tells it apart from the network configs in a checkpoint)
    n_points, energy_window : the windows' grid, eV relative to E_F (as :class:`DosConfig`)
    gamma : kernel width, k(a, b) = exp(−gamma · |a − b|² / n_descriptors) on standardised descriptors
    lam : ridge penalty added to the kernel matrix's diagonal
    n_train, n_descriptors : shapes of the stored training descriptors (needed to rebuild the module)
    energy_exponent : p of the reduced energy axis ε = (E − E_F) · (d / distance_ref)^p on which windows are
        regressed, d the crystal's mean nearest-neighbour distance (Å); p = 2 is Harrison's scaling of two-centre
        hoppings (∝ d⁻²), so band widths of analogous crystals line up; 0 regresses on E − E_F itself
    distance_ref : d_ref in Å (the median d of the training crystals)
    """

    kind: str = "dos-kernel"
    n_points: int = 400
    energy_window: tuple[float, float] = (-10.0, 10.0)
    gamma: float = 1.0
    lam: float = 1.0
    n_train: int = 0
    n_descriptors: int = 0
    energy_exponent: float = 0.0
    distance_ref: float = 1.0

    def __post_init__(self):
        if self.kind != "dos-kernel":
            raise ValueError(f"DosKernelConfig.kind must be 'dos-kernel', got {self.kind!r}")
        if not (self.gamma > 0 and self.lam > 0):
            raise ValueError("gamma and lam must be positive")
        if not (self.energy_exponent >= 0 and self.distance_ref > 0):
            raise ValueError("energy_exponent must be >= 0 and distance_ref > 0 (Å)")
        self.energy_window = tuple(self.energy_window)


@dataclass
class DensityEnsembleConfig(_DictMixin):
    """An ensemble of charge-density models whose outputs are averaged (:mod:`chgdata.models.ensemble`).

    Attributes
    ----------
    kind : ``"density-ensemble"``
    members : the :class:`ChargeDensityConfig` of every member (same ``target`` and ``n_spin_channels``; they
        may differ in architecture and cutoffs)
    """

    kind: str = "density-ensemble"
    members: tuple[ChargeDensityConfig, ...] = ()

    def __post_init__(self):
        if self.kind != "density-ensemble":
            raise ValueError(f"DensityEnsembleConfig.kind must be 'density-ensemble', got {self.kind!r}")
        self.members = tuple(m if isinstance(m, ChargeDensityConfig) else ChargeDensityConfig.from_dict(m)
                             for m in self.members)
        if not self.members:
            raise ValueError("an ensemble needs at least one member")
        for name in ("target", "n_spin_channels"):
            values = {getattr(m, name) for m in self.members}
            if len(values) > 1:
                raise ValueError(f"ensemble members differ in {name}: {sorted(values)}")

    # what predict/evaluate read of a density config (probe_r_cut also tells a density model from a DOS one)
    target = property(lambda self: self.members[0].target)
    probe_r_cut = property(lambda self: max(m.probe_r_cut for m in self.members))


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) scalar parameters of a module."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
