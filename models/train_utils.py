"""Helpers of :func:`chgdata.models.train.train`: the torchrun (DDP) environment, validation metrics, the
learning-rate schedule, EMA, data and code versions, and the run's CSV/TensorBoard logs."""

from __future__ import annotations

import csv
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import chgdata
from chgdata import contract as C
from chgdata.metrics import nmae

from . import keys as K
from .data import DensityProbes
from .density import ChargeDensityModel, density_in_chunks
from .dos import DosModel


class Dist:
    """torchrun environment: rank, world size, and the process group (None when single-process)."""

    def __init__(self, device: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if self.world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if device.startswith("cuda") else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self):
        if self.world > 1:
            torch.distributed.barrier()

    def mean(self, value: float, device) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(t)
        return float(t) / self.world


def data_version(store) -> dict[str, Any]:
    """What identifies the training data: card provenance and a digest of the index checksums."""
    import hashlib

    ds = chgdata.open_dataset(store)
    digest = hashlib.sha256()
    for mid, sha in sorted(zip(ds.material_ids, ds.index.column(C.COL_RHO_SHA).to_pylist())):
        digest.update(f"{mid}:{sha};".encode())
    card = ds.card
    return {"store": str(store), "index_sha256": digest.hexdigest(), "updated": card.get("provenance", {}).get(
        "updated"), "saed_reference_id": (card.get("saed") or {}).get("reference_id"),
        "dos_window": {k: v for k, v in (card.get("dos") or {}).items() if not isinstance(v, list | dict)}}


