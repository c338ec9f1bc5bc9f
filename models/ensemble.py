"""Ensembles of charge-density models: the average of several independently trained members' outputs.

On compositions absent from training the density model's error is dominated by variance (a different seed or
recipe fits the 57 training formulas differently; BENCHMARKS.md), which averaging reduces. An ensemble is built
from finished runs by :func:`chgdata.models.checkpoint.combine_checkpoints` (``chgdata ensemble
RUN/model.pt ... --out ens.pt``); it loads, predicts and evaluates like a single model. Every member must have
been trained on the same data: the same target, spin channels, SAED reference and training split (checked).
"""

from __future__ import annotations

from torch import nn

from .config import DensityEnsembleConfig
from .density import ChargeDensityModel


class DensityEnsemble(nn.Module):
    """``members`` (:class:`ChargeDensityModel`); :func:`chgdata.models.density.predict_grid` and
    :func:`~chgdata.models.density.density_in_chunks` return the mean of the members' outputs."""

    def __init__(self, config: DensityEnsembleConfig):
        super().__init__()
        self.config = config
        self.members = nn.ModuleList(ChargeDensityModel(c) for c in config.members)
