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
from .backends import backend_available
from .selective_scan_ref import selective_scan_ref

def _kernel_module(backend: str, device_type: str):
    """The kernel module for ``backend`` on this device, or None to fall back to the reference.

    The backend name is baked into traced / exported graphs, so a graph may later run where that
    kernel cannot (no compiler, another device): it then computes the same result with the reference.
    """
    if backend in ("cpu", "triton") and backend_available(backend, device_type):
        if backend == "cpu":
            return selective_scan_cpu
        from . import selective_scan_triton

        return selective_scan_triton
    if backend not in ("cpu", "triton"):
        raise ValueError(f"selective_scan op: unknown backend {backend!r}")
    return None


def _reference_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse):
    out, last = selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state=True,
                                   reverse=reverse)
    return out.contiguous(), last.float().contiguous()


def _reference_bwd(dout, dlast, u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse):
    inputs = [t.detach().requires_grad_(True) if t is not None else None for t in (u, delta, A, B, C, D, z, delta_bias)]
    with torch.enable_grad():
        out, last = selective_scan_ref(*inputs, delta_softplus, return_last_state=True, reverse=reverse)
        loss = (out.float() * dout.float()).sum()
        if dlast is not None:
            loss = loss + (last * dlast.float()).sum()
        present = [t for t in inputs if t is not None]
        grads = iter(torch.autograd.grad(loss, present, allow_unused=True))
    return tuple(None if t is None else (g if (g := next(grads)) is not None else torch.zeros_like(t))
                 for t in inputs)


@torch.library.custom_op("videomamba::selective_scan", mutates_args=())
def selective_scan_op(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                      z: Optional[Tensor], delta_bias: Optional[Tensor], delta_softplus: bool,
                      reverse: bool, backend: str) -> tuple[Tensor, Tensor]:
    kernel = _kernel_module(backend, u.device.type)
    if kernel is None:
        with torch.no_grad():
            return _reference_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse)
    out, last = kernel.scan_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse)
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
    kernel = _kernel_module(backend, u.device.type)
    if kernel is None:  # _backward routes around this op when the kernel is missing
        raise RuntimeError(f"selective_scan_backward: backend {backend!r} cannot run on {u.device.type} here")
    grads = kernel.scan_bwd(dout, u, delta, A, B, C, D, z, delta_bias, delta_softplus, dlast=dlast,
                            reverse=reverse)
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
    if _kernel_module(ctx.backend, u.device.type) is None:
        # Autograd works here (unlike inside an op implementation): differentiate the reference.
        grads = _reference_bwd(dout, dlast, u, delta, A, B, C, D, z, delta_bias, ctx.delta_softplus, ctx.reverse)
    else:
        grads = selective_scan_backward_op(dout.contiguous(), dlast, u, delta, A, B, C, D, z, delta_bias,
                                           ctx.delta_softplus, ctx.reverse, ctx.backend)
    present = (u, delta, A, B, C, D, z, delta_bias)
    return (*[g if t is not None else None for g, t in zip(grads, present)], None, None, None)


selective_scan_op.register_autograd(_backward, setup_context=_setup_context)


class _EagerScan(torch.autograd.Function):
    """The same kernels called straight from autograd, for eager mode: the custom-op route costs
    ~0.3 ms of dispatch per forward+backward, a sixth of the whole scan at 197 tokens. Also the route of
    an initial state (the custom ops have none)."""

    @staticmethod
    def forward(ctx, kernel, u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, initial_state):
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, initial_state)
        ctx.kernel, ctx.delta_softplus, ctx.reverse = kernel, delta_softplus, reverse
        ctx.set_materialize_grads(False)   # an unused last state gives dlast=None, not a zero tensor
        return kernel.scan_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse,
                               initial_state=initial_state)

    @staticmethod
    def backward(ctx, dout, dlast):
        u, delta, A, B, C, D, z, delta_bias, h0 = ctx.saved_tensors
        dout = torch.zeros_like(u) if dout is None else dout.contiguous()
        grads = ctx.kernel.scan_bwd(dout, u, delta, A, B, C, D, z, delta_bias, ctx.delta_softplus, dlast=dlast,
                                    reverse=ctx.reverse, initial_state=h0)
        return (None, *grads[:8], None, None, grads[8] if h0 is not None else None)


def _eager(u: Tensor) -> bool:
    """Plain eager execution: no compiler, no tracing mode (export, make_fx), no tensor subclass."""
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    return type(u) is torch.Tensor and not torch.compiler.is_compiling() and _get_current_dispatch_mode() is None


def selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus: bool, reverse: bool, backend: str,
                   initial_state: Tensor | None = None):
    """``(out, last_state)`` with the ``backend`` kernel: directly in eager mode, else as the custom op
    (one opaque node for torch.compile / torch.export). An initial state under tracing takes the reference,
    which traces as plain torch ops."""
    if _eager(u):
        kernel = _kernel_module(backend, u.device.type)
        if kernel is not None:
            return _EagerScan.apply(kernel, u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse,
                                    initial_state)
    if initial_state is not None:
        return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state=True,
                                  reverse=reverse, initial_state=initial_state)
    return selective_scan_op(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, backend)
