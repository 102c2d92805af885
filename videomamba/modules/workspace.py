"""Named scratch buffers that a model reuses across its blocks and across calls.

Without gradients a block's mixer needs a few tensors as long as the sequence (the in_proj halves, the scan
outputs, the out_proj result). Allocated afresh per block, they are freed and allocated again 24 times per
forward; glibc's allocator serves blocks of a few MB from its heap and keeps the freed ones, so the process
grows by far more than what is alive (measured, VideoMamba-Ti at 64 frames in 4096-token chunks: the peak
grew by 113 MB, against 70 MB with a workspace, and kept growing block after block). A workspace hands
out views of buffers it allocated once, grown when a larger request comes, so the allocator sees no churn.
"""
from __future__ import annotations

import math

import torch


class Workspace:
    """``take(name, shape, dtype, device)`` returns a contiguous view of the buffer ``name`` (allocated or grown
    on demand, never shrunk); two live views must have different names. ``clear()`` frees everything."""

    def __init__(self):
        self._buffers: dict[str, torch.Tensor] = {}
        # name -> (the last request, its view): a block loop asks for the same views block after block, and
        # building a view costs a few microseconds (a sizeable part of an image block's Python time)
        self._last: dict[str, tuple] = {}

    def take(self, name: str, shape, dtype: torch.dtype, device) -> torch.Tensor:
        request = (shape, dtype, device)
        last = self._last.get(name)
        if last is not None and last[0] == request and not last[1].requires_grad:   # (no autograd history kept)
            return last[1]
        n = math.prod(shape)
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < n or buf.dtype != dtype or buf.device != torch.device(device):
            del buf
            self._last.pop(name, None)
            self._buffers.pop(name, None)   # the old buffer goes before the new one is allocated
            buf = self._buffers[name] = torch.empty(n, dtype=dtype, device=device)
        view = buf[:n].view(shape)
        self._last[name] = (request, view)
        return view

    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self._buffers.values())

    def clear(self):
        self._last.clear()
        self._buffers.clear()

    def __repr__(self):
        return f"Workspace({', '.join(sorted(self._buffers))}; {self.nbytes() / 2**20:.1f} MB)"
