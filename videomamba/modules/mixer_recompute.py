"""Norm + bidirectional mixer as one autograd function that keeps only the block's input for backward.

Plain autograd keeps, per block, the norm's intermediates and every ``(b, d_inner, L)`` tensor of the mixer
(in_proj output, conv outputs, deltas, B/C, the scan inputs and outputs): about 16x the residual stream. This
function saves the residual-stream tensor ``r`` it normalises (which the model keeps anyway) and the
parameters; its backward

1. recomputes ``norm(r)``, in_proj, both convs, x_proj and dt_proj under autograd (cheap next to the scan),
2. runs each direction's scan backward kernel, which recomputes the forward recurrence anyway and returns the
   scan output on the way, so the forward scan is not run again,
3. gets out_proj's gradients from that output and sends the scan gradients back through the recomputed graph.

It is mamba-ssm's fused inner function with the highest checkpoint level, extended to the norm, and runs the
same kernels as the plain path (CPU or Triton), so forward outputs are identical and gradients equal up to
float rounding. Used in eager training only; under torch.compile / export the plain path is traced.
"""
from __future__ import annotations

import torch

from ..ops import selective_scan_ref
from ..ops.scan_op import _eager, _kernel_module
from ..ops.selective_scan import resolve_backend
from .mixer_math import (DirectionParams, _weight_matmul, direction_inputs, gated_scan_sum, project_in, project_out,
                      scan_backend_for)

RECOMPUTE_MODES = ("none", "block")


def _norm(norm, r, weight, bias, dtype):
    """``norm(r)`` with explicit parameter tensors (the recompute differentiates with respect to them)."""
    from ..ops import add_norm
    from ..ops.norm import RMSNorm

    return add_norm(r, weight, bias, residual=None, eps=norm.eps, prenorm=False,
                    is_rms_norm=isinstance(norm, RMSNorm)).to(dtype)


def _params(block):
    m = block.mixer
    return [block.norm.weight, block.norm.bias, m.in_proj.weight, m.in_proj.bias, m.out_proj.weight,
            m.out_proj.bias, *m.direction_params(False), *m.direction_params(True)]


class _RecomputedMixer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, block, r, dtype, *params):
        ctx.block, ctx.dtype = block, dtype
        ctx.autocast = [(dev, torch.is_autocast_enabled(dev), torch.get_autocast_dtype(dev))
                        for dev in ("cpu", "cuda")]
        ctx.save_for_backward(r, *params)
        norm_w, norm_b, in_w, in_b, out_w, out_b = params[:6]
        fwd, bwd = DirectionParams(*params[6:13]), DirectionParams(*params[13:20])
        m = block.mixer
        h = _norm(block.norm, r, norm_w, norm_b, dtype)
        x, z = project_in(h, in_w, in_b)
        del h
        y = gated_scan_sum(x, z, (fwd, bwd), m.dt_rank, m.d_state, m.divide_output)   # (no grad in here)
        return project_out(y, out_w, out_b)

    @staticmethod
    def backward(ctx, dout):
        r, *params = ctx.saved_tensors
        block, m = ctx.block, ctx.block.mixer
        leaves = [p.detach().requires_grad_(p.requires_grad) if p is not None else None for p in params]
        rr = r.detach().requires_grad_(ctx.needs_input_grad[1])
        norm_w, norm_b, in_w, in_b, out_w, out_b = leaves[:6]
        dirs = (DirectionParams(*leaves[6:13]), DirectionParams(*leaves[13:20]))
        with torch.enable_grad(), _autocast(ctx.autocast):
            h = _norm(block.norm, rr, norm_w, norm_b, ctx.dtype)
            x, z = project_in(h, in_w, in_b)
            recomputed = [direction_inputs(x, p, m.dt_rank, m.d_state, rev) for rev, p in zip((False, True), dirs)]
        # Gradient reaching the gated scan outputs: out = y @ W_out^T (+ b).
        dout = dout.contiguous()
        dy = _weight_matmul(out_w.to(dout.dtype).t(), dout.transpose(1, 2))   # (b, Di, L), contiguous
        if m.divide_output:
            dy = dy / 2
        outputs, grads = [z], [None]
        y = None
        for rev, p, (xc, dt, B, C) in zip((False, True), dirs, recomputed):
            with torch.enable_grad():
                A = -torch.exp(p.A_log.to(torch.float64 if p.A_log.dtype == torch.float64 else torch.float32))
            du, ddelta, dA, dB, dC, dD, dz, dbias, yd = _scan_backward(xc, dt, A, B, C, p, z, dy, rev)
            y = yd if y is None else y.add_(yd)
            grads[0] = dz if grads[0] is None else grads[0].add_(dz)
            outputs += [xc, dt, A, B, C]
            grads += [du, ddelta, dA, dB, dC]
            _accumulate(p.D, dD)
            _accumulate(p.dt_proj_bias, dbias)
            del du, ddelta, dA, dB, dC, dz, yd
        if m.divide_output:
            y = y / 2
        # out_proj: dW = dout^T y, db = sum dout.
        if out_w.requires_grad:   # (D, Di) = sum over batch and positions of dout^T y^T, as one matrix product
            y_t = y.to(dout.dtype).transpose(1, 2).reshape(-1, y.shape[1])             # (b*L, Di)
            _accumulate(out_w, dout.reshape(-1, dout.shape[-1]).t() @ y_t)
            del y_t
        if out_b is not None and out_b.requires_grad:
            _accumulate(out_b, dout.sum((0, 1)))
        del y, dy
        wanted = [t for t in [rr, *leaves] if t is not None and t.requires_grad]
        found = torch.autograd.grad(outputs, wanted, grads, allow_unused=True)
        for t, g in zip(wanted, found):
            if g is not None:
                _accumulate(t, g)
        result = [None if t is None else t.grad for t in leaves]
        return (None, rr.grad if ctx.needs_input_grad[1] else None, None, *result)


