"""One epoch of classification training and a top-1/top-5 evaluation, shared by the task folders."""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .dist import all_reduce_sum, is_main
from .guards import check_finite_loss


def autocast(device: torch.device, amp: str):
    """``amp``: 'none', 'bf16' or 'fp16'."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def set_lr(optimizer, lr: float, wd: float | None = None):
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
        if wd is not None and g["weight_decay"] > 0:
            g["weight_decay"] = wd


def train_one_epoch(model, loader, optimizer, criterion, device, epoch: int, lr_schedule, start_step: int,
                    wd_schedule=None, accum_steps: int = 1, clip_grad: float | None = None, scaler=None,
                    amp: str = "none", mixup_fn=None, ema=None, logger=None, progress: bool = True) -> dict:
    """Train for one pass over ``loader``. ``lr_schedule[i]`` is the lr of optimiser step ``i``."""
    model.train()
    total, count, step = 0.0, 0, start_step
    bar = tqdm(loader, desc=f"epoch {epoch}", disable=not (progress and is_main()), leave=False, dynamic_ncols=True)
    optimizer.zero_grad(set_to_none=True)
    for i, (x, y) in enumerate(bar):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if i % accum_steps == 0:
            set_lr(optimizer, float(lr_schedule[min(step, len(lr_schedule) - 1)]),
                   None if wd_schedule is None else float(wd_schedule[min(step, len(wd_schedule) - 1)]))
        if mixup_fn is not None:
            x, y = mixup_fn(x, y)
        with autocast(device, amp):
            loss = criterion(model(x), y)
        check_finite_loss(loss, step, epoch, model, optimizer.param_groups[-1]["lr"])
        scaled = loss / accum_steps
        (scaler.scale(scaled) if scaler is not None else scaled).backward()
        if (i + 1) % accum_steps == 0 or i + 1 == len(loader):
            if scaler is not None:
                scaler.unscale_(optimizer)
            if clip_grad:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(model)
            step += 1
        total += loss.item() * x.shape[0]
        count += x.shape[0]
        bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{optimizer.param_groups[-1]['lr']:.2e}")
        if logger is not None and i % 20 == 0:
            logger.scalars({"loss": loss.item(), "lr": optimizer.param_groups[-1]["lr"]}, step, prefix="train/")
    sums = all_reduce_sum(torch.tensor([total, count], dtype=torch.float64, device=device))
    return {"train_loss": (sums[0] / max(sums[1], 1)).item(), "lr": optimizer.param_groups[-1]["lr"], "step": step}


@torch.no_grad()
def evaluate(model, loader, device, amp: str = "none", progress: bool = True) -> dict:
    """Top-1 / top-5 accuracy (%) and mean cross-entropy over every sample of every rank."""
    model.eval()
    correct1 = correct5 = loss_sum = 0.0
    n = 0
    for x, y in tqdm(loader, desc="eval", disable=not (progress and is_main()), leave=False, dynamic_ncols=True):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device, amp):
            logits = model(x)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        correct1 += (top[:, 0] == y).sum().item()
        correct5 += (top == y[:, None]).any(dim=1).sum().item()
        n += y.numel()
    s = all_reduce_sum(torch.tensor([correct1, correct5, loss_sum, n], dtype=torch.float64, device=device))
    n_all = max(s[3].item(), 1)
    return {"acc1": 100 * s[0].item() / n_all, "acc5": 100 * s[1].item() / n_all, "loss": s[2].item() / n_all,
            "n": int(s[3].item())}
