"""Checkpoint files: plain types and tensors only, so they load with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch


def plain(obj: Any) -> Any:
    """``obj`` with only types that ``torch.load(weights_only=True)`` accepts: str (also for str subclasses such
    as ``torch.__version__``), int, float, bool, None, list, tuple, dict and tensors; numpy scalars and arrays
    become Python numbers and lists. TypeError for anything else."""
    if obj is None or isinstance(obj, bool | torch.Tensor):
        return obj
    for kind in (str, int, float):  # also their subclasses (TorchVersion, IntEnum, ...)
        if isinstance(obj, kind):
            return kind(obj)
    if isinstance(obj, np.generic | np.ndarray):
        return obj.tolist()
    if isinstance(obj, dict):
        return {plain(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(plain(v) for v in obj)
    if isinstance(obj, list):
        return [plain(v) for v in obj]
    raise TypeError(f"checkpoint entry of type {type(obj).__name__} is not a plain type: {obj!r}"[:200])


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` (made :func:`plain`) atomically; it loads with ``torch.load(weights_only=True)``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(plain(state), tmp)
    os.replace(tmp, path)


def read_checkpoint(path: str | os.PathLike, device="cpu") -> dict[str, Any]:
    """The checkpoint dict, loaded safely (``weights_only=True``: no code runs while unpickling)."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001  (torch raises UnpicklingError or RuntimeError, by version)
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise ValueError(f"{path}: not a plain checkpoint (it needs unsafe unpickling); re-save it with "
                             "chgdata.models.checkpoint.save_checkpoint") from None
        raise
