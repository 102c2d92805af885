"""Top-1 / top-5 evaluation of a classifier over every sample of every rank (the per-epoch validation of
image and video classification)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ...utils.dist import all_reduce_sum, show_progress
from ...utils.tensors import autocast


@torch.no_grad()
def evaluate(model, loader, device, amp: str = "none", progress: bool = True) -> dict:
    """Top-1 / top-5 accuracy (%) and mean cross-entropy over every sample of every rank."""
    model.eval()
    correct1 = correct5 = loss_sum = 0.0
    n = 0
    for x, y in tqdm(loader, desc="eval", disable=not show_progress(progress), leave=False, dynamic_ncols=True):
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