def batch_to(batch: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def weighted_loss(pred: torch.Tensor, target: torch.Tensor, kind: str,
                  weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean L1 or squared error; ``weight`` (n_rows,) multiplies each row's error (mean 1 over the data)."""
    err = (pred - target).abs() if kind == "l1" else (pred - target).square()
    return err.mean() if weight is None else (err * weight[:, None].to(err.dtype)).mean()


@torch.no_grad()
def validate_density(model: ChargeDensityModel, store: str, material_ids, target: str, device,
                     chunk_size: int | None = None) -> dict[str, float]:
    """Full-grid NMAE (%) of the total density per material and its mean; also for the SAED baseline."""
    ds = chgdata.open_dataset(store)
    model.eval()
    per, base = {}, {}
    for mid in material_ids:
        row = ds.row(mid)
        grid = ds.density(mid)
        cell = grid.lattice
        pos = np.asarray(row[C.COL_FRAC], np.float64).reshape(-1, 3) @ cell
        pred = density_in_chunks(model, pos, row[C.COL_Z], cell, grid_shape=grid.rho.shape, chunk_size=chunk_size,
                                 device=device).double().numpy()
        pred_total = pred.sum(-1)  # (↑ + ↓) or the single channel
        rho = grid.rho.astype(np.float64)
        if target == "delta":
            saed = ds.grid(C.SAED, mid).reshape(rho.shape).astype(np.float64)
            pred_total = pred_total + saed
            base[mid] = nmae(saed, rho)
        per[mid] = nmae(pred_total, rho)
    return {**nmae_means(per, base), "per_material": per, "per_material_saed": base}


def nmae_means(per: dict[str, float], base: dict[str, float]) -> dict[str, float]:
    out = {"val_nmae": float(np.mean(list(per.values()))) if per else float("nan")}
    if base:
        out["val_nmae_saed"] = float(np.mean(list(base.values())))
    return out


@torch.no_grad()
def validate_dos(model: DosModel, loader, device) -> dict[str, float]:
    se, n = 0.0, 0
    for batch in loader:
        batch = batch_to(batch, device)
        pred = model(batch).double()
        se += float((pred - batch[K.TARGET_DOS].double()).square().sum())
        n += batch[K.TARGET_DOS].numel()
    return {"val_mse": se / max(n, 1)}


def lr_lambda(warmup: int, total: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def usable_ids(ds, target: str) -> list[str]:
    if target == "dos":
        have = ds.table(C.DOS_INDEX)
        return sorted(set(have.column(C.COL_ID).to_pylist())) if have is not None else []
    ids = sorted(r[C.COL_ID] for r in ds.index.select([C.COL_ID, C.COL_RHO_OFFSET]).to_pylist()
                 if (r[C.COL_RHO_OFFSET] if r[C.COL_RHO_OFFSET] is not None else -1) >= 0)
    if target == "delta":
        have = ds.table(C.DELTA_INDEX)
        done = set() if have is None else set(have.column(C.COL_ID).to_pylist())
        if not done:
            raise ValueError(f"{ds.url}: no Δρ in the store: run chgdata build-delta first (or --target total)")
        ids = [m for m in ids if m in done]
    return ids


def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    with torch.no_grad():
        for pe, pm in zip(ema.parameters(), model.parameters()):
            pe.lerp_(pm, 1 - decay)
        # buffers are constants here (e3nn's Clebsch–Gordan tables, codegen caches): nothing to average


def target_scale(train_set: DensityProbes, n_materials: int = 32) -> float:
    """Mean |target| (e/Å³) over a fixed probe draw (epoch 10⁶) of up to ``n_materials`` training materials
    spread over the set: the head's ``output_scale``. Deterministic, so every rank and a resume agree."""
    picks = np.unique(np.linspace(0, len(train_set) - 1, min(n_materials, len(train_set))).round().astype(int))
    values = np.concatenate([train_set[(10**6, int(i))][K.TARGET_DENSITY].double().abs().numpy().ravel()
                             for i in picks])
    scale = float(values.mean()) if values.size else 1.0
    return scale if scale > 0 else 1.0


def code_version() -> str:
    """Package version plus the git commit (and ``+dirty``) when running from a checkout."""
    import subprocess

    version = chgdata.__version__
    try:
        root = Path(__file__).resolve().parents[1]
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5).stdout.strip()
        if sha:
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            version += f"+g{sha}" + (".dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return version


def append_csv(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    fields = list(row)
    if not new:
        with open(path) as fh:
            fields = list(dict.fromkeys(next(csv.reader(fh)) + fields))
    rows = [] if new else list(csv.DictReader(open(path)))
    rows.append(row)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def tensorboard_writer(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    try:
        return SummaryWriter(str(out / "tb"))
    except Exception:  # tensorboard package missing behind torch's shim
        return None


class TrainingInterrupted(RuntimeError):
    """SIGINT or SIGTERM stopped training after a checkpoint; the message says where it is and how to resume."""


class StopSignals:
    """Within the block, SIGINT and SIGTERM set :attr:`signum` instead of ending the process (so the loop can
    checkpoint first); the previous handlers come back on exit. Only in the main thread (elsewhere: a no-op)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._saved: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._saved[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        import signal

        if self.signum is not None:  # a second Ctrl-C: stop now
            signal.default_int_handler(signum, frame)
        self.signum = signum

    def __exit__(self, *exc) -> None:
        import signal

        for s, h in self._saved.items():
            signal.signal(s, h)


class PlainProgress:
    """One log line (``chgdata.models.train``, INFO) every ``every_s`` seconds when stderr is not a terminal
    (nohup, a scheduler, CI), where the progress bar shows nothing."""

    def __init__(self, total: int, enabled: bool, every_s: float = 30.0) -> None:
        import sys

        self.total, self.every_s = total, every_s
        self.enabled = enabled and not sys.stderr.isatty()
        self.t0 = self.last = time.perf_counter()

    def due(self, step: int) -> bool:
        return self.enabled and (time.perf_counter() - self.last >= self.every_s or step == self.total)

    def line(self, step: int, start_step: int, epoch: int, loss: float) -> str:
        now = time.perf_counter()
        self.last = now
        rate = (step - start_step) / max(now - self.t0, 1e-9)
        eta = (self.total - step) / rate if rate > 0 else float("inf")
        return (f"step {step}/{self.total} (epoch {epoch}): loss {loss:.4g}, {rate:.2f} steps/s, "
                f"ETA {eta / 60:.1f} min")
