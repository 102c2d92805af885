"""Multi-view video evaluation: predict every (video, temporal view, spatial crop), merge the views of
each video across ranks, report top-1/top-5 (classification) or MSE (regression).

The merge follows the official protocol with its key fixed (design decision D9): each view's logits are
soft-maxed, views are de-duplicated by the integer key ``(video, temporal view, crop)`` (keeping the
first occurrence in rank order), and a video's prediction is the mean over its views. Regression
averages the raw predictions. Only keys are exchanged between ranks, then one all-reduce of per-video
sums, so memory stays ``num_videos x num_classes`` whatever the number of views.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ...utils.tensors import autocast
from ...utils.dist import all_gather_object, all_reduce_sum, get_rank, show_progress


@dataclass
class ViewPredictions:
    """One rank's predictions: ``keys (N, 3)``, ``scores (N, C)`` (softmax probabilities, or raw values
    for regression), and the views that could not be read."""
    keys: torch.Tensor
    scores: torch.Tensor
    loss_sum: float = 0.0
    skipped: list = field(default_factory=list)   # [(key tuple, error)]


@torch.no_grad()
def predict_views(model, loader, device, amp: str = "none", regression: bool = False,
                  progress: bool = True) -> ViewPredictions:
    """Run ``model`` over a loader of :func:`videomamba.data.video_dataset.collate_eval` batches."""
    model.eval()
    keys, scores, skipped, loss_sum = [], [], [], 0.0
    for x, labels, k, bad in tqdm(loader, desc="eval", disable=not show_progress(progress), leave=False,
                                  dynamic_ncols=True):
        skipped += bad
        if len(k) == 0:
            continue
        with autocast(device, amp):
            out = model(x.to(device, non_blocking=True))
        out = out.float().cpu()
        if regression:
            pred = out[:, 0]
            loss_sum += F.mse_loss(pred, labels.float(), reduction="sum").item()
            scores.append(pred[:, None])
        else:
            loss_sum += F.cross_entropy(out, labels.long(), reduction="sum").item()
            scores.append(out.softmax(-1))
        keys.append(k)
    if not keys:
        return ViewPredictions(torch.empty(0, 3, dtype=torch.long), torch.empty(0, 0), loss_sum, skipped)
    return ViewPredictions(torch.cat(keys), torch.cat(scores), loss_sum, skipped)


def first_occurrences(keys_per_rank: list[torch.Tensor]) -> list[torch.Tensor]:
    """For each rank, a boolean mask of its rows whose key was not seen before (earlier ranks first,
    then earlier rows)."""
    seen: set[tuple[int, int, int]] = set()
    masks = []
    for keys in keys_per_rank:
        mask = torch.zeros(len(keys), dtype=torch.bool)
        for i, key in enumerate(map(tuple, keys.tolist())):
            if key not in seen:
                seen.add(key)
                mask[i] = True
        masks.append(mask)
    return masks


def merge_views(preds: ViewPredictions, num_videos: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-video mean score over de-duplicated views, summed over every rank: ``(num_videos, C)`` means and
    ``(num_videos,)`` view counts (0 for a video with no readable view)."""
    keys_all = all_gather_object(preds.keys)
    mask = first_occurrences(keys_all)[get_rank()]
    width = max((int(s) for s in all_gather_object(preds.scores.shape[1] if len(preds.keys) else 0)), default=0)
    sums = torch.zeros(num_videos, width + 1, dtype=torch.float64)   # the last column counts views
    if mask.any():
        video = preds.keys[mask, 0]
        sums.index_add_(0, video, torch.cat((preds.scores[mask].double(),
                                             torch.ones(int(mask.sum()), 1, dtype=torch.float64)), 1))
    sums = all_reduce_sum(sums.to(device) if device is not None else sums).cpu()
    counts = sums[:, -1]
    return sums[:, :-1] / counts.clamp(min=1)[:, None], counts


def evaluate_multiview(model, loader, device, amp: str = "none", progress: bool = True, regression: bool = False,
                       labels=None, num_videos: int | None = None) -> dict:
    """Multi-view metrics over every rank. ``labels``: per-video labels (default: the loader's dataset
    records). Returns ``acc1``/``acc5`` (%), or ``mse`` for regression, plus ``loss`` (mean per view),
    ``num_videos`` (videos with at least one readable view), ``num_views`` (views merged), ``skipped``
    (videos with an unreadable view: ``[{"video", "path", "error"}]``) and ``pred`` (per-video argmax or
    value, -1/NaN where skipped) for confusion matrices."""
    ds = loader.dataset   # a VideoClipDataset: its records give the labels and the paths of skipped videos
    if labels is None:
        labels = [r.label for r in ds.records]
    num_videos = len(labels) if num_videos is None else num_videos
    preds = predict_views(model, loader, device, amp, regression, progress)
    reduce_on = device if device is not None and device.type != "cpu" else None   # NCCL reduces GPU tensors
    probs, counts = merge_views(preds, num_videos, reduce_on)
    stats = all_reduce_sum(torch.tensor([preds.loss_sum, len(preds.keys)], dtype=torch.float64,
                                        device=reduce_on)).cpu()
    skipped = {}
    for rank_skipped in all_gather_object(preds.skipped):
        for key, error in rank_skipped:
            skipped.setdefault(int(key[0]), error)
    have = counts > 0
    target = torch.as_tensor(labels)
    out = {"num_videos": int(have.sum()), "num_views": int(counts.sum()), "loss": stats[0].item() / max(stats[1].item(), 1),
           "skipped": [{"video": v, "path": ds.records[v].path, "error": e} for v, e in sorted(skipped.items())]}
    if regression:
        value = probs[:, 0]
        err = (value[have] - target[have].double()) ** 2
        out["mse"] = err.mean().item() if have.any() else float("nan")
        out["pred"] = torch.where(have, value, torch.full_like(value, float("nan"))).tolist()
        return out
    k = min(5, probs.shape[1])
    top = probs[have].topk(k, dim=1).indices
    y = target[have].long()
    n = max(int(have.sum()), 1)
    out["acc1"] = 100.0 * (top[:, 0] == y).sum().item() / n
    out["acc5"] = 100.0 * (top == y[:, None]).any(1).sum().item() / n
    pred = torch.full((num_videos,), -1, dtype=torch.long)
    pred[have] = top[:, 0]
    out["pred"] = pred.tolist()
    return out


def confusion_matrix(labels, preds, num_classes: int) -> np.ndarray:
    """``(num_classes, num_classes)`` counts, rows = true class; predictions of -1 (skipped) are left out."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    for y, p in zip(labels, preds):
        if p >= 0:
            cm[int(y), int(p)] += 1
    return cm
