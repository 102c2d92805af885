"""The training run shared by the task folders: optimiser and schedule from the config, DDP or DeepSpeed,
exact resume, the epoch loop, evaluation, checkpoints and logs. A task builds its data, model and loss
and hands them to :class:`TrainingRun`; it never re-implements any of this.

Config keys read here (``train.*``): epochs, lr, lr_scale_batch (lr x global batch / this; null = no
scaling), min_lr, warmup_epochs, warmup_lr, sched_per ('step' | 'epoch'), weight_decay, weight_decay_end,
layer_decay, layer_decay_mode, module_lr ({module name: its peak lr}), betas, eps, clip_grad, accum_steps, amp ('none' | 'bf16' | 'fp16'),
ema_decay, save_every, compile (false | true | a torch.compile backend name), find_unused_parameters (DDP),
deepspeed {enabled, stage, config}.
``data.num_sample`` (video repeated augmentation: each loaded item is that many samples) enters the global
batch of the lr scaling rule, as the official video code does.

The run knows nothing about the task: the task passes its ``loss_fn(model, x, y)`` (batch mixing included)
and its ``evaluate_fn(model, loader, device, amp, progress) -> dict``, and names the ``metric`` of that dict
that picks ``checkpoint-best.pth`` (e.g. ``acc1``; a regression passes ``metric="mse",
higher_is_better=False``, masked pretraining ``metric="loss"``). Without a validation loader
(``val_loader=None``, e.g. the official pretraining recipes) no evaluation runs and only
``checkpoint-latest.pth`` is written.

``fit()`` returns the last epoch's scalars with the final evaluation under ``"eval"`` (the whole dict the
task's ``evaluate_fn`` returned, nested results included). A run built without a train loader is an
evaluation-only run: :meth:`TrainingRun.evaluate_only` evaluates the model (every entry point's ``--eval``),
and :meth:`TrainingRun.write_results` writes ``results.json`` for either.
"""
from __future__ import annotations

import json
import shutil
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..utils.checkpoint_io import atomic_write
from .loop import train_one_epoch
from .config import merge
from ..utils.dist import DistInfo, all_gather_object, barrier, broadcast_object
from .ema import ModelEma
from .logger import RunLogger
from .optim import lock_modules, param_groups
from .plots import plot_curves
from .schedule import cosine_per_epoch, cosine_per_step
from .steppers import DeepSpeedStepper, TorchStepper
from .train_state import (BEST, LATEST, capture_rng, find_resume, load_training_state, restore_rng,
                          save_training_state)

STEPS_LOG = "train_steps.jsonl"
DEEPSPEED_DIR = "deepspeed"


def scaled_lr(t, global_batch: int) -> float:
    """The official linear scaling rule: ``lr * global_batch / lr_scale_batch`` (512 for images)."""
    scale_batch = t.get("lr_scale_batch")
    return t.lr * global_batch / scale_batch if scale_batch else t.lr


