"""Depthwise causal 1-D convolution (causal-conv1d's ``causal_conv1d_fn``): reference, native CPU
kernel (``kernels/cpu/causal_conv1d.cpp``) registered as a torch custom op, and dispatch.

``reverse=True`` gives the anti-causal convolution ``flip(conv(flip(x)))``, which the backward scan
direction needs; the native kernel computes it in place without the two flip copies.
Backends: ``auto`` (native for CPU float tensors when it builds, Triton for CUDA fp32/bf16/fp16 tensors
when triton is installed, else reference), ``cpu``, ``triton`` (``causal_conv1d_triton``; CUDA tensors, or CPU
tensors under ``TRITON_INTERPRET=1`` for tests, only when asked for by name), ``reference``; per call with
``backend=`` or globally with ``VIDEOMAMBA_CONV_BACKEND``. A backend asked for by name that cannot run raises.
The Triton kernels run straight from an autograd.Function in eager mode and as the custom ops
``videomamba::causal_conv1d_triton`` (+ backward) under torch.compile / export, as the scan does.
"""
from __future__ import annotations

import ctypes
import functools
import importlib.util
import os

import torch
import torch.nn.functional as F
from torch import Tensor

from ._build import load_native, target_info
from .scan_op import _eager

ENV_VAR = "VIDEOMAMBA_CONV_BACKEND"
BACKENDS = ("auto", "cpu", "triton", "reference")
TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
TRITON_MAX_K = 8   # causal_conv1d_triton.MAX_K (not imported here: triton may be missing)
_f = ctypes.POINTER(ctypes.c_float)
_i64 = ctypes.c_int64


def causal_conv1d_ref(x: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str | None = None,
                      reverse: bool = False) -> Tensor:
    """``y[:, c, t] = bias[c] + sum_k weight[c, k] * x[:, c, t - (K-1) + k]`` (zero left padding)."""
    if weight.dim() == 3:
        weight = weight.squeeze(1)
    if reverse:
        return causal_conv1d_ref(x.flip(-1), weight, bias, activation).flip(-1)
    dim, K = weight.shape
    L = x.shape[-1]
    y = F.conv1d(x, weight.unsqueeze(1).to(x.dtype), None if bias is None else bias.to(x.dtype),
                 padding=K - 1, groups=dim)[..., :L]
    return F.silu(y) if activation is not None else y


def _lib():
    lib = load_native("cpu/causal_conv1d.cpp")
    if lib is not None and not getattr(lib, "_vm_typed", False):
        head = [_f, _f, _f, ctypes.c_int, ctypes.c_int, _i64, _i64, _i64, _i64]
        lib.vm_causal_conv1d_fwd.argtypes = head + [_f, ctypes.c_int]
        lib.vm_causal_conv1d_bwd.argtypes = head + [_f, _f, _f, _f, ctypes.c_int]
        lib.vm_causal_conv1d_fwd_window.argtypes = [_f, _f, _f, ctypes.c_int, ctypes.c_int, _i64, _i64, _i64, _i64,
                                                    _i64, _f, ctypes.c_int]
        lib._vm_typed = True
    return lib


@torch.compiler.assume_constant_result
def native_available() -> bool:
    return _lib() is not None


def native_target() -> str:
    """What the loaded kernel was compiled for, e.g. ``"AVX2+FMA, 8 lanes"``."""
    return target_info(_lib(), "vm_causal_conv1d")


def _p(t: Tensor | None):
    return None if t is None else ctypes.cast(t.data_ptr(), _f)


