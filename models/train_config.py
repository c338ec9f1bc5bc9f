"""The options of a training run (:class:`TrainConfig`: CLI flags, a YAML/TOML file or a run's config.json) and
the model config they give."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from .config import ChargeDensityConfig, DosConfig


@dataclass
class TrainConfig:
    """Everything a run needs; stored verbatim in every checkpoint (units: Å, e/Å³, eV)."""

    store: str = "data/gpaw"
    target: str = "delta"  # delta | total | dos
    out: str = "runs/latest"
    device: str = "cpu"
    epochs: int = 10
    max_steps: int | None = None  # stop after this many optimiser steps (None: all epochs)
    probes: int = 1000  # probes per structure per step
    max_probes_per_batch: int | None = 20000
    batch_size: int = 4  # structures per batch
    lr: float = 3e-3
    weight_decay: float = 1e-6
    warmup_steps: int = 50
    loss: str | None = None  # l1 | mse (default: l1 for densities, as ChargE3Net; mse for DOS, as DosNet)
    weighting: str = "nmae"  # density probes: nmae (each material weighs as in the validation NMAE) | none
    grad_clip: float = 1.0
    ema_decay: float | None = None
    amp: bool = True  # bf16 autocast on CUDA
    seed: int = 0
    split_source: str = "auto"  # store: the store's grouped split (chgdata split) | random | auto: store if recorded
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)  # random split by material (split_source random)
    split_seed: int = 0
    train_group_fraction: float = 1.0  # learning curves: train on this fraction of the train split's groups
    cv_folds: int = 0  # > 0: grouped cross-validation inside the train split (val = fold cv_fold, no test)
    cv_fold: int = 0
    workers: int = 0
    val_every: int = 1  # epochs
    val_max_materials: int | None = None
    dos_variant: str = "normalised"
    ckpt_every: int | None = None  # also checkpoint every N steps (always at the end of each epoch)
    ckpt_seconds: float | None = 600.0  # and every N seconds of training (and on SIGINT/SIGTERM, always)
    log_seconds: float = 30.0  # a log line this often when stderr is not a terminal (no progress bar there)
    start_method: str = "forkserver"  # DataLoader workers: spawn | forkserver (never fork: zarr v3)
    tensorboard: bool = True  # when the tensorboard package is installed
    init_output_scale: bool = True  # density: output_scale = mean |target|; DOS: start at the mean training window
    model: dict[str, Any] = field(default_factory=dict)  # ChargeDensityConfig / DosConfig overrides

    def __post_init__(self):
        if self.target not in ("delta", "total", "dos"):
            raise ValueError(f"target must be delta, total or dos, not {self.target!r}")
        self.loss = self.loss or ("mse" if self.target == "dos" else "l1")
        if self.loss not in ("l1", "mse"):
            raise ValueError(f"loss must be l1 or mse, not {self.loss!r}")
        if self.weighting not in ("nmae", "none"):
            raise ValueError(f"weighting must be nmae or none, not {self.weighting!r}")
        if not 0 < self.train_group_fraction <= 1:
            raise ValueError(f"train_group_fraction must be in (0, 1], not {self.train_group_fraction}")
        if self.split_source not in ("auto", "store", "random"):
            raise ValueError(f"split_source must be auto, store or random, not {self.split_source!r}")
        if self.cv_folds and not 0 <= self.cv_fold < self.cv_folds:
            raise ValueError(f"cv_fold must be in [0, {self.cv_folds}), not {self.cv_fold}")
        self.split = tuple(self.split)

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides) -> TrainConfig:
        """Validated config (pydantic, :mod:`.schema`): strings such as YAML 1.1's ``"3e-3"`` become numbers;
        unknown keys and wrong types raise :class:`~.schema.ConfigError` (a ValueError, one line)."""
        from .schema import validate

        data = {**data, **{k: v for k, v in overrides.items() if v is not None}}
        cfg = validate(cls, data)
        model_config(cfg, 1)  # the model overrides, checked the same way
        return cfg

    @classmethod
    def read_file(cls, path: str | os.PathLike) -> dict[str, Any]:
        """The options of a YAML or TOML file, or of a run's config.json (its ``config`` entry), unvalidated."""
        from .schema import read_options

        return read_options(path)

    @classmethod
    def from_file(cls, path: str | os.PathLike, **overrides) -> TrainConfig:
        """Validated config from a file (see :meth:`read_file`); ``overrides`` that are not None win."""
        from .schema import ConfigError

        data = cls.read_file(path)
        try:
            return cls.from_dict(data, **overrides)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None


def model_config(cfg: TrainConfig, n_spin_channels: int):
    """The model config of a run: the dataclass defaults with ``cfg.model``'s overrides (validated)."""
    from .schema import validate

    overrides = dict(cfg.model)
    if cfg.target == "dos":
        return validate(DosConfig, overrides, "model option")
    return validate(ChargeDensityConfig, {**overrides, "target": cfg.target, "n_spin_channels": n_spin_channels},
                    "model option")
