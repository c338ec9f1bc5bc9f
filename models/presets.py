"""Training presets: model size and batch settings sized for a CPU or a GPU (``chgdata train --preset``).

One place for both the CLI and ``bench/train_gpu.py``. A preset holds :class:`~chgdata.models.train.TrainConfig`
fields; ``model`` and ``dos_model`` are the model overrides for the density targets and for ``dos``.
Precedence in ``chgdata train``: TrainConfig defaults < preset < ``--config`` file < command-line flags (a file's
``model:`` replaces the preset's whole ``model``).

- ``cpu``: a first run sized for a laptop (``bench/train_gpu.py --scale cpu``; the shipped model is larger, README):
  a 9 k-parameter model, 200 probes × 8 structures per step (about 20 steps/s on 2 cores), 3000 steps:
  2.6 minutes wall, 0.83 GB RSS. Held-out Δρ NMAE 1.6–1.9 % where SAED alone gives 2.8–3.0 % on a random split
  by material (``bench/results/train_ablation.md``), but 4.59 % against the train-fitted SAED's 3.40 % on the
  main job's grouped val split (README). ``val_every`` is in epochs.
- ``gpu``: 48 scalars / 12 vectors, 3 interaction blocks, 8000 probes × 32 structures (≤ 262 144 probes per
  step: the head's kernels only fill a GPU at ~10⁵ probes per step), 4 loader workers.
"""

from __future__ import annotations

import copy
from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {
        "model": {"encoder": {"n_scalars": 16, "n_vectors": 4, "l_max": 2, "n_layers": 2, "radial_hidden": 16},
                  "n_edge_layers": 1, "n_edge_scalars": 16, "mlp_hidden": 32, "probe_r_cut": 3.0},
        "dos_model": {"encoder": {"n_scalars": 8, "n_vectors": 2, "l_max": 1, "n_layers": 1}, "mlp_hidden": 32},
        "probes": 200, "batch_size": 8, "max_probes_per_batch": None, "lr": 5e-3, "ema_decay": 0.99, "workers": 0,
        "max_steps": 3000, "warmup_steps": 150, "val_every": 20,  # full-grid validation: ~1 s per material
    },
    "gpu": {
        "model": {"encoder": {"n_scalars": 48, "n_vectors": 12, "l_max": 2, "n_layers": 3},
                  "n_edge_layers": 1, "n_edge_scalars": 32, "mlp_hidden": 64, "probe_r_cut": 3.0},
        "dos_model": {"encoder": {"n_scalars": 48, "n_vectors": 12, "l_max": 2, "n_layers": 3}, "mlp_hidden": 128},
        "probes": 8000, "batch_size": 32, "max_probes_per_batch": 262144, "lr": 3e-3, "ema_decay": 0.999,
        "workers": 4, "max_steps": 6000, "warmup_steps": 300, "val_every": 100,
    },
}


def default_preset(device: str | None) -> str:
    """``gpu`` for a CUDA device, else ``cpu``."""
    return "gpu" if str(device or "cpu").startswith("cuda") else "cpu"


def preset_options(name: str, target: str = "delta") -> dict[str, Any]:
    """The TrainConfig fields of preset ``name`` for ``target`` (a copy; ``model`` chosen by target)."""
    if name not in PRESETS:
        raise ValueError(f"--preset must be one of {', '.join(sorted(PRESETS))}, not {name!r}")
    preset = copy.deepcopy(PRESETS[name])
    dos_model = preset.pop("dos_model")
    if target == "dos":
        preset["model"] = dos_model
    return preset
