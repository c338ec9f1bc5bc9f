"""One training run in parts: :func:`setup` (device, splits, data, model, optimiser, schedule, EMA, the run's
record), :meth:`Run.restore` (resume from ``last.pt``), :meth:`Run.step` (one optimiser step), :meth:`Run.validate`,
:meth:`Run.save` (the checkpoint) and :meth:`Run.finish` (the exported model); :func:`chgdata.models.train.train`
is the loop over them."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import chgdata
from chgdata import contract as C

from . import keys as K
from .batch_edges import attach_probe_edges
from .checkpoint import CHECKPOINT_FORMAT, build_model, export_small, read_checkpoint, save_checkpoint
from .config import count_parameters
from .data import DensityProbes, DosWindows, make_loader, make_splits
from .registry import config_to_dict
from .train_config import TrainConfig, model_config
from .train_utils import (
    Dist,
    code_version,
    data_version,
    ema_update,
    lr_lambda,
    nmae_means,
    target_scale,
    usable_ids,
    validate_density,
    validate_dos,
    weighted_loss,
)


@dataclass
class Run:
    """The state of one training run; ``epoch``, ``step`` and ``in_epoch`` (batches of the epoch done) advance."""

    cfg: TrainConfig
    dist: Dist
    device: torch.device
    out: Path
    splits: dict[str, list[str]]
    train_elements: list[str]
    model_cfg: Any
    train_set: Any
    val_loader: Any
    model: nn.Module
    net: nn.Module  # the model, or its DistributedDataParallel wrapper
    ema: nn.Module | None
    opt: torch.optim.Optimizer
    sched: Any
    loader: Any
    epochs: int
    total_steps: int
    meta: dict[str, Any]
    use_amp: bool
    epoch: int = 0
    step: int = 0
    in_epoch: int = 0
    amp_checked: bool = False

    @property
    def last(self) -> Path:
        return self.out / "last.pt"

    def epoch_batches(self, e: int) -> int:
        """Batches of epoch ``e`` (packed under a probe budget: their number varies per epoch)."""
        self.loader.batch_sampler.set_epoch(e)
        return len(self.loader.batch_sampler)

    def restore(self) -> None:
        """Continue from ``last.pt``: same step, epoch and batch within the epoch; model, optimiser, scheduler,
        EMA and RNG states."""
        ckpt = read_checkpoint(self.last, self.device)
        if {k: v for k, v in ckpt["model_config"].items() if k != "kind"} != self.model_cfg.to_dict():
            raise ValueError(f"{self.last}: the checkpoint's model config differs from this run's (resume without "
                             "--config and model flags reads the run's own config.json); or use another --out")
        self.model.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["optimizer"])
        self.sched.load_state_dict(ckpt["scheduler"])
        if self.ema is not None and ckpt.get("ema") is not None:
            self.ema.load_state_dict(ckpt["ema"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        self.epoch, self.step, self.in_epoch = ckpt["epoch"], ckpt["step"], ckpt["batches_in_epoch"]
        if self.in_epoch >= self.epoch_batches(self.epoch):
            self.epoch, self.in_epoch = self.epoch + 1, 0

    def _loss(self, batch, target) -> torch.Tensor:
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.use_amp else contextlib.nullcontext()
        with autocast:
            return weighted_loss(self.net(batch).float(), target.float(), self.cfg.loss, batch.get(K.PROBE_WEIGHT))

    def step_on(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        """One optimiser step on a batch already on the device: (the loss, on the device; supervised probes)."""
        cfg = self.cfg
        if cfg.target != "dos":
            attach_probe_edges(batch, self.model_cfg.probe_r_cut)
        target = batch[K.TARGET_DOS if cfg.target == "dos" else K.TARGET_DENSITY]
        try:
            loss = self._loss(batch, target)
        except RuntimeError as exc:  # a layer that does not support bf16 autocast: go on in fp32
            if not self.use_amp or self.amp_checked:
                raise
            self.use_amp = self.meta["amp_used"] = False
            warnings.warn(f"bf16 autocast failed ({str(exc).splitlines()[0]}); training in fp32", stacklevel=1)
            loss = self._loss(batch, target)
        self.amp_checked = True
        self.opt.zero_grad(set_to_none=True)
        loss_unit = float(getattr(self.model_cfg, "output_scale", 1.0))  # densities: in units of the targets' scale
        (loss / loss_unit).backward()  # gradients of O(1) numbers: Adam's ε stays negligible
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.opt.step()
        self.sched.step()
        if self.ema is not None:
            ema_update(self.ema, self.model, cfg.ema_decay)
        self.step += 1
        self.in_epoch += 1
        return loss.detach(), (0 if cfg.target == "dos" else int(target.shape[0]))

    def validate(self) -> dict[str, float]:
        """Validation metrics of the EMA weights (or the model's); full-grid density validation is shared out over
        the ranks (every rank calls this)."""
        cfg, dist = self.cfg, self.dist
        model = self.ema if self.ema is not None else self.model
        model.eval()
        if cfg.target == "dos":  # a few hundred windows: rank 0 alone (it writes the metrics)
            return validate_dos(model, self.val_loader, self.device) if dist.main else {}
        vids = self.splits["val"][: cfg.val_max_materials] if cfg.val_max_materials else self.splits["val"]
        res = validate_density(model, cfg.store, vids[dist.rank::dist.world], cfg.target, self.device)
        per, base = res["per_material"], res["per_material_saed"]
        if dist.world > 1:
            parts: list = [None] * dist.world
            torch.distributed.all_gather_object(parts, (per, base))
            per = {k: v for p, _ in parts for k, v in p.items()}
            base = {k: v for _, b in parts for k, v in b.items()}
        return nmae_means(per, base)

    def save(self, row: dict[str, Any]) -> None:
        """``last.pt``: everything :meth:`restore` needs, with ``row`` (the latest metrics)."""
        if self.dist.main:
            state = {"format": CHECKPOINT_FORMAT, **self.meta, "model": self.model.state_dict(),
                     "ema": None if self.ema is None else self.ema.state_dict(), "optimizer": self.opt.state_dict(),
                     "scheduler": self.sched.state_dict(), "epoch": self.epoch, "step": self.step,
                     "batches_in_epoch": self.in_epoch, "metrics": row, "splits": self.splits,
                     "train_elements": self.train_elements, "rng": {"torch": torch.get_rng_state()}}
            save_checkpoint(self.last, state)
        self.dist.barrier()

    def finish(self, stopped: bool) -> None:
        """The exported ``model.pt`` (a Δ model with its SAED table inside) unless ``stopped`` early, per-rank
        records, and the process group released."""
        dist, out = self.dist, self.out
        if dist.main and not stopped:
            export_small(self.last, out / "model.pt")
            if self.cfg.target == "delta":  # a Δ model predicts ρ = SAED + Δρ̂: ship the reference table inside it
                from .checkpoint import attach_reference

                attach_reference(out / "model.pt", self.cfg.store)
        if dist.world > 1:  # one line per rank: which ranks finished, at which step
            (out / "ranks").mkdir(exist_ok=True)
            (out / "ranks" / f"rank{dist.rank}.json").write_text(json.dumps(
                {"rank": dist.rank, "world_size": dist.world, "step": self.step, "stopped_early": stopped}))
        dist.barrier()
        if dist.world > 1:
            # DDP's reducer holds the process group: free it first, or its destructor may join gloo's threads after
            # the group is gone and hang the rank at exit (seen under load: the run finished, one rank never exited)
            import gc

            self.net = None
            gc.collect()
            torch.distributed.destroy_process_group()


def _device(cfg: TrainConfig, dist: Dist) -> torch.device:
    if cfg.device != "cuda":
        return torch.device(cfg.device)
    if not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is visible")
    device = torch.device(f"cuda:{dist.local_rank}")
    torch.cuda.set_device(device)
    return device


def setup(cfg: TrainConfig, resume: bool = False) -> Run:
    """A run ready to train: splits (the run's own when resuming), data, model (at the SAED or mean-window
    baseline), optimiser, schedule and EMA; ``config.json`` and ``splits.json`` written; restored from
    ``last.pt`` when ``resume`` and it exists."""
    dist = Dist(cfg.device)
    device = _device(cfg, dist)
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
        splits = choose_splits(ds, ids, cfg)
        if not splits["val"]:
            splits["val"], splits["train"] = splits["train"][-1:], splits["train"][:-1]
    train_ids = set(splits["train"])
    train_elements = sorted({e for r in ds.index.select([C.COL_ID, C.COL_SPECIES]).to_pylist()
                             if r[C.COL_ID] in train_ids for e in r[C.COL_SPECIES]})
    spin = {r[C.COL_ID]: bool(r[C.COL_SPIN]) for r in ds.index.select([C.COL_ID, C.COL_SPIN]).to_pylist()}
    n_spin = 2 if any(spin.get(m) for m in set(ids)) else 1
    model_cfg = model_config(cfg, n_spin)
    r_cut = model_cfg.encoder.r_cut
    dtype = torch.get_default_dtype()  # the data follow the model (float32 unless the default changed)
    val_loader = None
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
    resuming = resume and (out / "last.pt").exists()
    if cfg.target == "dos" and cfg.init_output_scale and model_cfg.output_bias != "none" and not resuming:
        from .dos import start_at_windows  # start at the composition (or mean) baseline

        wins = train_set.windows if model_cfg.n_spin == 2 else train_set.windows.mean(1, keepdims=True)
        start_at_windows(model.head, wins, [train_set.static_batch(i)[K.ATOMIC_NUMBERS].numpy()
                                            for i in range(len(train_set))])
    if cfg.target == "delta" and cfg.init_output_scale and not resuming:
        with torch.no_grad():  # start near Δρ̂ = 0, i.e. at the SAED baseline, and learn the residual
            list(model.head.intensity_mlp.parameters())[-1].mul_(0.1)
    loader = make_loader(train_set, cfg.batch_size, cfg.max_probes_per_batch, cfg.workers, True, cfg.seed,
                         dist.rank, dist.world, start_method=cfg.start_method, pin_memory=device.type == "cuda")
    ema = None
    if cfg.ema_decay:  # built like the model (not deep-copied) so e3nn's generated buffers keep the same names
        ema = build_model(model_cfg).to(device)
        ema.load_state_dict(model.state_dict())
        ema.eval()
    net = model
    if dist.world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    run = Run(cfg, dist, device, out, splits, train_elements, model_cfg, train_set, val_loader, model, net, ema, opt,
              None, loader, epochs=0, total_steps=0, meta={}, use_amp=cfg.amp and device.type == "cuda")
    if run.epoch_batches(0) < 1:
        raise ValueError(f"{cfg.store}: the train split gives no batch on rank {dist.rank} of {dist.world}")
    # a step budget bounds the run by steps alone; otherwise the epochs' exact batch counts give its length
    run.epochs = sys.maxsize if cfg.max_steps else cfg.epochs
    run.total_steps = cfg.max_steps or sum(run.epoch_batches(e) for e in range(cfg.epochs))
    run.sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(min(cfg.warmup_steps, run.total_steps // 4 + 1),
                                                                 run.total_steps))
    if resuming:
        run.restore()
    run.meta = {"config": dataclasses.asdict(cfg), "model_config": config_to_dict(model_cfg),
                "code_version": code_version(), "data_version": data_version(cfg.store),
                "n_parameters": count_parameters(model), "torch": str(torch.__version__), "world_size": dist.world,
                "amp_used": run.use_amp,
                # what the run does, in one place: a step budget (max_steps) ends it whatever ``epochs`` says
                "run_length": {"steps": run.total_steps, "bounded_by": "max_steps" if cfg.max_steps else "epochs",
                               "epochs": None if cfg.max_steps else cfg.epochs}}
    run.meta["saed_reference_id"] = run.meta["data_version"]["saed_reference_id"]
    if dist.main:
        (out / "config.json").write_text(json.dumps(run.meta, indent=2, default=str))
        split_path.write_text(json.dumps(splits, indent=1))
    return run


def choose_splits(ds, ids: list[str], cfg: TrainConfig) -> dict[str, list[str]]:
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
