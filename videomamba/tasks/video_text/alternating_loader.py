"""One training loader over several (e.g. one per media type: videos, images), each step drawing a whole batch
from one of them (the official UMT ``MetaLoader``). Every rank must take the same loader at the same step (a
DDP step gathers features across ranks), so the order is drawn on rank 0 and broadcast. It is a function of
(seed, epoch) only, so a resumed run replays the same order.
"""
from __future__ import annotations

import torch

from ...utils.dist import broadcast_object


class AlternatingLoader:
    """``loaders``: name -> DataLoader (with an epoch-aware sampler). An epoch yields every batch of every
    loader once, in a random interleaving; the batches are ``(x, y)`` as the loader gives them. Use it as
    both the train loader and the sampler of :class:`~videomamba.engine.TrainingRun` (``set_epoch``)."""

    def __init__(self, loaders: dict, seed: int = 0):
        if not loaders:
            raise ValueError("AlternatingLoader needs at least one loader")
        self.loaders, self.seed, self.epoch = dict(loaders), seed, 0
        self.last_order: list[str] = []

    def __len__(self) -> int:
        return sum(len(dl) for dl in self.loaders.values())

    def set_epoch(self, epoch: int):
        self.epoch = epoch
        for dl in self.loaders.values():
            if hasattr(dl.sampler, "set_epoch"):
                dl.sampler.set_epoch(epoch)

    def order(self) -> list[str]:
        """The loader name of each step of this epoch (rank 0's draw)."""
        names = [name for name, dl in self.loaders.items() for _ in range(len(dl))]
        g = torch.Generator().manual_seed(self.seed + 7 * self.epoch)
        drawn = [names[i] for i in torch.randperm(len(names), generator=g).tolist()]
        return broadcast_object(drawn)

    def __iter__(self):
        self.last_order = self.order()
        iters = {name: iter(dl) for name, dl in self.loaders.items()}
        for name in self.last_order:
            yield next(iters[name])


__all__ = ["AlternatingLoader"]