def build_schedules(t, lr: float, steps_per_epoch: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-optimiser-step lr (and wd, when ``weight_decay_end`` is set) arrays."""
    if t.sched_per == "epoch":
        # The official image loop calls timm's scheduler.step(epoch) *after* each epoch: epoch 0 runs at the
        # initial (warmup) value and epoch e >= 1 at f(e - 1).
        per_epoch = cosine_per_epoch(lr, t.min_lr, t.epochs, t.warmup_epochs, t.warmup_lr)
        lr_sched = np.repeat(np.concatenate((per_epoch[:1], per_epoch[:-1])), steps_per_epoch)
    elif t.sched_per == "step":
        lr_sched = cosine_per_step(lr, t.min_lr, t.epochs, steps_per_epoch, t.warmup_epochs, t.warmup_lr)
    else:
        raise ValueError(f"train.sched_per must be 'step' or 'epoch', got {t.sched_per!r}")
    wd_end = t.get("weight_decay_end")
    wd_sched = None if wd_end is None else cosine_per_step(t.weight_decay, wd_end, t.epochs, steps_per_epoch)
    return lr_sched, wd_sched


def deepspeed_config(cfg, world_size: int) -> dict:
    """A DeepSpeed config from ours: micro batch, accumulation, ZeRO stage, clipping and precision;
    ``train.deepspeed.config`` is merged on top for anything else."""
    t, ds = cfg.train, cfg.train.deepspeed
    stage = int(ds.get("stage", 2))
    if stage not in (1, 2):
        raise ValueError(f"train.deepspeed.stage={stage}: supported are ZeRO 1 and 2 (the weights stay whole on "
                         "every rank, so checkpoints, EMA and eval work as without DeepSpeed); stage 0 is plain DDP, "
                         "use train.deepspeed.enabled=false")
    conf = {"train_micro_batch_size_per_gpu": cfg.data.batch_size,
            "gradient_accumulation_steps": t.accum_steps,
            "train_batch_size": cfg.data.batch_size * t.accum_steps * world_size,
            "zero_optimization": {"stage": stage},
            "zero_allow_untested_optimizer": True,   # our AdamW with layer-decay groups
            "gradient_clipping": float(t.clip_grad or 0.0),
            "bf16": {"enabled": t.amp == "bf16"},
            "fp16": {"enabled": t.amp == "fp16"},
            "steps_per_print": 10 ** 9, "wall_clock_breakdown": False}
    extra = ds.get("config") or {}
    return merge(conf, extra.to_dict() if hasattr(extra, "to_dict") else dict(extra))


class TrainingRun:
    """Everything between "here are a model, loaders and a loss" and a finished, resumable run."""

    def __init__(self, cfg, info: DistInfo, model: torch.nn.Module, train_loader, val_loader, train_sampler=None,
                 loss_fn: Callable | None = None, *, evaluate_fn: Callable | None = None, progress: bool = True,
                 metric: str | None = None, higher_is_better: bool = True, epoch_stats_fn: Callable | None = None,
                 checkpoint_meta: dict | None = None):
        if val_loader is not None and (evaluate_fn is None or metric is None):
            raise ValueError("TrainingRun: a validation loader needs the task's evaluate_fn and the metric that "
                             "picks the best checkpoint")
        self.cfg, self.info, self.t = cfg, info, cfg.train
        self.metric, self.higher_is_better = metric, higher_is_better
        self.epoch_stats_fn = epoch_stats_fn   # () -> dict of extra per-epoch scalars (e.g. unreadable videos)
        # plain data saved in every checkpoint's "extra" (e.g. how to build the model and the label names,
        # so `videomamba predict` needs nothing but the file)
        self.checkpoint_meta = dict(checkpoint_meta or {})
        self.out = Path(cfg.output_dir)
        self.train_loader, self.val_loader, self.train_sampler = train_loader, val_loader, train_sampler
        self.loss_fn, self.evaluate_fn, self.progress = loss_fn, evaluate_fn, progress
        self.last_eval: dict | None = None
        self.model = model.to(info.device)
        if train_loader is None:   # evaluation only: no optimiser, schedule or wrapping
            self.wrapped, self.engine, self.ema = self.model, None, None
            return
        if loss_fn is None:
            raise ValueError("TrainingRun: training needs the task's loss_fn(model, x, y)")
        t = self.t
        self.accum_steps = int(t.accum_steps)
        self.steps_per_epoch = len(train_loader) // self.accum_steps
        if self.steps_per_epoch == 0:
            raise ValueError(f"{len(train_loader)} train batches per rank cannot fill one optimiser step of "
                             f"train.accum_steps={self.accum_steps}; lower data.batch_size or accum_steps")
        # samples per optimiser step: the official video rule counts every repeated-augmentation copy
        self.global_batch = cfg.data.batch_size * int(cfg.data.get("num_sample") or 1) * info.world_size * self.accum_steps
        self.lr = scaled_lr(t, self.global_batch)
        self.lr_schedule, self.wd_schedule = build_schedules(t, self.lr, self.steps_per_epoch)

        if info.device.type == "cpu" and t.get("flush_denormal", True):
            # subnormal gradients slow every CPU op ~100x where they appear (28% of a step at init)
            from ..ops import flush_denormals

            flush_denormals(True)
        self.locked = lock_modules(model, dict(t.get("module_lr") or {}))
        groups = param_groups(model, t.weight_decay, t.get("layer_decay"), t.get("layer_decay_mode", "real"),
                              module_lr=dict(t.get("module_lr") or {}), lr=self.lr)
        optimizer = torch.optim.AdamW(groups, lr=self.lr, betas=tuple(t.betas), eps=float(t.get("eps", 1e-8)))
        self.scaler = None
        self.engine = None
        ds = t.get("deepspeed") or {}
        if ds.get("enabled"):
            import deepspeed   # optional dependency: pip install "videomamba[deepspeed]"

            self.engine, optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer,
                                                                config=deepspeed_config(cfg, info.world_size))
            self.wrapped = self.engine
            self.stepper = DeepSpeedStepper(self.engine)
        else:
            # train.find_unused_parameters: for models whose steps leave some parameters out (a video-text
            # image step skips the temporal position embedding)
            self.wrapped = (torch.nn.parallel.DistributedDataParallel(
                model, find_unused_parameters=bool(t.get("find_unused_parameters", False)))
                if info.distributed else model)
            compile_with = t.get("compile")
            if compile_with:   # true = inductor; or a backend name. The scan and conv are custom ops, so
                # the whole model compiles as one graph (our checkpoints keep the plain model's key names).
                self.wrapped = torch.compile(self.wrapped, **({} if compile_with is True else {"backend": compile_with}))
            if t.amp == "fp16":   # bf16 needs no loss scaling
                self.scaler = torch.amp.GradScaler(info.device.type)
            self.stepper = TorchStepper(self.wrapped, optimizer, self.accum_steps, t.get("clip_grad"), self.scaler)
        self.optimizer = optimizer
        # After wrapping: DDP / DeepSpeed have broadcast rank 0's weights, so every rank's EMA starts equal.
        self.ema = ModelEma(model, t.ema_decay) if t.get("ema_decay") else None
        self.start_epoch, self.step, self.best = 0, 0, None

    # ------------------------------------------------------------------ checkpoints
    def _save(self, epoch: int, is_best: bool):
        """``checkpoint-latest.pth`` (and ``-best``), atomically. Every rank's RNG state goes in so that a
        resumed multi-process run continues bit for bit. With DeepSpeed the (partitioned) optimiser state
        goes to ``deepspeed/epoch{N}`` first; the .pth names that tag, so it only ever points to a
        complete DeepSpeed checkpoint, and older tags are removed afterwards."""
        rngs = all_gather_object(capture_rng())
        extra = {**self._model_config(), **self.checkpoint_meta, "rng_per_rank": rngs, "world_size": self.info.world_size,
                 "steps_per_epoch": self.steps_per_epoch}
        optimizer, weights = self.optimizer, self.model
        if self.engine is not None:
            tag = f"epoch{epoch}"
            self.engine.save_checkpoint(str(self.out / DEEPSPEED_DIR), tag=tag, save_latest=False)
            extra["deepspeed_tag"], optimizer = tag, None
            barrier()
            if self.info.is_main and self.t.amp != "none":   # the module holds bf16/fp16 copies: save the fp32 master
                from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

                fp32 = get_fp32_state_dict_from_zero_checkpoint(str(self.out / DEEPSPEED_DIR), tag=tag)
                weights = {**self.model.state_dict(), **fp32}   # buffers (if any) from the module
        if self.info.is_main:
            save_training_state(self.out / LATEST, weights, optimizer, self.scaler, self.ema, epoch, self.step,
                                self.best, extra)
            if is_best:
                atomic_write(self.out / BEST, lambda tmp: shutil.copyfile(self.out / LATEST, tmp))
            every = self.t.get("save_every")
            if every and (epoch + 1) % every == 0:   # the official checkpoint_e{N} snapshots
                atomic_write(self.out / f"checkpoint-{epoch}.pth", lambda tmp: shutil.copyfile(self.out / LATEST, tmp))
            if self.engine is not None:
                self._prune_deepspeed_tags(keep={f"epoch{epoch}", self._best_tag()})
        barrier()

    def _model_config(self) -> dict:
        """``{"model_config": ...}``: the model's own config (``model.config``), which rebuilds it from the
        checkpoint alone; every task's checkpoints carry it."""
        config = getattr(self.model, "config", None)
        return {"model_config": config.to_dict()} if hasattr(config, "to_dict") else {}

    def _best_tag(self) -> str | None:
        if not (self.out / BEST).is_file():
            return None
        return torch.load(self.out / BEST, map_location="cpu", weights_only=True)["extra"].get("deepspeed_tag")

    def _prune_deepspeed_tags(self, keep: set):
        root = self.out / DEEPSPEED_DIR
        for d in root.glob("epoch*") if root.is_dir() else []:
            if d.name not in keep:
                shutil.rmtree(d, ignore_errors=True)

    def resume(self) -> bool:
        """Continue from ``checkpoint-latest.pth`` in the output dir if there is one."""
        path = broadcast_object(find_resume(self.out) if self.info.is_main else None)
        if path is None:
            return False
        meta = load_training_state(path, self.model, None if self.engine else self.optimizer, self.scaler,
                                   self.ema, restore_random=False)
        extra = meta.get("extra") or {}
        if self.engine is not None:
            tag = extra.get("deepspeed_tag")
            if tag is None:
                raise RuntimeError(f"{path}: written without DeepSpeed, cannot resume a DeepSpeed run from it")
            self.engine.load_checkpoint(str(self.out / DEEPSPEED_DIR), tag=tag)
        rngs = extra.get("rng_per_rank")
        if rngs and len(rngs) == self.info.world_size:
            restore_rng(rngs[self.info.rank])
        else:
            warnings.warn(f"{path}: saved with world size {extra.get('world_size')}, now "
                          f"{self.info.world_size}: random state re-seeded, the run continues but not bit for bit")
            torch.manual_seed(self.cfg.seed + self.info.rank + 1000 * (meta["epoch"] + 1))
        self.start_epoch, self.step, self.best = meta["epoch"] + 1, meta["step"], meta["best_metric"]
        saved_spe = extra.get("steps_per_epoch", self.steps_per_epoch)
        if saved_spe != self.steps_per_epoch:   # other GPU count / batch / accumulation: keep the schedule by epoch
            warnings.warn(f"{path}: {saved_spe} steps per epoch when saved, {self.steps_per_epoch} now; the schedule "
                          f"continues at epoch {self.start_epoch}")
            self.step = self.start_epoch * self.steps_per_epoch
        if self.info.is_main:
            _truncate_jsonl(self.out / "log.txt", lambda r: r.get("epoch", -1) < self.start_epoch)
            _truncate_jsonl(self.out / STEPS_LOG, lambda r: r.get("step", -1) < self.step)
            print(f"resumed from {path}: epoch {self.start_epoch}, step {self.step}", flush=True)
        return True

    # ------------------------------------------------------------------ loop
    def evaluate(self, model=None) -> dict:
        """The task's evaluation of ``model`` (default: the trained model) on the validation loader."""
        return self.evaluate_fn(model if model is not None else self.wrapped, self.val_loader, self.info.device,
                                self.t.amp, progress=self.progress)

    def evaluate_only(self, weights: str | None = None) -> dict:
        """Evaluate without training (``--eval``): load ``weights`` strictly first when given (any file
        :func:`videomamba.load_checkpoint` reads), else evaluate the model as it is. Returns the task's dict."""
        if self.val_loader is None:
            raise ValueError("TrainingRun.evaluate_only: no validation loader to evaluate on")
        if weights is not None:
            from ..checkpoint import load_checkpoint

            load_checkpoint(self.model, weights, strict=True, verbose=False)
        self.last_eval = self.evaluate(self.model)
        return self.last_eval

    def write_results(self, results: dict, name: str = "results.json") -> Path | None:
        """``<output_dir>/<name>`` (JSON, atomically) on the main rank; returns its path there, else None."""
        if not self.info.is_main:
            return None
        path = self.out / name
        text = json.dumps(results, indent=2, default=_json_default) + "\n"
        atomic_write(path, lambda tmp: Path(tmp).write_text(text))
        return path

    def fit(self) -> dict:
        t = self.t
        self.resume()
        logger = RunLogger(self.out)
        if self.info.is_main and self.start_epoch >= t.epochs:
            print(f"{self.out}: all {t.epochs} epochs are done (raise train.epochs to continue)", flush=True)
        elif self.info.is_main:
            print(f"training {t.epochs} epochs x {self.steps_per_epoch} steps, global batch {self.global_batch}, "
                  f"lr {self.lr:.3g}, {self.info.world_size} process(es) on {self.info.device}"
                  + (", DeepSpeed" if self.engine else "")
                  + (f"; {len(self.locked)} parameter tensors locked (train.module_lr 0)" if self.locked else ""),
                  flush=True)
        stats: dict = {}
        t0 = time.time()
        for epoch in range(self.start_epoch, t.epochs):
            if hasattr(self.train_sampler, "set_epoch"):
                self.train_sampler.set_epoch(epoch)
            tr = train_one_epoch(self.wrapped, self.train_loader, self.stepper, self.loss_fn, self.info.device,
                                 epoch, self.lr_schedule, self.step, self.steps_per_epoch, self.wd_schedule,
                                 accum_steps=self.accum_steps, amp=t.amp, ema=self.ema, logger=logger,
                                 progress=self.progress)
            first_step, self.step = self.step, tr.pop("step")
            step_losses = tr.pop("step_losses")
            stats = dict(tr)
            if self.val_loader is not None and ((epoch + 1) % t.get("eval_every", 1) == 0 or epoch + 1 == t.epochs):
                val = self.last_eval = self.evaluate()
                stats.update({f"val_{k}": v for k, v in val.items()
                              if k != "n" and isinstance(v, (int, float)) and not isinstance(v, bool)})
                if self.ema is not None:
                    stats[f"val_{self.metric}_ema"] = self.evaluate(self.ema)[self.metric]
            if self.epoch_stats_fn is not None:
                stats.update(self.epoch_stats_fn())
            value = stats.get(f"val_{self.metric}")
            is_best = value is not None and (self.best is None or (value > self.best if self.higher_is_better
                                                                   else value < self.best))
            if is_best:
                self.best = value
            stats[f"best_{self.metric}"] = self.best
            self._save(epoch, is_best)
            if self.info.is_main:
                with open(self.out / STEPS_LOG, "a") as f:
                    for i, loss in enumerate(step_losses):
                        f.write(json.dumps({"step": first_step + i, "epoch": epoch, "loss": loss,
                                            "lr": float(self.lr_schedule[min(first_step + i, len(self.lr_schedule) - 1)])})
                                + "\n")
            logger.epoch(epoch, stats)
        logger.close()
        if self.info.is_main and self.start_epoch < t.epochs:
            best = f"best val {self.metric} {self.best:.4g}" if self.best is not None else "no validation"
            print(f"done: {best} in {time.time() - t0:.0f} s; checkpoints in {self.out}", flush=True)
            plot_curves(self.out, STEPS_LOG, self.metric)
        return {**stats, "eval": self.last_eval}


def _truncate_jsonl(path: Path, keep: Callable[[dict], bool]):
    """Drop records a resumed run will write again (they came after the checkpoint it resumes from)."""
    if not path.is_file():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    kept = [ln for ln in lines if keep(json.loads(ln))]
    if len(kept) != len(lines):
        atomic_write(path, lambda tmp: Path(tmp).write_text("".join(ln + "\n" for ln in kept)))


def _json_default(value):
    """numpy scalars and arrays, paths and the like in results: as plain JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
