"""Several ranks in one process, for the tests of code that exchanges data between ranks (the multi-view
merge, the retrieval re-rank): one thread per rank, and the collectives the code calls
(``all_gather_object``, ``all_reduce_sum``, ``get_rank``, ``get_world_size``) replaced in its module by
exchanges between those threads. The collectives behave as torch.distributed's do: every rank calls them in
the same order and gets every rank's object (gather) or the element-wise sum (reduce)."""
from __future__ import annotations

import threading

import torch


class FakeRanks:
    def __init__(self, world: int):
        self.world = world
        self._barrier = threading.Barrier(world, timeout=60)
        self._local = threading.local()
        self._slots: dict[int, list] = {}
        self._lock = threading.Lock()

    # the collectives, as the code under test calls them
    def get_rank(self) -> int:
        return self._local.rank

    def get_world_size(self) -> int:
        return self.world

    def _exchange(self, value) -> list:
        call = self._local.calls
        self._local.calls += 1
        with self._lock:
            self._slots.setdefault(call, [None] * self.world)[self._local.rank] = value
        self._barrier.wait()
        return list(self._slots[call])

    def all_gather_object(self, obj) -> list:
        return self._exchange(obj)

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        return torch.stack(self._exchange(t.detach().clone())).sum(0)

    def patch(self, monkeypatch, module):
        """Route ``module``'s collectives (those it imported by name) through these ranks."""
        for name in ("all_gather_object", "all_reduce_sum", "get_rank", "get_world_size"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, getattr(self, name))

    def run(self, fn) -> list:
        """``fn(rank)`` on every rank at once; the list of results in rank order (a failure on any rank is
        raised here)."""
        results, errors = [None] * self.world, [None] * self.world

        def body(rank):
            self._local.rank, self._local.calls = rank, 0
            try:
                results[rank] = fn(rank)
            except BaseException as err:   # noqa: BLE001 - re-raised in the caller's thread
                errors[rank] = err
                self._barrier.abort()

        threads = [threading.Thread(target=body, args=(r,)) for r in range(self.world)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for err in errors:
            if err is not None and not isinstance(err, threading.BrokenBarrierError):
                raise err
        for err in errors:
            if err is not None:
                raise err
        return results
