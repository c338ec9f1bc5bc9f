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
import dataclasses
import json
import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import chgdata
from chgdata import contract as C

from . import keys as K
from .checkpoint import (  # noqa: F401  (plain, load_checkpoint, model_config_from_dict: API)
    CHECKPOINT_FORMAT,
    build_model,
    export_small,
    load_checkpoint,
    model_config_from_dict,
    plain,
    read_checkpoint,
    save_checkpoint,
)
from .config import ChargeDensityConfig, DosConfig, count_parameters
from .data import DensityProbes, DosWindows, attach_probe_edges, make_loader, make_splits
from .registry import config_to_dict
from .train_utils import (
    Dist,
    PlainProgress,
    StopSignals,
    TrainingInterrupted,
    append_csv,
    batch_to,
    code_version,
    data_version,
    ema_update,
    lr_lambda,
    nmae_means,
    target_scale,
    tensorboard_writer,
    usable_ids,
    validate_density,
    validate_dos,
    weighted_loss,
)

LOG_EVERY = 25  # steps between progress-bar loss readings (each one is a device synchronisation)
log = logging.getLogger(__name__)
WARM_STEPS = 5  # steps of start-up (workers, first batches, kernel autotuning) left out of the timed rate


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
        _model_config(cfg, 1)  # the model overrides, checked the same way
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


