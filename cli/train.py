"""``chgdata train``: train the charge-density (Δρ or total) or DOS model on a store."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from chgdata.cli.common import QUIET, cli_errors, console, out


def train(
    store: str = typer.Option(None, "--store", "-s", help="Dataset directory or fsspec URL (built with "
                              "build-delta for --target delta, build-dos for dos)."),
    target: str = typer.Option(None, "--target", "-t", help="delta (ρ − ρ_SAED, default), total or dos."),
    device: str = typer.Option(None, "--device", help="cpu or cuda (under torchrun: one GPU per process)."),
    epochs: int = typer.Option(None, "--epochs", min=1, help="Passes over the training materials."),
    max_steps: int = typer.Option(None, "--max-steps", min=1, help="Stop after this many optimiser steps."),
    probes: int = typer.Option(None, "--probes", min=1, help="Random grid points per structure per step."),
    max_probes_per_batch: int = typer.Option(None, "--max-probes-per-batch", min=1,
                                             help="Cap on the probes of one batch (fewer structures then)."),
    batch_size: int = typer.Option(None, "--batch-size", "-b", min=1, help="Structures per batch."),
    lr: float = typer.Option(None, "--lr", help="Peak learning rate (AdamW, warm-up then cosine)."),
    loss: str = typer.Option(None, "--loss", help="l1 or mse (default l1 for densities, mse for DOS)."),
    weighting: str = typer.Option(None, "--weighting", help="Density probes: nmae (default; every material "
                                  "weighs as in the validation NMAE, ∝ 1/mean density) or none."),
    ema: float = typer.Option(None, "--ema", help="EMA decay of the weights, e.g. 0.999 (default: off)."),
    workers: int = typer.Option(None, "--workers", "-w", min=0, help="DataLoader worker processes (spawn)."),
    seed: int = typer.Option(None, "--seed", help="Seed of weights, probe draws and batch order."),
    run_dir: Path = typer.Option(None, "--out", "-o", help="Run directory (config, splits, metrics, checkpoints)."),
    config: Path = typer.Option(None, "--config", "-c", exists=True, dir_okay=False,
                                help="YAML or TOML file of TrainConfig fields; flags given here override it."),
    preset: str = typer.Option(None, "--preset", help="cpu or gpu: model size, probes, batch and step count "
                               "sized for the device (default: gpu with --device cuda, else cpu); --config and "
                               "flags override it."),
    resume: bool = typer.Option(False, "--resume", help="Continue from RUN_DIR/last.pt (with RUN_DIR/config.json "
                                "unless --config is given)."),
    quiet: bool = QUIET,
) -> None:
    """Train a model on a store; writes RUN_DIR/{config.json,splits.json,metrics.csv,last.pt,model.pt}."""
    from chgdata.app import TrainingInterrupted, train_config
    from chgdata.app import train as run_train

    with cli_errors():
        cfg = train_config(store, config=config, preset=preset, resume=resume, target=target, device=device,
                           epochs=epochs, max_steps=max_steps, probes=probes,
                           max_probes_per_batch=max_probes_per_batch, batch_size=batch_size, lr=lr, loss=loss,
                           weighting=weighting, ema_decay=ema, workers=workers, seed=seed,
                           out=str(run_dir) if run_dir else None)
        try:
            final = run_train(config=cfg, resume=resume, progress=not quiet)
        except TrainingInterrupted as exc:
            console.print(f"interrupted: {exc}", highlight=False, soft_wrap=True)
            sys.exit(130)
    if final:
        shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in final.items())
        out.print(f"trained {cfg.target} → {cfg.out}: {shown}", soft_wrap=True, highlight=False)
    else:
        console.print(f"nothing to do: {cfg.out} is already trained to step/epoch limits")


def ensemble(
    checkpoints: list[Path] = typer.Argument(..., exists=True, dir_okay=False,
                                             help="model.pt of two or more density runs trained on the same data."),
    out_path: Path = typer.Option(..., "--out", "-o", dir_okay=False, help="Ensemble checkpoint to write."),
) -> None:
    """Combine density checkpoints into one ensemble checkpoint that predicts the mean of its members."""
    from chgdata.app import ensemble as combine

    with cli_errors():
        path = combine(checkpoints, out_path)
    out.print(f"wrote {path}: the mean of {len(checkpoints)} density models (chgdata predict/evaluate -c {path})")
