"""Train/val data loaders for any task: the train order is a function of (seed, epoch) so resumes are
exact; repeated augmentation optional; evaluation sets are split across ranks without duplicates."""
from __future__ import annotations

import torch

from ..utils.dist import DistInfo
from .samplers import EpochShuffleSampler, RepeatAugSampler, ShardSampler


def _common(cfg) -> dict:
    d = cfg.data
    return dict(num_workers=d.get("num_workers", 0), pin_memory=bool(d.get("pin_memory", False)),
                persistent_workers=False)


def build_eval_loader(cfg, info: DistInfo, dataset, collate_fn=None) -> torch.utils.data.DataLoader:
    """Rank ``r`` of ``W`` evaluates items ``r, r+W, ...``; batch ``data.eval_batch_size`` (default 1.5x
    ``data.batch_size``, as the official code)."""
    d = cfg.data
    batch = d.get("eval_batch_size") or int(1.5 * d.batch_size)
    return torch.utils.data.DataLoader(dataset, batch_size=batch, sampler=ShardSampler(len(dataset), info.rank,
                                                                                      info.world_size),
                                       collate_fn=collate_fn, **_common(cfg))


def build_loaders(cfg, info: DistInfo, train_set, val_set, train_collate=None, val_collate=None):
    """Keys: data.batch_size, data.eval_batch_size, data.num_workers, data.pin_memory, aug.repeated_aug
    (number of repeats; 0/1/null = off), seed. Returns ``(train_loader, val_loader, train_sampler)``;
    call ``train_sampler.set_epoch(e)``. ``val_set=None`` gives ``val_loader=None`` (no validation)."""
    d = cfg.data
    repeats = int(cfg.get("aug", {}).get("repeated_aug") or 1)
    if repeats > 1:
        train_sampler = RepeatAugSampler(len(train_set), info.rank, info.world_size, cfg.seed, repeats)
    else:
        train_sampler = EpochShuffleSampler(len(train_set), info.rank, info.world_size, cfg.seed)
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=d.batch_size, sampler=train_sampler,
                                               drop_last=True, collate_fn=train_collate, **_common(cfg))
    val_loader = None if val_set is None else build_eval_loader(cfg, info, val_set, val_collate)
    return train_loader, val_loader, train_sampler
