"""Training loop for the density and DOS models, reading straight from a chgdata store.

One loop, :func:`train`, driven by a :class:`~chgdata.models.train_config.TrainConfig` (CLI flags or a
YAML/TOML file) over the parts of a run (:mod:`chgdata.models.train_run`). It runs on CPU
or CUDA, under ``torchrun`` with DistributedDataParallel (NCCL on GPUs, gloo on CPU), with AdamW + warm-up and
cosine decay, bf16 autocast on CUDA, gradient clipping, optional EMA of the weights, checkpoints that carry the
full config, code version, data version and SAED reference id, ``resume``, and metrics in ``metrics.csv``
(and TensorBoard when installed). Validation NMAE is ChargE3Net's: per material 100·Σ|ρ̂ − ρ|/Σ|ρ| over the
full grid of the total density (for a Δ model ρ̂ = ρ_SAED + Δρ̂, so the error is Σ|Δρ̂ − Δρ|), mean over materials.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from .train_config import TrainConfig
from .train_run import setup
from .train_utils import (
    PlainProgress,
    StopSignals,
    TrainingInterrupted,
    append_csv,
    batch_to,
    tensorboard_writer,
)

LOG_EVERY = 25  # steps between progress-bar loss readings (each one is a device synchronisation)
log = logging.getLogger(__name__)
WARM_STEPS = 5  # steps of start-up (workers, first batches, kernel autotuning) left out of the timed rate


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
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    run = setup(cfg, resume)
    dist, device, out = run.dist, run.device, run.out
    metrics_path = out / "metrics.csv"
    writer = tensorboard_writer(out) if dist.main and cfg.tensorboard else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    final: dict[str, Any] = {}
    t_run = time.perf_counter()
    warm_step = run.step + WARM_STEPS  # the rate in s/step is measured from here on (start-up, autotuning before)
    t_warm: float | None = None
    s_per_step: float | None = None
    epoch_rates: list[tuple[int, float]] = []  # (probes, seconds) of each epoch this process trained
    stopped = False
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    plain_log = PlainProgress(run.total_steps, progress and dist.main, cfg.log_seconds)
    start_step, t_ckpt = run.step, time.perf_counter()
    with Progress(*columns, disable=not (progress and dist.main), transient=True) as bar, StopSignals() as signals:
        task = bar.add_task("train", total=run.total_steps, completed=run.step)
        while run.epoch < run.epochs and run.step < run.total_steps and not stopped:
            run.train_set.set_epoch(run.epoch)
            n_batches = run.epoch_batches(run.epoch)
            run.loader.batch_sampler.skip = run.in_epoch
            run.net.train()
            t0, probes = time.perf_counter(), 0
            loss_sum, n_losses = torch.zeros((), dtype=torch.float64, device=device), 0  # summed on the device
            for batch in run.loader:
                loss, n_probes = run.step_on(batch_to(batch, device))
                probes += n_probes
                loss_sum += loss
                n_losses += 1
                step = run.step
                if step == warm_step:
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    t_warm = time.perf_counter()
                if step % LOG_EVERY == 0 or step == 1:  # reading the loss waits for the device: not every step
                    bar.update(task, description=f"epoch {run.epoch} loss {float(loss):.4g}")
                bar.update(task, advance=1)
                if plain_log.due(step):
                    log.info(plain_log.line(step, start_step, run.epoch, float(loss)))
                if signals.signum is not None:
                    run.save({"step": step})
                    name = "SIGINT" if signals.signum == 2 else "SIGTERM"
                    raise TrainingInterrupted(f"{name}: stopped at step {step}/{run.total_steps}, checkpoint "
                                              f"{run.last}; resume with: chgdata train --out {out} --resume")
                if step >= run.total_steps or (stop_after is not None and step >= stop_after):
                    stopped = step < run.total_steps
                    break
                if ((cfg.ckpt_every and step % cfg.ckpt_every == 0)
                        or (cfg.ckpt_seconds and time.perf_counter() - t_ckpt >= cfg.ckpt_seconds)):
                    run.save({"step": step})
                    t_ckpt = time.perf_counter()
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # the queued steps belong to this epoch's time
            t_end = time.perf_counter()
            wall = t_end - t0
            if t_warm is not None and run.step > warm_step:
                s_per_step = (t_end - t_warm) / (run.step - warm_step)
            row = {"epoch": run.epoch, "step": run.step,
                   "train_loss": dist.mean(float(loss_sum) / n_losses if n_losses else float("nan"), device),
                   "lr": run.sched.get_last_lr()[0], "probes_per_s": dist.mean(probes / wall, device) * dist.world,
                   "epoch_s": wall, "wall_s": time.perf_counter() - t_run}
            if device.type == "cuda":
                row["peak_gpu_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            epoch_done = run.in_epoch >= n_batches
            end_of_run = run.step >= run.total_steps or (epoch_done and run.epoch + 1 >= run.epochs)
            if not stopped and ((run.epoch + 1) % cfg.val_every == 0 or end_of_run):
                row.update(run.validate())
            if dist.main:
                append_csv(metrics_path, row)
                if writer is not None:
                    for k, v in row.items():
                        writer.add_scalar(k, v, run.step)
            run.save(row)
            final = row
            epoch_rates.append((probes, wall))
            if epoch_done:
                run.epoch, run.in_epoch = run.epoch + 1, 0
    if final and s_per_step is not None:
        final = {**final, "s_per_step": s_per_step}
    if final and cfg.target != "dos":  # the summary: steady throughput of the whole run, not of its last epoch
        steady = epoch_rates[1:] or epoch_rates  # the first epoch carries start-up (workers, first batches)
        rate = sum(p for p, _ in steady) / max(sum(w for _, w in steady), 1e-9)
        final = {**final, "probes_per_s": dist.mean(rate, device) * dist.world}
    if writer is not None:
        writer.close()
    run.finish(stopped)
    return final


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
