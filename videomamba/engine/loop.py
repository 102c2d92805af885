"""The training loop of every task: one epoch of optimiser steps over ``(x, y)`` batches, with gradient
accumulation, the per-step lr/wd schedule, autocast, a non-finite-loss guard, EMA and logging. What a step
computes is the task's loss function; nothing here knows about classes, views or texts."""
from __future__ import annotations

import time

import torch
from tqdm import tqdm

from ..utils.dist import all_reduce_sum, show_progress
from ..utils.tensors import autocast, batch_len, to_device
from .guards import check_finite_loss


def set_lr(optimizer, lr: float, wd: float | None = None):
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
        if wd is not None and g["weight_decay"] > 0:
            g["weight_decay"] = wd


def train_one_epoch(model, loader, stepper, loss_fn, device, epoch: int, lr_schedule, start_step: int,
                    steps_per_epoch: int, wd_schedule=None, accum_steps: int = 1, amp: str = "none",
                    ema=None, logger=None, progress: bool = True) -> dict:
    """Train for ``steps_per_epoch`` optimiser steps of ``accum_steps`` micro-batches each.

    Batches are ``(x, y)``; ``x`` may be a tensor or a dict/list of tensors (a video-text batch).
    ``lr_schedule[i]`` is the lr of optimiser step ``i``; ``loss_fn(model, x, y)`` returns the loss or
    ``(loss, parts)`` with extra scalars to log; ``stepper`` does backward and step (see steppers.py).
    Returns the epoch's mean loss (over every rank), the lr, the next step and the main rank's per-step
    losses (``step_losses``) for exact-resume checks and the steps log.
    """
    model.train()
    optimizer = stepper.optimizer
    total, count, step = 0.0, 0, start_step
    parts_sum: dict[str, float] = {}
    step_losses: list[float] = []
    micro_batches = steps_per_epoch * accum_steps
    bar = tqdm(total=micro_batches, desc=f"epoch {epoch}", disable=not show_progress(progress), leave=False,
               dynamic_ncols=True)
    stepper.zero_grad()
    window, start = 0.0, time.perf_counter()
    # the scheduled lr, logged as "lr" (groups with an lr_scale -- layer decay, train.module_lr -- step at a
    # multiple of it)
    lr_now = float(lr_schedule[min(step, len(lr_schedule) - 1)])
    for i, (x, y) in enumerate(loader):
        if i >= micro_batches:   # a partial accumulation window at the end is skipped, as DeepSpeed does
            break
        x, y = to_device(x, device), to_device(y, device)
        if i % accum_steps == 0:
            lr_now = float(lr_schedule[min(step, len(lr_schedule) - 1)])
            set_lr(optimizer, lr_now,
                   None if wd_schedule is None else float(wd_schedule[min(step, len(wd_schedule) - 1)]))
        with autocast(device, amp):
            out = loss_fn(model, x, y)
        loss, parts = out if isinstance(out, tuple) else (out, {})
        check_finite_loss(loss, step, epoch, model, lr_now)
        boundary = (i + 1) % accum_steps == 0
        grad_norm = stepper.micro_step(loss, boundary)   # the pre-clip norm when clipping
        value = loss.item()
        window += value / accum_steps
        n = batch_len(x)
        total += value * n
        count += n
        for k, v in parts.items():
            parts_sum[k] = parts_sum.get(k, 0.0) + float(v) * n
        if boundary:
            if ema is not None:
                ema.update(model)
            if logger is not None:
                logger.scalars({"loss": window, "lr": lr_now,
                                **({"grad_norm": grad_norm} if grad_norm is not None else {}),
                                **{k: float(v) for k, v in parts.items()}}, step, prefix="train/")
            step_losses.append(window)
            window = 0.0
            step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{value:.4f}", lr=f"{lr_now:.2e}")
    bar.close()
    keys = sorted(parts_sum)
    sums = all_reduce_sum(torch.tensor([total, count] + [parts_sum[k] for k in keys], dtype=torch.float64,
                                       device=device))
    n = max(sums[1].item(), 1)
    seconds = time.perf_counter() - start
    stats = {"train_loss": sums[0].item() / n, **{f"train_{k}": sums[2 + j].item() / n for j, k in enumerate(keys)},
             "train_time_s": seconds, "train_samples_per_s": n / max(seconds, 1e-9)}
    return {**stats, "lr": lr_now, "step": step, "step_losses": step_losses}