def _f32(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach().to(torch.float32).contiguous()


@torch.library.custom_op("videomamba::causal_conv1d", mutates_args=())
def causal_conv1d_op(x: Tensor, weight: Tensor, bias: Tensor | None, silu: bool, reverse: bool) -> Tensor:
    if x.device.type != "cpu" or not native_available():   # e.g. an exported graph run elsewhere
        return causal_conv1d_ref(x, weight.reshape(weight.shape[0], -1), bias, "silu" if silu else None, reverse)
    batch, dim, L = x.shape
    K = weight.shape[-1]
    xx, ww, bb = _f32(x), _f32(weight.reshape(dim, K)), _f32(bias)
    y = torch.empty(batch, dim, L, dtype=torch.float32)
    _lib().vm_causal_conv1d_fwd(_p(xx), _p(ww), _p(bb), int(silu), int(reverse), batch, dim, L, K, _p(y),
                                torch.get_num_threads())
    return y.to(x.dtype)


@causal_conv1d_op.register_fake
def _(x, weight, bias, silu, reverse):
    return x.new_empty(x.shape)


@torch.library.custom_op("videomamba::causal_conv1d_backward", mutates_args=())
def causal_conv1d_backward_op(dy: Tensor, x: Tensor, weight: Tensor, bias: Tensor | None, silu: bool,
                              reverse: bool) -> list[Tensor]:
    if x.device.type != "cpu" or not native_available():  # _backward routes around this op then
        raise RuntimeError(f"causal_conv1d_backward: the native kernel cannot run on {x.device.type} here")
    batch, dim, L = x.shape
    K = weight.shape[-1]
    xx, ww, bb, gg = _f32(x), _f32(weight.reshape(dim, K)), _f32(bias), _f32(dy)
    dx = torch.empty(batch, dim, L, dtype=torch.float32)
    dw = torch.empty(batch, dim, K, dtype=torch.float32)
    db = torch.empty(batch, dim, dtype=torch.float32)
    _lib().vm_causal_conv1d_bwd(_p(xx), _p(ww), _p(bb), int(silu), int(reverse), batch, dim, L, K, _p(gg),
                                _p(dx), _p(dw), _p(db), torch.get_num_threads())
    dbias = db.sum(0).to(bias.dtype) if bias is not None else x.new_empty(0)
    return [dx.to(x.dtype), dw.sum(0).reshape(weight.shape).to(weight.dtype), dbias]


@causal_conv1d_backward_op.register_fake
def _(dy, x, weight, bias, silu, reverse):
    return [x.new_empty(x.shape), weight.new_empty(weight.shape),
            bias.new_empty(bias.shape) if bias is not None else x.new_empty(0)]


def _setup_context(ctx, inputs, output):
    x, weight, bias, silu, reverse = inputs
    ctx.save_for_backward(x, weight, bias)
    ctx.silu, ctx.reverse = silu, reverse


def _reference_grads(dy, x, weight, bias, silu, reverse):
    """``(dx, dweight, dbias)`` by differentiating the reference (dbias None without bias)."""
    xs, ws = x.detach().requires_grad_(True), weight.detach().requires_grad_(True)
    bs = bias.detach().requires_grad_(True) if bias is not None else None
    with torch.enable_grad():
        y = causal_conv1d_ref(xs, ws.reshape(ws.shape[0], -1), bs, "silu" if silu else None, reverse)
        g = torch.autograd.grad(y, [t for t in (xs, ws, bs) if t is not None], dy)
    return g[0], g[1], (g[2] if bias is not None else None)


def _backward(ctx, dy):
    x, weight, bias = ctx.saved_tensors
    if x.device.type != "cpu" or not native_available():
        # e.g. an exported graph run where the kernel cannot build: differentiate the reference.
        return *_reference_grads(dy, x, weight, bias, ctx.silu, ctx.reverse), None, None
    dx, dw, db = causal_conv1d_backward_op(dy.contiguous(), x, weight, bias, ctx.silu, ctx.reverse)
    return dx, dw, (db if bias is not None else None), None, None


causal_conv1d_op.register_autograd(_backward, setup_context=_setup_context)


@torch.no_grad()
def conv_silu_into(x: Tensor, weight: Tensor, bias: Tensor | None, reverse: bool, out: Tensor) -> Tensor:
    """``silu(causal_conv1d(x))`` of fp32 ``x (b, Di, L)`` on the native kernel, written into ``out`` (contiguous,
    x's shape; no autograd): for callers that reuse their buffers (the recomputing training mixer)."""
    batch, dim, L = x.shape
    K = weight.shape[-1]
    _check_into(x, out, "conv_silu_into")
    _lib().vm_causal_conv1d_fwd(_p(_f32(x)), _p(_f32(weight.reshape(dim, K))), _p(_f32(bias)), 1, int(reverse),
                                batch, dim, L, K, _p(out), torch.get_num_threads())
    return out


@torch.no_grad()
def conv_silu_backward_into(dy: Tensor, x: Tensor, weight: Tensor, bias: Tensor | None, reverse: bool,
                            dx: Tensor) -> tuple[Tensor, Tensor | None]:
    """The backward of :func:`conv_silu_into`: ``dx`` written into the given buffer; returns ``(dweight shaped
    like weight, dbias or None)``, summed over the batch."""
    batch, dim, L = x.shape
    K = weight.shape[-1]
    _check_into(x, dx, "conv_silu_backward_into")
    dw = torch.empty(batch, dim, K, dtype=torch.float32)
    db = torch.empty(batch, dim, dtype=torch.float32)
    _lib().vm_causal_conv1d_bwd(_p(_f32(x)), _p(_f32(weight.reshape(dim, K))), _p(_f32(bias)), 1, int(reverse),
                                batch, dim, L, K, _p(_f32(dy)), _p(dx), _p(dw), _p(db), torch.get_num_threads())
    return dw.sum(0).reshape(weight.shape), (db.sum(0) if bias is not None else None)


def _check_into(x: Tensor, out: Tensor, name: str):
    if (x.device.type != "cpu" or x.dtype != torch.float32 or out.dtype != torch.float32 or not out.is_contiguous()
            or out.shape != x.shape or not native_available()):
        raise ValueError(f"{name}: needs the native kernel, fp32 CPU tensors and a contiguous output of x's shape")


@torch.no_grad()
def causal_conv1d_window(x: Tensor, weight: Tensor, bias: Tensor | None, activation: str | None, reverse: bool,
                         out_len: int) -> Tensor:
    """The conv's last (causal) or first (``reverse``) ``out_len`` outputs of ``x (batch, dim, L_in)``, where the
    other ``L_in - out_len`` inputs are only the halo those outputs read (a chunked caller's neighbouring
    positions). No autograd; the native kernel writes just those outputs, the reference slices."""
    w2 = weight.squeeze(1) if weight.dim() == 3 else weight
    L_in = x.shape[-1]
    if not 0 <= out_len <= L_in:
        raise ValueError(f"causal_conv1d_window: out_len must be in [0, {L_in}], got {out_len}")
    native = (x.device.type == "cpu" and x.dtype == torch.float32 and native_available()
              and (os.environ.get(ENV_VAR) or "auto") != "reference")
    if not native:
        y = causal_conv1d_fn(x, w2, bias, activation, reverse)
        return (y[..., :out_len] if reverse else y[..., L_in - out_len:]).contiguous()
    batch, dim, _ = x.shape
    xx, ww, bb = _f32(x), _f32(w2), _f32(bias)
    y = torch.empty(batch, dim, out_len, dtype=torch.float32)
    rc = _lib().vm_causal_conv1d_fwd_window(_p(xx), _p(ww), _p(bb), int(activation is not None), int(reverse),
                                            batch, dim, L_in, out_len, w2.shape[-1], _p(y), torch.get_num_threads())
    if rc != 0:
        raise RuntimeError(f"causal conv CPU kernel failed (code {rc})")
    return y


@functools.lru_cache(maxsize=None)
def _triton_importable() -> bool:
    return importlib.util.find_spec("triton") is not None


@torch.compiler.assume_constant_result
def triton_available(device_type: str) -> bool:
    """Whether the Triton kernels can run on tensors of ``device_type`` here (CPU: only in the interpreter)."""
    if not _triton_importable():
        return False
    return device_type == "cuda" or (device_type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1")


def _triton_covers(x: Tensor, K: int) -> bool:
    return x.dtype in TRITON_DTYPES and 1 <= K <= TRITON_MAX_K


def _triton_module():
    from . import causal_conv1d_triton

    return causal_conv1d_triton


@torch.library.custom_op("videomamba::causal_conv1d_triton", mutates_args=())
def causal_conv1d_triton_op(x: Tensor, weight: Tensor, bias: Tensor | None, silu: bool, reverse: bool) -> Tensor:
    if not triton_available(x.device.type):   # e.g. an exported graph run where the kernel cannot
        return causal_conv1d_ref(x, weight.reshape(weight.shape[0], -1), bias, "silu" if silu else None,
                                 reverse).contiguous()
    return _triton_module().conv_fwd(x, weight, bias, silu, reverse)


@causal_conv1d_triton_op.register_fake
def _(x, weight, bias, silu, reverse):
    return x.new_empty(x.shape)   # the kernel's output is contiguous whatever x's strides


@torch.library.custom_op("videomamba::causal_conv1d_triton_backward", mutates_args=())
def causal_conv1d_triton_backward_op(dy: Tensor, x: Tensor, weight: Tensor, bias: Tensor | None, silu: bool,
                                     reverse: bool) -> list[Tensor]:
    if not triton_available(x.device.type):   # _triton_backward routes around this op then
        raise RuntimeError(f"causal_conv1d_triton_backward: the Triton kernel cannot run on {x.device.type} here")
    dx, dw, db = _triton_module().conv_bwd(dy, x, weight, bias, silu, reverse)
    return [dx, dw, db if db is not None else x.new_empty(0)]


@causal_conv1d_triton_backward_op.register_fake
def _(dy, x, weight, bias, silu, reverse):
    return [x.new_empty(x.shape), weight.new_empty(weight.shape),
            bias.new_empty(bias.shape) if bias is not None else x.new_empty(0)]


def _triton_backward(ctx, dy):
    x, weight, bias = ctx.saved_tensors
    if not triton_available(x.device.type):
        dx, dw, db = _reference_grads(dy, x, weight, bias, ctx.silu, ctx.reverse)
        return dx, dw, db, None, None
    dx, dw, db = causal_conv1d_triton_backward_op(dy.contiguous(), x, weight, bias, ctx.silu, ctx.reverse)
    return dx, dw, (db if bias is not None else None), None, None


causal_conv1d_triton_op.register_autograd(_triton_backward, setup_context=_setup_context)


class _EagerTritonConv(torch.autograd.Function):
    """The Triton kernels called straight from autograd in eager mode (no custom-op dispatch cost)."""

    @staticmethod
    def forward(ctx, x, weight, bias, silu, reverse):
        ctx.save_for_backward(x, weight, bias)
        ctx.silu, ctx.reverse = silu, reverse
        return _triton_module().conv_fwd(x, weight, bias, silu, reverse)

    @staticmethod
    def backward(ctx, dy):
        x, weight, bias = ctx.saved_tensors
        dx, dw, db = _triton_module().conv_bwd(dy, x, weight, bias, ctx.silu, ctx.reverse)
        return dx, dw, db, None, None


def _triton_conv(x: Tensor, w2: Tensor, bias: Tensor | None, silu: bool, reverse: bool) -> Tensor:
    if _eager(x):
        return _EagerTritonConv.apply(x, w2, bias, silu, reverse)
    return causal_conv1d_triton_op(x, w2, bias, silu, reverse)


def causal_conv1d_fn(x: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str | None = None,
                     reverse: bool = False, backend: str | None = None) -> Tensor:
    """Depthwise causal conv of ``x (batch, dim, L)`` with ``weight (dim, K)`` or ``(dim, 1, K)``.

    ``activation``: ``None`` or ``"silu"``/``"swish"``. ``reverse``: anti-causal (see module doc).
    """
    w2 = weight.squeeze(1) if weight.dim() == 3 else weight
    dim, K = w2.shape
    if x.dim() != 3 or x.shape[1] != dim:
        raise ValueError(f"causal_conv1d_fn: x must be (batch, {dim}, L), got {tuple(x.shape)}")
    if activation not in (None, "silu", "swish"):
        raise ValueError(f"causal_conv1d_fn: activation must be None, 'silu' or 'swish', got {activation!r}")
    name = backend or os.environ.get(ENV_VAR) or "auto"
    if name not in BACKENDS:
        raise ValueError(f"causal_conv1d_fn: backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    if name == "triton" or (name == "auto" and x.device.type == "cuda"):
        if triton_available(x.device.type) and _triton_covers(x, K):
            return _triton_conv(x, w2, bias, activation is not None, reverse)
        if name == "triton":
            raise RuntimeError(
                f"causal_conv1d_fn: the Triton kernel needs the triton package, CUDA tensors (or CPU tensors "
                f"with TRITON_INTERPRET=1), fp32/bf16/fp16 x and K <= {TRITON_MAX_K}; got {x.device.type} "
                f"{x.dtype}, K={K}")
        return causal_conv1d_ref(x, w2, bias, activation, reverse)
    usable = x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16, torch.float16)
    if name == "cpu" and not (usable and native_available()):
        raise RuntimeError("causal_conv1d_fn: the native CPU kernel is not available for these inputs")
    if name == "reference" or not (usable and native_available()):
        return causal_conv1d_ref(x, w2, bias, activation, reverse)
    return causal_conv1d_op(x, w2, bias, activation is not None, reverse)
