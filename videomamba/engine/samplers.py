"""Samplers for evaluation across ranks."""
from __future__ import annotations

import torch

from .dist import get_rank, get_world_size


class ShardSampler(torch.utils.data.Sampler):
    """Every sample exactly once across ranks (rank r takes r, r+W, r+2W, ...), no padding, so metrics
    summed over ranks equal a single-process evaluation. (``DistributedSampler`` pads with duplicates.)"""

    def __init__(self, dataset_len: int, rank: int | None = None, world_size: int | None = None):
        self.n = dataset_len
        self.rank = get_rank() if rank is None else rank
        self.world = get_world_size() if world_size is None else world_size

    def __iter__(self):
        return iter(range(self.rank, self.n, self.world))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world))
