"""Checkpoint files (plain types and tensors only, so they load with ``torch.load(weights_only=True)``), the shipped
default model, and the SAED reference table a Δ checkpoint was trained with."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from chgdata.contract import REFERENCE_FILE
from chgdata.references import ReferenceTable
from chgdata.store import read_reference

from .config import DensityEnsembleConfig
from .kinds import kind_of
from .registry import build_model, config_from_dict, config_to_dict


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


# ------------------------------------------------------------------- models from checkpoints

CHECKPOINT_FORMAT = 1


def model_config_from_dict(d: dict[str, Any]):
    """A checkpoint's ``model_config`` as its config object (:func:`chgdata.models.registry.config_from_dict`)."""
    return config_from_dict(d)


def load_checkpoint(path: str | os.PathLike, device="cpu", use_ema: bool = True) -> tuple[nn.Module, dict]:
    """Model (EMA weights when present) and the checkpoint's metadata."""
    ckpt = read_checkpoint(path, device)
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: checkpoint format {ckpt.get('format')} is not {CHECKPOINT_FORMAT}")
    model = build_model(model_config_from_dict(ckpt["model_config"])).to(device)
    state = ckpt["ema"] if use_ema and ckpt.get("ema") is not None else ckpt["model"]
    model.load_state_dict(state)
    model.eval()
    return model, ckpt


def export_small(last: Path, path: Path) -> None:
    """A shippable checkpoint: weights (EMA if any) + metadata, no optimiser state."""
    ckpt = read_checkpoint(last)
    weights = ckpt["ema"] if ckpt.get("ema") is not None else ckpt["model"]
    keep = {k: v for k, v in ckpt.items() if k not in ("optimizer", "scheduler", "ema", "model")}
    save_checkpoint(path, {**keep, "model": weights, "ema": None})


def combine_checkpoints(paths: Sequence[str | os.PathLike], dest: str | os.PathLike) -> Path:
    """Write an ensemble checkpoint of the density checkpoints ``paths`` (EMA weights where present) to ``dest``.

    Metadata (split, data version, SAED reference, training elements, convention) come from the first member;
    ValueError when the members were not trained on the same data or one is not a density model."""
    if len(paths) < 2:
        raise ValueError("an ensemble needs at least two checkpoints")
    ckpts = [read_checkpoint(p) for p in paths]
    configs = []
    for path, ck in zip(paths, ckpts, strict=True):
        cfg = config_from_dict(ck.get("model_config") or {})
        if kind_of(cfg) != "charge-density":
            raise ValueError(f"{path} is not a single charge-density checkpoint ({kind_of(cfg)})")
        configs.append(cfg)
    first = ckpts[0]
    for path, ck in zip(paths[1:], ckpts[1:], strict=True):
        for key, what in (("saed_reference_id", "SAED reference"), ("train_elements", "training elements")):
            if ck.get(key) != first.get(key):
                raise ValueError(f"{path} has another {what} than {paths[0]}: not trained on the same data")
        if sorted((ck.get("splits") or {}).get("train", [])) != sorted((first.get("splits") or {}).get("train", [])):
            raise ValueError(f"{path} has another training split than {paths[0]}")
    config = DensityEnsembleConfig(members=tuple(configs))  # checks target and spin channels agree
    state: dict[str, Any] = {}
    for i, ck in enumerate(ckpts):
        weights = ck["ema"] if ck.get("ema") is not None else ck["model"]
        state.update({f"members.{i}.{k}": v for k, v in weights.items()})
    keep = {k: v for k, v in first.items() if k not in ("optimizer", "scheduler", "ema", "model", "rng", "metrics")}
    out = {**keep, "model_config": config_to_dict(config), "model": state, "ema": None,
           "n_parameters": sum(int(ck.get("n_parameters") or 0) for ck in ckpts),
           "members": [{"source": str(p), "config": ck.get("config"), "metrics": ck.get("metrics"),
                        "code_version": ck.get("code_version")} for p, ck in zip(paths, ckpts, strict=True)]}
    build_model(config).load_state_dict(state)  # every member's weights fit its config
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(dest, out)
    return dest


# ------------------------------------------------------------------ loading for prediction, the reference

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "default" / "density.pt"

REFERENCE_KEY = "saed_reference"  # checkpoint entry: the SAED reference table as JSON text

class PredictError(ValueError):
    """A prediction that cannot run as asked (no model, no reference table, unreadable structure)."""

def default_checkpoint() -> Path:
    """The model shipped inside the package (``chgdata/models/default/density.pt``), or PredictError."""
    if not DEFAULT_CHECKPOINT.is_file():
        raise PredictError(f"no default model is shipped with this chgdata yet (looked for {DEFAULT_CHECKPOINT}); "
                           "pass --checkpoint path/to/model.pt from a `chgdata train` run")
    return DEFAULT_CHECKPOINT

def load(checkpoint: str | os.PathLike | None, device: str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """(model in eval mode, checkpoint dict) of ``checkpoint`` or of the shipped default model."""
    from .conventions import CONVENTION_KEY, density_convention

    path = Path(checkpoint) if checkpoint else default_checkpoint()
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    model, ckpt = load_checkpoint(path, device=device)
    ckpt[CONVENTION_KEY] = density_convention(ckpt, default=path.resolve() == DEFAULT_CHECKPOINT.resolve())
    return model, ckpt

def attach_reference(checkpoint_path: str | os.PathLike, table: ReferenceTable | str | os.PathLike) -> Path:
    """Embed the SAED reference table (object, JSON file, or a store directory holding saed_reference.json)
    in a checkpoint, in place (atomic replace). The table id must match ``data_version["saed_reference_id"]``
    when the checkpoint records one. Returns the checkpoint path.
    """
    path = Path(checkpoint_path)
    if not isinstance(table, ReferenceTable):  # a JSON file, or a store (local or fsspec URL) holding one
        where, table = table, read_reference(table)
        if table is None:
            raise PredictError(f"{where}: no {REFERENCE_FILE} there")
    ckpt = read_checkpoint(path)
    want = (ckpt.get("data_version") or {}).get("saed_reference_id")
    if want and want != table.id:
        raise PredictError(f"{path}: trained with reference {want}, not {table.id}")
    ckpt[REFERENCE_KEY] = table.to_json()
    save_checkpoint(path, ckpt)
    return path

def reference_table(ckpt: dict[str, Any], store: str | os.PathLike | None = None) -> ReferenceTable:
    """The SAED reference a Δ checkpoint was trained with.

    Looked up in order: ``store`` (if given), the training store recorded in ``data_version["store"]``
    (its saed_reference.json, used only if its id matches the checkpoint's), then the copy embedded by
    :func:`attach_reference`. PredictError when none is found.
    """
    want = (ckpt.get("data_version") or {}).get("saed_reference_id")
    tried = []
    for where in (store, (ckpt.get("data_version") or {}).get("store")):
        if not where:
            continue
        tried.append(f"{where}/{REFERENCE_FILE}")
        try:
            table = read_reference(where)
        except (OSError, ValueError):  # unreachable or unreadable: the next place
            continue
        if table is not None and (not want or table.id == want):
            return table
    text = ckpt.get(REFERENCE_KEY)
    if text:
        table = ReferenceTable.from_json(text)
        if want and table.id != want:
            raise PredictError(f"embedded reference {table.id} does not match the checkpoint's {want}")
        return table
    raise PredictError(f"the checkpoint's SAED reference {want or '(unknown)'} was not found (tried {tried} and "
                       "an embedded copy): give --store of the training data, or embed it with "
                       "chgdata.models.checkpoint.attach_reference(checkpoint, table)")
