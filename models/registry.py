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

DENSITY_KINDS = ("charge-density", "density-ensemble")
DOS_KINDS = ("dos-net", "dos-kernel")


def _classes() -> dict[str, tuple[type, type]]:
    """kind → (config class, model class); the model modules are imported when a model is built."""
    from .density import ChargeDensityModel
    from .dos import DosModel
    from .dos_kernel import DosKernelModel
    from .ensemble import DensityEnsemble

    return {"charge-density": (ChargeDensityConfig, ChargeDensityModel),
            "density-ensemble": (DensityEnsembleConfig, DensityEnsemble),
            "dos-net": (DosConfig, DosModel), "dos-kernel": (DosKernelConfig, DosKernelModel)}


CONFIG_KINDS = {ChargeDensityConfig: "charge-density", DensityEnsembleConfig: "density-ensemble",
                DosConfig: "dos-net", DosKernelConfig: "dos-kernel"}


def kind_of(model_or_config) -> str:
    """The kind of a model or of its config."""
    config = getattr(model_or_config, "config", model_or_config)
    try:
        return CONFIG_KINDS[type(config)]
    except KeyError:
        raise TypeError(f"not a chgdata model config: {type(config).__name__}") from None


def is_density(model_or_config) -> bool:
    return kind_of(model_or_config) in DENSITY_KINDS


def is_ensemble(model_or_config) -> bool:
    return kind_of(model_or_config) == "density-ensemble"


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
