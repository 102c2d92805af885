"""The selective scan as a torch custom op (``torch.ops.videomamba.selective_scan``).

Registered with :mod:`torch.library`: a fake (meta) implementation for tracing and an autograd
formula whose backward is a second custom op, so ``torch.compile`` and ``torch.export`` see one opaque
node per scan instead of failing on ctypes / Triton calls. The ``backend`` argument picks the
kernel ('cpu' native kernel, 'triton' GPU kernel).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import selective_scan_cpu

_EMPTY = "absent"   # marker shape for optional outputs: a 0-element tensor


def _kernel_module(backend: str):
    if backend == "cpu":
        return selective_scan_cpu
    if backend == "triton":
        from . import selective_scan_triton

        return selective_scan_triton
    raise ValueError(f"selective_scan op: unknown backend {backend!r}")


@torch.library.custom_op("videomamba::selective_scan", mutates_args=())
def selective_scan_op(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                      z: Optional[Tensor], delta_bias: Optional[Tensor], delta_softplus: bool,
                      reverse: bool, backend: str) -> tuple[Tensor, Tensor]:
    out, last = _kernel_module(backend).scan_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse)
    return out, last


@selective_scan_op.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, backend):
    # Kernels return contiguous tensors whatever the input strides; the fake must say the same.
    return u.new_empty(u.shape), u.new_empty((u.shape[0], u.shape[1], A.shape[1]), dtype=torch.float32)


@torch.library.custom_op("videomamba::selective_scan_backward", mutates_args=())
def selective_scan_backward_op(dout: Tensor, dlast: Optional[Tensor], u: Tensor, delta: Tensor, A: Tensor,
                               B: Tensor, C: Tensor, D: Optional[Tensor], z: Optional[Tensor],
                               delta_bias: Optional[Tensor], delta_softplus: bool, reverse: bool,
                               backend: str) -> list[Tensor]:
    grads = _kernel_module(backend).scan_bwd(dout, u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                             dlast=dlast, reverse=reverse)
    # custom ops cannot return None: absent inputs get a 0-element placeholder.
    return [g.contiguous() if g is not None else u.new_empty(0) for g in grads]


@selective_scan_backward_op.register_fake
def _(dout, dlast, u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, backend):
    return [t.new_empty(t.shape) if t is not None else u.new_empty(0)
            for t in (u, delta, A, B, C, D, z, delta_bias)]


def _setup_context(ctx, inputs, output):
    u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, backend = inputs
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias)
    ctx.delta_softplus, ctx.reverse, ctx.backend = delta_softplus, reverse, backend


def _backward(ctx, dout, dlast):
    u, delta, A, B, C, D, z, delta_bias = ctx.saved_tensors
    if dout is None:
        dout = torch.zeros_like(u)
    grads = selective_scan_backward_op(dout.contiguous(), dlast, u, delta, A, B, C, D, z, delta_bias,
                                       ctx.delta_softplus, ctx.reverse, ctx.backend)
    present = (u, delta, A, B, C, D, z, delta_bias)
    return (*[g if t is not None else None for g, t in zip(grads, present)], None, None, None)


selective_scan_op.register_autograd(_backward, setup_context=_setup_context)
