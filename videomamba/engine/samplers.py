"""Samplers for evaluation across ranks."""
from __future__ import annotations

import torch

from ..utils.dist import get_rank, get_world_size


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


class EpochShuffleSampler(torch.utils.data.Sampler):
    """A training order that is a pure function of (seed, epoch), split across ranks like
    ``DistributedSampler`` (padded by wrapping so every rank gets the same count). Because it keeps no
    generator state, a run resumed at epoch ``e`` sees exactly the order the uninterrupted run saw."""

    def __init__(self, dataset_len: int, rank: int | None = None, world_size: int | None = None,
                 seed: int = 0, shuffle: bool = True):
        self.n = dataset_len
        self.rank = get_rank() if rank is None else rank
        self.world = get_world_size() if world_size is None else world_size
        self.seed, self.shuffle, self.epoch = seed, shuffle, 0
        self.per_rank = -(-self.n // self.world)

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self):
        order = self._order()
        total = self.per_rank * self.world
        order = (order * (-(-total // max(len(order), 1))))[:total]
        return iter(order[self.rank:total:self.world])

    def __len__(self) -> int:
        return self.per_rank


class RepeatAugSampler(EpochShuffleSampler):
    """DeiT's repeated augmentation: each image appears ``num_repeats`` times per epoch (consecutive copies
    go to different ranks, so each rank sees a different augmentation of it), and an epoch is cut to
    ``floor(n / round_to) * round_to / world`` samples per rank so its length stays that of one pass
    over the data. (Official RASampler: 3 repeats, multiple of 256.)"""

    def __init__(self, dataset_len: int, rank: int | None = None, world_size: int | None = None,
                 seed: int = 0, num_repeats: int = 3, round_to: int = 256):
        super().__init__(dataset_len, rank, world_size, seed, shuffle=True)
        if num_repeats < 1:
            raise ValueError(f"RepeatAugSampler: num_repeats must be >= 1, got {num_repeats}")
        self.num_repeats = num_repeats
        self.per_rank_repeated = -(-self.n * num_repeats // self.world)
        usable = self.n // round_to * round_to if self.n >= round_to else self.n
        self.num_selected = usable // self.world

    def __iter__(self):
        order = [i for i in self._order() for _ in range(self.num_repeats)]
        total = self.per_rank_repeated * self.world
        order = (order * (-(-total // max(len(order), 1))))[:total]
        return iter(order[self.rank:total:self.world][:self.num_selected])

    def __len__(self) -> int:
        return self.num_selected
