"""Training loop for the density and DOS models, reading straight from a chgdata store.

One function, :func:`train`, driven by a :class:`TrainConfig` (CLI flags or a YAML/TOML file). It runs on CPU
or CUDA, under ``torchrun`` with DistributedDataParallel (NCCL on GPUs, gloo on CPU), with AdamW + warm-up and
cosine decay, bf16 autocast on CUDA, gradient clipping, optional EMA of the weights, checkpoints that carry the
full config, code version, data version and SAED reference id, ``resume``, and metrics in ``metrics.csv``
(and TensorBoard when installed). Validation NMAE is ChargE3Net's: per material 100·Σ|ρ̂ − ρ|/Σ|ρ| over the
full grid of the total density (for a Δ model ρ̂ = ρ_SAED + Δρ̂, so the error is Σ|Δρ̂ − Δρ|), mean over materials.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import chgdata
from chgdata import contract as C

from . import keys as K
from .config import ChargeDensityConfig, DosConfig, EncoderConfig, count_parameters
from .data import DensityProbes, DosWindows, attach_probe_edges, make_loader, make_splits
from .density import ChargeDensityModel, density_in_chunks
from .dos import DosModel

CHECKPOINT_FORMAT = 1


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
    grad_clip: float = 1.0
    ema_decay: float | None = None
    amp: bool = True  # bf16 autocast on CUDA
    seed: int = 0
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_seed: int = 0
    workers: int = 0
    val_every: int = 1  # epochs
    val_max_materials: int | None = None
    dos_variant: str = "normalised"
    model: dict[str, Any] = field(default_factory=dict)  # ChargeDensityConfig / DosConfig overrides

    def __post_init__(self):
        if self.target not in ("delta", "total", "dos"):
            raise ValueError(f"target must be delta, total or dos, not {self.target!r}")
        self.loss = self.loss or ("mse" if self.target == "dos" else "l1")
        if self.loss not in ("l1", "mse"):
            raise ValueError(f"loss must be l1 or mse, not {self.loss!r}")
        self.split = tuple(self.split)

    @classmethod
    def from_file(cls, path: str | os.PathLike, **overrides) -> TrainConfig:
        text = Path(path).read_text()
        if str(path).endswith(".toml"):
            import tomllib

            data = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text) or {}
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"{path}: unknown training options {sorted(unknown)}")
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**data)


def _model_config(cfg: TrainConfig, n_spin_channels: int):
    overrides = dict(cfg.model)
    enc = EncoderConfig(**overrides.pop("encoder", {}))
    if cfg.target == "dos":
        return DosConfig(encoder=enc, **overrides)
    return ChargeDensityConfig(encoder=enc, target=cfg.target, n_spin_channels=n_spin_channels, **overrides)


def build_model(model_config) -> nn.Module:
    return DosModel(model_config) if isinstance(model_config, DosConfig) else ChargeDensityModel(model_config)


def model_config_from_dict(d: dict[str, Any]):
    return DosConfig.from_dict(d) if "n_points" in d else ChargeDensityConfig.from_dict(d)


class _Dist:
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


def _batch_to(batch: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _loss(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    return (pred - target).abs().mean() if kind == "l1" else (pred - target).square().mean()


@torch.no_grad()
def validate_density(model: ChargeDensityModel, store: str, material_ids, target: str, device,
                     chunk_size: int | None = None) -> dict[str, float]:
    """Full-grid NMAE (%) of the total density per material and its mean; also for the SAED baseline."""
    ds = chgdata.open_dataset(store)
    from pymatgen.core.periodic_table import Element

    per, base = {}, {}
    for mid in material_ids:
        row = ds.row(mid)
        grid = ds.density(mid)
        cell = grid.lattice
        pos = np.asarray(row[C.COL_FRAC], np.float64).reshape(-1, 3) @ cell
        z = [Element(s).Z for s in row[C.COL_SPECIES]]
        pred = density_in_chunks(model, pos, z, cell, grid_shape=grid.rho.shape, chunk_size=chunk_size,
                                 device=device).double().numpy()
        pred_total = pred.sum(-1)  # (↑ + ↓) or the single channel
        rho = grid.rho.astype(np.float64)
        if target == "delta":
            saed = ds.read_flat(C.SAED, mid).reshape(rho.shape).astype(np.float64)
            pred_total = pred_total + saed
            base[mid] = 100 * np.abs(saed - rho).sum() / np.abs(rho).sum()
        per[mid] = 100 * np.abs(pred_total - rho).sum() / np.abs(rho).sum()
    out = {"val_nmae": float(np.mean(list(per.values()))) if per else float("nan")}
    if base:
        out["val_nmae_saed"] = float(np.mean(list(base.values())))
    out["per_material"] = per
    return out


@torch.no_grad()
def validate_dos(model: DosModel, loader, device) -> dict[str, float]:
    se, n = 0.0, 0
    for batch in loader:
        batch = _batch_to(batch, device)
        pred = model(batch).double()
        se += float((pred - batch[K.TARGET_DOS].double()).square().sum())
        n += batch[K.TARGET_DOS].numel()
    return {"val_mse": se / max(n, 1)}


def _lr_lambda(warmup: int, total: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def _save(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike, device="cpu", use_ema: bool = True) -> tuple[nn.Module, dict]:
    """Model (EMA weights when present) and the checkpoint's metadata."""
    ckpt = torch.load(path, map_location=device, weights_only=False)
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: checkpoint format {ckpt.get('format')} is not {CHECKPOINT_FORMAT}")
    model = build_model(model_config_from_dict(ckpt["model_config"])).to(device)
    state = ckpt["ema"] if use_ema and ckpt.get("ema") is not None else ckpt["model"]
    model.load_state_dict(state)
    model.eval()
    return model, ckpt


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train; returns the final metrics. Writes config, splits, metrics.csv and checkpoints to ``cfg.out``."""
    dist = _Dist(cfg.device)
    device = torch.device(f"cuda:{dist.local_rank}" if cfg.device == "cuda" and dist.world > 1 else cfg.device)
    torch.manual_seed(cfg.seed + dist.rank)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = chgdata.open_dataset(cfg.store)
    rows = ds.index.to_pylist()
    if cfg.target == "dos":
        have = ds.table(C.DOS_INDEX)
        ids = sorted(set(have.column(C.COL_ID).to_pylist())) if have is not None else []
    else:
        ids = sorted(r[C.COL_ID] for r in rows if r.get(C.COL_RHO_OFFSET, -1) >= 0)
    if len(ids) < 2:
        raise ValueError(f"{cfg.store}: {len(ids)} materials usable for target {cfg.target!r}; need at least 2")
    split_path = out / "splits.json"
    if resume and split_path.exists():
        splits = json.loads(split_path.read_text())
    else:
        splits = make_splits(ids, cfg.split, cfg.split_seed)
        if not splits["val"]:
            splits["val"], splits["train"] = splits["train"][-1:], splits["train"][:-1]
    n_spin = 2 if any(r[C.COL_SPIN] for r in rows if r[C.COL_ID] in set(ids)) else 1
    model_cfg = _model_config(cfg, n_spin)
    model = build_model(model_cfg).to(device)
    if cfg.target == "dos":
        train_set = DosWindows(cfg.store, splits["train"], cfg.dos_variant, model_cfg.encoder.r_cut, cfg.seed)
        val_set = DosWindows(cfg.store, splits["val"], cfg.dos_variant, model_cfg.encoder.r_cut, cfg.seed)
        val_loader = make_loader(val_set, cfg.batch_size, shuffle=False)
    else:
        train_set = DensityProbes(cfg.store, splits["train"], cfg.target, cfg.probes, model_cfg.encoder.r_cut,
                                  n_spin, cfg.seed)
    loader = make_loader(train_set, cfg.batch_size, cfg.max_probes_per_batch, cfg.workers, True, cfg.seed,
                         dist.rank, dist.world)
    steps_per_epoch = max(1, len(loader.batch_sampler))
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(min(cfg.warmup_steps, total_steps // 4 + 1),
                                                              total_steps))
    ema = copy.deepcopy(model).eval() if cfg.ema_decay else None
    start_epoch, step = 0, 0
    last = out / "last.pt"
    if resume and last.exists():
        ckpt = torch.load(last, map_location=device, weights_only=False)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        if ema is not None and ckpt.get("ema") is not None:
            ema.load_state_dict(ckpt["ema"])
        start_epoch, step = ckpt["epoch"] + 1, ckpt["step"]
    net = model
    if dist.world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    use_amp = cfg.amp and device.type == "cuda"
    meta = {"config": dataclasses.asdict(cfg), "model_config": model_cfg.to_dict(),
            "code_version": chgdata.__version__, "data_version": data_version(cfg.store),
            "n_parameters": count_parameters(model), "torch": torch.__version__}
    if dist.main:
        (out / "config.json").write_text(json.dumps(meta, indent=2, default=str))
        split_path.write_text(json.dumps(splits, indent=1))
    metrics_path = out / "metrics.csv"
    writer = _tensorboard(out) if dist.main else None
    final: dict[str, Any] = {}
    from rich.progress import Progress

    with Progress(disable=not (progress and dist.main), transient=True) as bar:
        task = bar.add_task("train", total=total_steps, completed=step)
        for epoch in range(start_epoch, cfg.epochs):
            if step >= total_steps:
                break
            train_set.set_epoch(epoch)
            loader.batch_sampler.set_epoch(epoch)
            net.train()
            t0, probes, losses = time.perf_counter(), 0, []
            for batch in loader:
                batch = _batch_to(batch, device)
                with torch.autocast("cuda", dtype=torch.bfloat16) if use_amp else contextlib.nullcontext():
                    if cfg.target == "dos":
                        pred, target = net(batch), batch[K.TARGET_DOS]
                    else:
                        attach_probe_edges(batch, model_cfg.probe_r_cut)
                        pred, target = net(batch), batch[K.TARGET_DENSITY]
                        probes += target.shape[0]
                    loss = _loss(pred.float(), target.float(), cfg.loss)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                sched.step()
                if ema is not None:
                    with torch.no_grad():
                        for pe, pm in zip(ema.parameters(), model.parameters()):
                            pe.lerp_(pm, 1 - cfg.ema_decay)
                losses.append(float(loss))
                step += 1
                bar.update(task, advance=1, description=f"epoch {epoch} loss {losses[-1]:.4g}")
                if step >= total_steps:
                    break
            wall = time.perf_counter() - t0
            row = {"epoch": epoch, "step": step, "train_loss": dist.mean(float(np.mean(losses)), device),
                   "lr": sched.get_last_lr()[0], "probes_per_s": dist.mean(probes / wall, device) * dist.world,
                   "epoch_s": wall}
            last_epoch = epoch == cfg.epochs - 1 or step >= total_steps
            if dist.main and ((epoch + 1) % cfg.val_every == 0 or last_epoch):
                eval_model = ema if ema is not None else model
                if cfg.target == "dos":
                    row.update(validate_dos(eval_model, val_loader, device))
                else:
                    vids = splits["val"][: cfg.val_max_materials] if cfg.val_max_materials else splits["val"]
                    res = validate_density(eval_model, cfg.store, vids, cfg.target, device)
                    res.pop("per_material")
                    row.update(res)
            if dist.main:
                _append_csv(metrics_path, row)
                if writer is not None:
                    for k, v in row.items():
                        writer.add_scalar(k, v, step)
                state = {"format": CHECKPOINT_FORMAT, **meta, "model": model.state_dict(),
                         "ema": None if ema is None else ema.state_dict(), "optimizer": opt.state_dict(),
                         "scheduler": sched.state_dict(), "epoch": epoch, "step": step, "metrics": row,
                         "splits": splits}
                _save(last, state)
            final = row
            dist.barrier()
    if dist.main:
        _export_small(last, out / "model.pt")
    if dist.world > 1:
        torch.distributed.destroy_process_group()
    return final


def _export_small(last: Path, path: Path) -> None:
    """A shippable checkpoint: weights (EMA if any) + metadata, no optimiser state."""
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    weights = ckpt["ema"] if ckpt.get("ema") is not None else ckpt["model"]
    keep = {k: v for k, v in ckpt.items() if k not in ("optimizer", "scheduler", "ema", "model")}
    _save(path, {**keep, "model": weights, "ema": None})


def _append_csv(path: Path, row: dict[str, Any]) -> None:
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


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    try:
        return SummaryWriter(str(out / "tb"))
    except Exception:  # tensorboard package missing behind torch's shim
        return None