def _model_config(cfg: TrainConfig, n_spin_channels: int):
    """The model config of a run: the dataclass defaults with ``cfg.model``'s overrides (validated)."""
    from .schema import validate

    overrides = dict(cfg.model)
    if cfg.target == "dos":
        return validate(DosConfig, overrides, "model option")
    return validate(ChargeDensityConfig, {**overrides, "target": cfg.target, "n_spin_channels": n_spin_channels},
                    "model option")


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True,
          stop_after: int | None = None) -> dict[str, Any]:
    """Train; returns the final metrics. Writes config, splits, metrics.csv and checkpoints to ``cfg.out``.

    The returned metrics are the last epoch's row of metrics.csv, except ``probes_per_s``: the steady rate of
    the whole run in this process (supervised probes per second of training, epochs after the first).

    ``resume`` continues from ``out/last.pt`` (same step, epoch and batch within the epoch; model, optimiser,
    scheduler, EMA and RNG states), so an interrupted run ends where an uninterrupted one would.
    ``s_per_step`` (when the run did more than :data:`WARM_STEPS` steps) is the steady wall time per step, from
    step ``WARM_STEPS`` on, validations between epochs included.
    ``stop_after`` ends the process after that many optimiser steps *without* changing the schedule (it
    writes a checkpoint first): the run is then continued with ``resume``; time-boxed jobs and tests use it.
    """
    dist = Dist(cfg.device)
    if cfg.device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is visible")
        device = torch.device(f"cuda:{dist.local_rank}")
        torch.cuda.set_device(device)
    else:
        device = torch.device(cfg.device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = chgdata.open_dataset(cfg.store)
    ids = usable_ids(ds, cfg.target)
    if len(ids) < 2:
        raise ValueError(f"{cfg.store}: {len(ids)} materials usable for target {cfg.target!r}; need at least 2")
    split_path = out / "splits.json"
    if resume and split_path.exists():
        splits = json.loads(split_path.read_text())
    else:
        splits = _choose_splits(ds, ids, cfg)
        if not splits["val"]:
            splits["val"], splits["train"] = splits["train"][-1:], splits["train"][:-1]
    id_set = set(ids)
    train_ids = set(splits["train"])
    train_elements = sorted({e for r in ds.index.select([C.COL_ID, C.COL_SPECIES]).to_pylist()
                             if r[C.COL_ID] in train_ids for e in r[C.COL_SPECIES]})
    spin = {r[C.COL_ID]: bool(r[C.COL_SPIN]) for r in ds.index.select([C.COL_ID, C.COL_SPIN]).to_pylist()}
    n_spin = 2 if any(spin.get(m) for m in id_set) else 1
    model_cfg = _model_config(cfg, n_spin)
    r_cut = model_cfg.encoder.r_cut
    dtype = torch.get_default_dtype()  # the data follow the model (float32 unless the default changed)
    if cfg.target == "dos":
        train_set = DosWindows(cfg.store, splits["train"], cfg.dos_variant, r_cut, cfg.seed, dtype)
        val_set = DosWindows(cfg.store, splits["val"], cfg.dos_variant, r_cut, cfg.seed, dtype)
        val_loader = make_loader(val_set, cfg.batch_size, shuffle=False)
    else:
        train_set = DensityProbes(cfg.store, splits["train"], cfg.target, cfg.probes, r_cut, n_spin, cfg.seed,
                                  dtype, weighting=cfg.weighting, probe_r_cut=model_cfg.probe_r_cut)
        if cfg.init_output_scale and "output_scale" not in cfg.model:
            model_cfg.output_scale = target_scale(train_set)
    torch.manual_seed(cfg.seed)  # same initial weights on every rank (DDP also broadcasts them)
    model = build_model(model_cfg).to(device)
    if (cfg.target == "dos" and cfg.init_output_scale and model_cfg.output_bias != "none"
            and not (resume and (out / "last.pt").exists())):  # start at the composition (or mean) baseline
        from .dos import start_at_windows

        wins = train_set.windows if model_cfg.n_spin == 2 else train_set.windows.mean(1, keepdims=True)
        start_at_windows(model.head, wins, [train_set.static_batch(i)[K.ATOMIC_NUMBERS].numpy()
                                            for i in range(len(train_set))])
    if cfg.target == "delta" and cfg.init_output_scale and not (resume and (out / "last.pt").exists()):
        with torch.no_grad():  # start near Δρ̂ = 0, i.e. at the SAED baseline, and learn the residual
            list(model.head.intensity_mlp.parameters())[-1].mul_(0.1)
    loader = make_loader(train_set, cfg.batch_size, cfg.max_probes_per_batch, cfg.workers, True, cfg.seed,
                         dist.rank, dist.world, start_method=cfg.start_method, pin_memory=device.type == "cuda")
    sampler = loader.batch_sampler

    def epoch_batches(e: int) -> int:  # batches packed under a probe budget: their number varies per epoch
        sampler.set_epoch(e)
        return len(sampler)

    if epoch_batches(0) < 1:
        raise ValueError(f"{cfg.store}: the train split gives no batch on rank {dist.rank} of {dist.world}")
    # a step budget bounds the run by steps alone; otherwise the epochs' exact batch counts give its length
    epochs = sys.maxsize if cfg.max_steps else cfg.epochs
    total_steps = cfg.max_steps or sum(epoch_batches(e) for e in range(cfg.epochs))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(min(cfg.warmup_steps, total_steps // 4 + 1),
                                                              total_steps))
    last = out / "last.pt"
    ema = None
    if cfg.ema_decay:  # built like the model (not deep-copied) so e3nn's generated buffers keep the same names
        ema = build_model(model_cfg).to(device)
        ema.load_state_dict(model.state_dict())
        ema.eval()
    epoch, step, in_epoch = 0, 0, 0
    if resume and last.exists():
        ckpt = read_checkpoint(last, device)
        if {k: v for k, v in ckpt["model_config"].items() if k != "kind"} != model_cfg.to_dict():
            raise ValueError(f"{last}: the checkpoint's model config differs from this run's (resume without "
                             "--config and model flags reads the run's own config.json); or use another --out")
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        if ema is not None and ckpt.get("ema") is not None:
            ema.load_state_dict(ckpt["ema"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        epoch, step, in_epoch = ckpt["epoch"], ckpt["step"], ckpt["batches_in_epoch"]
        if in_epoch >= epoch_batches(epoch):
            epoch, in_epoch = epoch + 1, 0
    net = model
    if dist.world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    use_amp = cfg.amp and device.type == "cuda"
    loss_unit = float(getattr(model_cfg, "output_scale", 1.0))  # densities: the loss in units of the targets' scale
    amp_checked = False
    meta = {"config": dataclasses.asdict(cfg), "model_config": config_to_dict(model_cfg),
            "code_version": code_version(), "data_version": data_version(cfg.store),
            "n_parameters": count_parameters(model), "torch": str(torch.__version__), "world_size": dist.world,
            "amp_used": use_amp,
            # what the run does, in one place: a step budget (max_steps) ends it whatever ``epochs`` says
            "run_length": {"steps": total_steps, "bounded_by": "max_steps" if cfg.max_steps else "epochs",
                           "epochs": None if cfg.max_steps else cfg.epochs}}
    meta["saed_reference_id"] = meta["data_version"]["saed_reference_id"]
    if dist.main:
        (out / "config.json").write_text(json.dumps(meta, indent=2, default=str))
        split_path.write_text(json.dumps(splits, indent=1))
    metrics_path = out / "metrics.csv"
    writer = tensorboard_writer(out) if dist.main and cfg.tensorboard else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def checkpoint(row: dict[str, Any]) -> None:
        if dist.main:
            state = {"format": CHECKPOINT_FORMAT, **meta, "model": model.state_dict(),
                     "ema": None if ema is None else ema.state_dict(), "optimizer": opt.state_dict(),
                     "scheduler": sched.state_dict(), "epoch": epoch, "step": step,
                     "batches_in_epoch": in_epoch, "metrics": row, "splits": splits,
                     "train_elements": train_elements,
                     "rng": {"torch": torch.get_rng_state()}}
            save_checkpoint(last, state)
        dist.barrier()

    final: dict[str, Any] = {}
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    t_run = time.perf_counter()
    warm_step = step + WARM_STEPS  # the rate in s/step is measured from here on (start-up and autotuning before)
    t_warm: float | None = None
    s_per_step: float | None = None
    epoch_rates: list[tuple[int, float]] = []  # (probes, seconds) of each epoch this process trained
    stopped = False
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    plain_log = PlainProgress(total_steps, progress and dist.main, cfg.log_seconds)
    start_step, t_ckpt = step, time.perf_counter()
    with Progress(*columns, disable=not (progress and dist.main), transient=True) as bar, StopSignals() as signals:
        task = bar.add_task("train", total=total_steps, completed=step)
        while epoch < epochs and step < total_steps and not stopped:
            train_set.set_epoch(epoch)
            n_batches = epoch_batches(epoch)
            sampler.skip = in_epoch
            net.train()
            t0, probes = time.perf_counter(), 0
            loss_sum, n_losses = torch.zeros((), dtype=torch.float64, device=device), 0  # summed on the device
            for batch in loader:
                batch = batch_to(batch, device)
                if cfg.target != "dos":
                    attach_probe_edges(batch, model_cfg.probe_r_cut)
                target = batch[K.TARGET_DOS if cfg.target == "dos" else K.TARGET_DENSITY]
                try:
                    with torch.autocast(device.type, dtype=torch.bfloat16) if use_amp else contextlib.nullcontext():
                        loss = weighted_loss(net(batch).float(), target.float(), cfg.loss, batch.get(K.PROBE_WEIGHT))
                except RuntimeError as exc:  # a layer that does not support bf16 autocast: go on in fp32
                    if not use_amp or amp_checked:
                        raise
                    use_amp = False
                    meta["amp_used"] = False
                    warnings.warn(f"bf16 autocast failed ({str(exc).splitlines()[0]}); training in fp32",
                                  stacklevel=1)
                    loss = weighted_loss(net(batch).float(), target.float(), cfg.loss, batch.get(K.PROBE_WEIGHT))
                amp_checked = True
                if cfg.target != "dos":
                    probes += target.shape[0]
                opt.zero_grad(set_to_none=True)
                (loss / loss_unit).backward()  # gradients of O(1) numbers: Adam's ε stays negligible
                if cfg.grad_clip:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                sched.step()
                if ema is not None:
                    ema_update(ema, model, cfg.ema_decay)
                loss_sum += loss.detach()
                n_losses += 1
                step += 1
                if step == warm_step:
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    t_warm = time.perf_counter()
                in_epoch += 1
                if step % LOG_EVERY == 0 or step == 1:  # reading the loss waits for the device: not every step
                    bar.update(task, description=f"epoch {epoch} loss {float(loss.detach()):.4g}")
                bar.update(task, advance=1)
                if plain_log.due(step):
                    log.info(plain_log.line(step, start_step, epoch, float(loss.detach())))
                if signals.signum is not None:
                    checkpoint({"step": step})
                    name = "SIGINT" if signals.signum == 2 else "SIGTERM"
                    raise TrainingInterrupted(f"{name}: stopped at step {step}/{total_steps}, checkpoint {last}; "
                                              f"resume with: chgdata train --out {out} --resume")
                if step >= total_steps or (stop_after is not None and step >= stop_after):
                    stopped = step < total_steps
                    break
                if ((cfg.ckpt_every and step % cfg.ckpt_every == 0)
                        or (cfg.ckpt_seconds and time.perf_counter() - t_ckpt >= cfg.ckpt_seconds)):
                    checkpoint({"step": step})
                    t_ckpt = time.perf_counter()
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # the queued steps belong to this epoch's time
            t_end = time.perf_counter()
            wall = t_end - t0
            if t_warm is not None and step > warm_step:
                s_per_step = (t_end - t_warm) / (step - warm_step)
            row = {"epoch": epoch, "step": step,
                   "train_loss": dist.mean(float(loss_sum) / n_losses if n_losses else float("nan"), device),
                   "lr": sched.get_last_lr()[0], "probes_per_s": dist.mean(probes / wall, device) * dist.world,
                   "epoch_s": wall, "wall_s": time.perf_counter() - t_run}
            if device.type == "cuda":
                row["peak_gpu_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            epoch_done = in_epoch >= n_batches
            end_of_run = step >= total_steps or (epoch_done and epoch + 1 >= epochs)
            if not stopped and ((epoch + 1) % cfg.val_every == 0 or end_of_run):
                row.update(_validate(cfg, ema if ema is not None else model, splits, device,
                                     val_loader if cfg.target == "dos" else None, dist))
            if dist.main:
                append_csv(metrics_path, row)
                if writer is not None:
                    for k, v in row.items():
                        writer.add_scalar(k, v, step)
            checkpoint(row)
            final = row
            epoch_rates.append((probes, wall))
            if epoch_done:
                epoch, in_epoch = epoch + 1, 0
    if final and s_per_step is not None:
        final = {**final, "s_per_step": s_per_step}
    if final and cfg.target != "dos":  # the summary: steady throughput of the whole run, not of its last epoch
        steady = epoch_rates[1:] or epoch_rates  # the first epoch carries start-up (workers, first batches)
        rate = sum(p for p, _ in steady) / max(sum(w for _, w in steady), 1e-9)
        final = {**final, "probes_per_s": dist.mean(rate, device) * dist.world}
    if dist.main and not stopped:
        export_small(last, out / "model.pt")
        if cfg.target == "delta":  # a Δ model predicts ρ = SAED + Δρ̂: ship the reference table inside it
            from .checkpoint import attach_reference

            attach_reference(out / "model.pt", cfg.store)
    if writer is not None:
        writer.close()
    if dist.world > 1:  # one line per rank: which ranks finished, at which step
        (out / "ranks").mkdir(exist_ok=True)
        (out / "ranks" / f"rank{dist.rank}.json").write_text(json.dumps(
            {"rank": dist.rank, "world_size": dist.world, "step": step, "stopped_early": stopped}))
    dist.barrier()
    if dist.world > 1:
        # DDP's reducer holds the process group: free it first, or its destructor may join gloo's threads after
        # the group is gone and hang the rank at exit (seen under load: the run finished, one rank never exited)
        import gc

        net = loss = batch = None  # noqa: F841
        gc.collect()
        torch.distributed.destroy_process_group()
    return final


def _choose_splits(ds, ids: list[str], cfg: TrainConfig) -> dict[str, list[str]]:
    """The store's grouped split restricted to ``ids`` (``split_source`` store/auto), else a random split by
    material (``random``, or ``auto`` on a store without a recorded split, with a warning)."""
    recorded = ds.splits()
    if cfg.split_source != "random" and any(recorded.values()):
        have = set(ids)
        out = {k: [m for m in v if m in have] for k, v in recorded.items()}
        if cfg.train_group_fraction < 1.0:  # a fixed, nested subset of whole groups (hash order)
            from chgdata.splits import hash_unit

            groups = ds.groups()
            out["train"] = [m for m in out["train"]
                            if hash_unit(cfg.split_seed + 1, groups.get(m, m)) < cfg.train_group_fraction]
        if cfg.cv_folds:  # fold cv_fold of the train split's groups becomes val; val and test are not read
            from chgdata.splits import grouped_folds

            groups, train = ds.groups(), out["train"]
            held = set(grouped_folds([groups.get(m, m) for m in train], cfg.cv_folds, cfg.split_seed)[cfg.cv_fold])
            out = {"train": [m for i, m in enumerate(train) if i not in held],
                   "val": [m for i, m in enumerate(train) if i in held], "test": []}
        return out
    if cfg.split_source == "store":
        raise ValueError(f"{cfg.store} records no split (run: chgdata split --store {cfg.store})")
    if cfg.split_source == "auto":
        warnings.warn(f"{cfg.store} records no grouped split: training on a random split by material "
                      f"(chgdata split --store {cfg.store} holds out whole compositions)", stacklevel=2)
    return make_splits(ids, cfg.split, cfg.split_seed)


def _validate(cfg: TrainConfig, model: nn.Module, splits, device, val_loader, dist: Dist) -> dict[str, float]:
    """Validation metrics; full-grid density validation is shared out over the ranks (every rank calls this)."""
    model.eval()
    if cfg.target == "dos":  # a few hundred windows: rank 0 alone (it writes the metrics)
        return validate_dos(model, val_loader, device) if dist.main else {}
    vids = splits["val"][: cfg.val_max_materials] if cfg.val_max_materials else splits["val"]
    res = validate_density(model, cfg.store, vids[dist.rank::dist.world], cfg.target, device)
    per, base = res["per_material"], res["per_material_saed"]
    if dist.world > 1:
        parts: list = [None] * dist.world
        torch.distributed.all_gather_object(parts, (per, base))
        per = {k: v for p, _ in parts for k, v in p.items()}
        base = {k: v for _, b in parts for k, v in b.items()}
    return nmae_means(per, base)


def steps_for_budget(config_for, budget_s: float, work: str | os.PathLike, max_steps: int,
                     calibration_steps: int = 20) -> tuple[int, float]:
    """Optimiser steps that fill ``budget_s`` seconds of training, sized by a short calibration run.

    ``config_for(max_steps, out)`` returns the run's :class:`TrainConfig`; the calibration trains it in
    ``work/calibration`` (removed afterwards) for :data:`WARM_STEPS` steps of start-up, then times
    ``calibration_steps`` more. Returns ``(steps, seconds per step)``; steps are 85 % of
    the budget (validation and checkpoints take the rest), at least 10 and at most ``max_steps``."""
    import shutil

    if not (budget_s > 0 and calibration_steps > 0):
        raise ValueError(f"budget_s and calibration_steps must be positive, got {budget_s}, {calibration_steps}")
    calib = Path(work) / "calibration"
    shutil.rmtree(calib, ignore_errors=True)
    final = train(config_for(10**6, calib), progress=False, stop_after=calibration_steps + WARM_STEPS)
    shutil.rmtree(calib, ignore_errors=True)
    if "s_per_step" not in final:
        raise ValueError(f"the calibration run ended before step {WARM_STEPS + 1}: nothing to time")
    s_per_step = final["s_per_step"]
    return int(max(10, min(max_steps, 0.85 * budget_s / s_per_step))), s_per_step