def _accumulate(t, g):
    if t is None or not t.requires_grad or g is None:
        return
    g = g.to(t.dtype).reshape(t.shape)
    t.grad = g if t.grad is None else t.grad + g


class _autocast:
    """Re-enter the autocast state the forward ran under (backward runs outside it)."""

    def __init__(self, states):
        self.ctxs = [torch.autocast(dev, dtype=dt, enabled=on) for dev, on, dt in states if on]

    def __enter__(self):
        for c in self.ctxs:
            c.__enter__()

    def __exit__(self, *exc):
        for c in reversed(self.ctxs):
            c.__exit__(*exc)


def _scan_backward(xc, dt, A, B, C, p, z, dy, reverse):
    """Gradients of one direction's scan and its (gated) output: from the kernel's backward, or for the
    reference backend (e.g. fp64) by differentiating the reference."""
    backend = resolve_backend(None, xc, A, B, C)
    kernel = _kernel_module(backend, xc.device.type) if backend in ("cpu", "triton") else None
    f = A.dtype
    args = [t.detach() for t in (xc, dt, A, B, C)] + [p.D.detach().to(f), z.detach(), p.dt_proj_bias.detach().to(f)]
    if kernel is not None:
        return kernel.scan_bwd(dy, *args, True, reverse=reverse, return_out=True)
    leaves = [t.requires_grad_(True) for t in args]
    with torch.enable_grad():
        out = selective_scan_ref(*leaves, delta_softplus=True, reverse=reverse)
        grads = torch.autograd.grad(out, leaves, dy)
    return (*grads, out.detach())


def recompute_applies(block, r: torch.Tensor) -> bool:
    """The fused function runs in eager training (any scan backend but mamba_ssm)."""
    if (getattr(block, "recompute", "none") != "block" or not torch.is_grad_enabled() or not _eager(r)
            or block.use_checkpoint     # an explicit torch checkpoint of the mixer takes precedence
            or _hooked(block.mixer) or _hooked(block.norm)):   # hooks on them must fire: the plain path
        return False
    # mamba-ssm's kernel has no output-emitting backward
    return scan_backend_for(r, block.mixer.A_log) != "mamba_ssm"


def _hooked(m) -> bool:
    from torch.nn.modules import module as nn_module

    return bool(m._forward_hooks or m._forward_pre_hooks or nn_module._global_forward_hooks
                or nn_module._global_forward_pre_hooks)


def recomputed_mixer(block, r: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``block.mixer(block.norm(r))`` keeping only ``r`` for backward (see module doc)."""
    return _RecomputedMixer.apply(block, r, dtype, *_params(block))
