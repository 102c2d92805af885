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

import os

import torch

from ..ops import add_norm, causal_conv1d, norm_into, selective_scan_cpu, selective_scan_ref
from ..ops.norm import RMSNorm
from ..ops.scan_op import _eager, _kernel_module
from ..ops.selective_scan import resolve_backend
from .mixer_math import (DirectionParams, _weight_matmul, direction_inputs, fused_applies, gated_scan_sum, project_in,
                         project_in_half, project_out, scan_backend_for)
from .mixer_chunked import mixer_whole
from .workspace import Workspace

RECOMPUTE_MODES = ("none", "block")


def _norm(norm, r, weight, bias, dtype):
    """``norm(r)`` with explicit parameter tensors (the recompute differentiates with respect to them)."""
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
        if _workspace_forward_applies(block, r, dtype, fwd):
            return _forward_in_workspace(block, r)
        h = _norm(block.norm, r, norm_w, norm_b, dtype)
        x, z = project_in(h, in_w, in_b)
        del h
        y = gated_scan_sum(x, z, (fwd, bwd), m.dt_rank, m.d_state, m.divide_output)   # (no grad in here)
        return project_out(y, out_w, out_b)

    @staticmethod
    def backward(ctx, dout):
        r, *params = ctx.saved_tensors
        block, m = ctx.block, ctx.block.mixer
        if _manual_backward_applies(block, r, dout, ctx):
            dr, grads = _backward_in_workspace(block, r, dout, params, ctx.needs_input_grad[1])
            return None, dr, None, *[g if needed else None for g, needed in zip(grads, ctx.needs_input_grad[3:])]
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


# VIDEOMAMBA_MANUAL_BACKWARD=0 keeps the autograd recompute everywhere (the reference the manual one is tested
# against, and the path for every case the manual one does not cover).
MANUAL_BACKWARD = os.environ.get("VIDEOMAMBA_MANUAL_BACKWARD", "1").strip().lower() not in ("0", "false", "no")
_WORKSPACE = Workspace()   # the manual backward's buffers: allocated once per process, reused by every block


def training_workspace() -> Workspace:
    """The buffers of the manual backward (``.clear()`` frees them; they are allocated again when needed). One per
    process, shared by every model: blocks run one after another, so two models training at once in threads of
    one process are not supported on this path (``VIDEOMAMBA_MANUAL_BACKWARD=0`` for that)."""
    return _WORKSPACE


def _workspace_forward_applies(block, r, dtype, p) -> bool:
    """The forward's temporaries go to the workspace where the fused CPU kernel runs on fp32 (RMSNorm)."""
    return (MANUAL_BACKWARD and dtype == torch.float32 and r.dtype == torch.float32 and isinstance(block.norm, RMSNorm)
            and not any(torch.is_autocast_enabled(d) for d in ("cpu", "cuda")) and fused_applies(r, p))


def _forward_in_workspace(block, r):
    """The forward of :class:`_RecomputedMixer` on the fused CPU kernel (:func:`.mixer_chunked.mixer_whole`), the
    norm output, the in_proj halves and the scan outputs in the workspace (the backward's buffers: the two never
    run at once); only the returned output is a fresh tensor, which autograd keeps."""
    h = norm_into(block.norm, r, _WORKSPACE.take("h", r.shape, torch.float32, r.device))
    return mixer_whole(block.mixer, h, _WORKSPACE, out=torch.empty(r.shape, dtype=torch.float32, device=r.device))


def _manual_backward_applies(block, r, dout, ctx) -> bool:
    """The manual backward covers the CPU kernels' fp32 case with an RMSNorm and no autocast."""
    m = block.mixer
    if (not MANUAL_BACKWARD or r.device.type != "cpu" or r.dtype != torch.float32 or dout.dtype != torch.float32
            or ctx.dtype != torch.float32 or any(on for _, on, _ in ctx.autocast)
            or not isinstance(block.norm, RMSNorm) or block.norm.weight.dtype != torch.float32
            or m.in_proj.weight.dtype != torch.float32 or m.A_log.dtype != torch.float32):
        return False
    return scan_backend_for(r, m.A_log) == "cpu" and causal_conv1d.native_available()


