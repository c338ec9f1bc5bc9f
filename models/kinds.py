"""Model kinds by config class, with no model module imported (the model modules ask these questions too, so
they live below :mod:`chgdata.models.registry`, which builds the models)."""

from __future__ import annotations

from .config import ChargeDensityConfig, DensityEnsembleConfig, DosConfig, DosKernelConfig

DENSITY_KINDS = ("charge-density", "density-ensemble")
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
