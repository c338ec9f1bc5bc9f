"""Models by name: every checkpoint records its model's kind, and a kind names its config and its model class
(as MACE's registries of interaction classes), so nothing tells models apart by ``isinstance`` chains, key
guessing or ``hasattr``.

=================== ====================================================== ==========================
kind                config                                                 what it predicts
=================== ====================================================== ==========================
``charge-density``  :class:`~chgdata.models.config.ChargeDensityConfig`    ρ or Δρ at probe points
``density-ensemble``:class:`~chgdata.models.config.DensityEnsembleConfig`  the mean of density members
``dos-net``         :class:`~chgdata.models.config.DosConfig`              DOS windows (DosNet)
``dos-kernel``      :class:`~chgdata.models.config.DosKernelConfig`        DOS windows (kernel ridge)
=================== ====================================================== ==========================

Checkpoints written before the kind was recorded are recognised once, on load, by their config's keys.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .config import ChargeDensityConfig, DensityEnsembleConfig, DosConfig, DosKernelConfig
from .kinds import kind_of


def _classes() -> dict[str, tuple[type, type]]:
    """kind → (config class, model class); the model modules are imported when a model is built."""
    from .density import ChargeDensityModel
    from .dos import DosModel
    from .dos_kernel import DosKernelModel
    from .ensemble import DensityEnsemble

    return {"charge-density": (ChargeDensityConfig, ChargeDensityModel),
            "density-ensemble": (DensityEnsembleConfig, DensityEnsemble),
            "dos-net": (DosConfig, DosModel), "dos-kernel": (DosKernelConfig, DosKernelModel)}


def config_to_dict(config) -> dict[str, Any]:
    """A config as plain data, with its ``kind`` (what checkpoints store as ``model_config``)."""
    return {**config.to_dict(), "kind": kind_of(config)}


def _legacy_kind(d: dict[str, Any]) -> str:
    """The kind of a config dict written before kinds were recorded."""
    return "dos-net" if "n_points" in d else "charge-density"


def config_from_dict(d: dict[str, Any]):
    """Inverse of :func:`config_to_dict` (older dicts without ``kind`` too)."""
    kind = d.get("kind") or _legacy_kind(d)
    if kind not in _classes():
        raise ValueError(f"unknown model kind {kind!r}: one of {', '.join(_classes())}")
    cls = _classes()[kind][0]
    fields = dict(d)
    if "kind" not in cls.__dataclass_fields__:
        fields.pop("kind", None)
    return cls.from_dict(fields)


def build_model(config) -> nn.Module:
    """The model of a config, by its kind."""
    return _classes()[kind_of(config)][1](config)