def _backward_in_workspace(block, r, dout, params, want_input_grad: bool):
    """The backward of :class:`_RecomputedMixer` written out by hand, every tensor as long as the sequence a view
    of the workspace (no autograd graph, nothing for the allocator to churn): recompute norm and in_proj, then
    per direction conv + SiLU, x_proj, dt_proj and the scan backward kernel (which also returns the scan output),
    and the chain rule back through dt_proj, x_proj, the conv, in_proj and the norm (an RMSNorm: no bias).
    Returns the gradient of ``r`` (None unless wanted) and the parameter gradients in ``_params`` order."""
    m, ws = block.mixer, _WORKSPACE
    norm_w, norm_b, in_w, in_b, out_w, out_b = params[:6]
    dirs = (DirectionParams(*params[6:13]), DirectionParams(*params[13:20]))
    b, L, Dm = r.shape
    Di, R, N = m.d_inner, m.dt_rank, m.d_state
    f32 = dict(dtype=torch.float32, device=r.device)
    take = lambda name, *shape: ws.take(name, shape, **f32)   # noqa: E731

    # RMSNorm: h = xhat * w, xhat = r * rstd, rstd = 1 / sqrt(mean(r^2) + eps)
    xhat, h = take("xhat", b, L, Dm), take("h", b, L, Dm)
    torch.mul(r, r, out=xhat)
    rstd = xhat.mean(dim=-1, keepdim=True).add_(block.norm.eps).rsqrt_()
    torch.mul(r, rstd, out=xhat)
    torch.mul(xhat, norm_w, out=h)
    x = project_in_half(h, in_w, in_b, 0, out=take("x", b, Di, L))
    z = project_in_half(h, in_w, in_b, 1, out=take("z", b, Di, L))
    # gradient reaching the gated sum: out = y^T W_out^T (+ b)
    dout = dout.contiguous()
    dy = _weight_matmul(out_w.t(), dout.transpose(1, 2), out=take("dy", b, Di, L))
    if m.divide_output:
        dy.mul_(0.5)
    dx, dz, y = take("dx", b, Di, L), take("dz", b, Di, L), take("y", b, Di, L)
    xc, xdbl, dxdbl = take("xc", b, Di, L), take("xdbl", b, R + 2 * N, L), take("dxdbl", b, R + 2 * N, L)
    dt, dxc = take("dt", b, Di, L), take("dxc", b, Di, L)
    scan_bufs = {"du": take("du", b, Di, L), "ddelta": take("ddelta", b, Di, L), "dz": take("dzd", b, Di, L),
                 "out": take("yd", b, Di, L)}
    grads = []
    for first, reverse, p in zip((True, False), (False, True), dirs):
        causal_conv1d.conv_silu_into(x, p.conv_weight, p.conv_bias, reverse, out=xc)
        _weight_matmul(p.x_proj_weight, xc, out=xdbl)
        dt_low, B, C = torch.split(xdbl, [R, N, N], dim=1)
        _weight_matmul(p.dt_proj_weight, dt_low, out=dt)
        A = -torch.exp(p.A_log)
        du, ddelta, dA, dB, dC, dD, dzd, dbias, yd = selective_scan_cpu.scan_bwd(
            dy, xc, dt, A, B, C, p.D, z, p.dt_proj_bias, True, reverse=reverse, return_out=True, buffers=scan_bufs)
        if first:
            dz.copy_(dzd)
            y.copy_(yd)
        else:
            dz.add_(dzd)
            y.add_(yd)
        # dt = W_dt dt_low: dW_dt = sum_b ddelta dt_low^T, d dt_low = W_dt^T ddelta
        d_dt_w = torch.matmul(ddelta, dt_low.transpose(1, 2)).sum(0)
        d_low, d_B, d_C = torch.split(dxdbl, [R, N, N], dim=1)
        d_low.copy_(torch.matmul(p.dt_proj_weight.t(), ddelta))
        d_B.copy_(dB), d_C.copy_(dC)
        # x_dbl = W_x xc: dW_x = sum_b dxdbl xc^T, dxc = W_x^T dxdbl (+ du, the scan's own input gradient)
        d_x_w = torch.matmul(dxdbl, xc.transpose(1, 2)).sum(0)
        _weight_matmul(p.x_proj_weight.t(), dxdbl, out=dxc).add_(du)
        d_conv_w, d_conv_b = causal_conv1d.conv_silu_backward_into(dxc, x, p.conv_weight, p.conv_bias, reverse,
                                                                    dx=du)   # (du is free again: dx of this direction)
        if first:
            dx.copy_(du)
        else:
            dx.add_(du)
        grads.append([d_conv_w, d_conv_b, d_x_w, d_dt_w, dbias, dA * A, dD])
    if m.divide_output:
        y.mul_(0.5)
    # out_proj: dW_out = sum_b (y dout)^T, db_out = sum dout
    d_out_w = torch.matmul(y, dout).sum(0).t()
    d_out_b = dout.sum((0, 1)) if out_b is not None else None
    # in_proj of h: dW_in = sum_b [dx; dz] h, dh = [dx; dz]^T W_in
    w_x, w_z = in_w.chunk(2, dim=0)
    d_in_w = torch.cat([torch.matmul(dx, h).sum(0), torch.matmul(dz, h).sum(0)])
    d_in_b = torch.cat([dx.sum((0, 2)), dz.sum((0, 2))]) if in_b is not None else None
    dh = h   # (h is dead once the in_proj gradients are taken: its buffer holds dh)
    torch.bmm(dx.transpose(1, 2), w_x.unsqueeze(0).expand(b, -1, -1), out=dh)
    dh.baddbmm_(dz.transpose(1, 2), w_z.unsqueeze(0).expand(b, -1, -1))
    # RMSNorm backward: dw = sum dh xhat; dr = rstd (g - xhat mean(g xhat)), g = dh w
    tmp = take("x", b, L, Dm)   # (x is dead: its buffer holds the products)
    d_norm_w = torch.mul(dh, xhat, out=tmp).sum((0, 1))
    g = dh.mul_(norm_w)
    dr = None
    if want_input_grad:
        mean = torch.mul(g, xhat, out=tmp).mean(dim=-1, keepdim=True)
        dr = torch.addcmul(g, xhat, mean, value=-1.0).mul_(rstd)
    return dr, [d_norm_w, None, d_in_w, d_in_b, d_out_w, d_out_b, *grads[0], *grads[1]]


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
