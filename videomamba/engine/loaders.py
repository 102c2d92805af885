"""Train/val data loaders for any task: the train order is a function of (seed, epoch) so resumes are
exact; repeated augmentation optional; the val set is split across ranks without duplicates."""
from __future__ import annotations

import torch

from .dist import DistInfo
from .samplers import EpochShuffleSampler, RepeatAugSampler, ShardSampler


def build_loaders(cfg, info: DistInfo, train_set, val_set):
    """Keys: data.batch_size, data.eval_batch_size (default 1.5x, as the official image code),
    data.num_workers, data.pin_memory, aug.repeated_aug (number of repeats; 0/1/null = off), seed.
    Returns ``(train_loader, val_loader, train_sampler)``; call ``train_sampler.set_epoch(e)``."""
    d = cfg.data
    repeats = int(cfg.get("aug", {}).get("repeated_aug") or 1)
    if repeats > 1:
        train_sampler = RepeatAugSampler(len(train_set), info.rank, info.world_size, cfg.seed, repeats)
    else:
        train_sampler = EpochShuffleSampler(len(train_set), info.rank, info.world_size, cfg.seed)
    val_sampler = ShardSampler(len(val_set), info.rank, info.world_size)
    common = dict(num_workers=d.get("num_workers", 0), pin_memory=bool(d.get("pin_memory", False)),
                  persistent_workers=False)
    eval_batch = d.get("eval_batch_size") or int(1.5 * d.batch_size)
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=d.batch_size, sampler=train_sampler,
                                               drop_last=True, **common)
    val_loader = torch.utils.data.DataLoader(val_set, batch_size=eval_batch, sampler=val_sampler, **common)
    return train_loader, val_loader, train_sampler
