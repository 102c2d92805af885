"""The residual add and RMSNorm of the no-gradient block loop in one native pass (``kernels/cpu/rms_norm.cpp``).

The reference is :func:`videomamba.ops.norm.norm_into` (torch ops); :func:`videomamba.ops.norm.add_norm_into`
chooses between them.
"""
from __future__ import annotations

import ctypes

import torch

from ._build import cpu_arch, load_native, target_info

_SOURCE = "cpu/rms_norm.cpp"
_entries: dict = {}   # -march level -> the entry point (pointers as plain ints), or None when it did not build


def _entry():
    arch = cpu_arch()
    if arch not in _entries:
        lib = load_native(_SOURCE)
        fn = None
        if lib is not None:
            fn = lib.vm_add_rms_norm
            vp = ctypes.c_void_p
            fn.argtypes = [vp, vp, vp, ctypes.c_float, vp, ctypes.c_int64, ctypes.c_int64, ctypes.c_int]
            fn.restype = ctypes.c_int
        _entries[arch] = fn
    return _entries[arch]


def available() -> bool:
    return _entry() is not None


def target() -> str:
    """What the loaded kernel was compiled for, e.g. ``"AVX2+FMA, 8 lanes"``."""
    return target_info(load_native(_SOURCE), "vm_rms_norm")


def _plain_f32(t: torch.Tensor) -> bool:
    """A plain tensor or parameter (no subclass that would want to see the op), fp32, contiguous, on the CPU."""
    return type(t) in (torch.Tensor, torch.nn.Parameter) and t.dtype == torch.float32 and t.device.type == "cpu" and t.is_contiguous()


def add_rms_norm_(stream: torch.Tensor, add: torch.Tensor | None, weight: torch.Tensor, eps: float,
                  out: torch.Tensor) -> bool:
    """``stream += add`` (when given), then ``out = rms_norm(stream) * weight`` over the last dimension, in one
    pass per row; ``out`` may be ``add``. Returns False, touching nothing, where the kernel does not apply
    (not fp32 contiguous CPU tensors of one shape, an empty last dimension, or no kernel): the caller then takes the torch ops."""
    cols = stream.shape[-1] if stream.dim() else 0
    if cols == 0 or not (_plain_f32(stream) and _plain_f32(out) and _plain_f32(weight) and out.shape == stream.shape
            and weight.shape == (cols,) and (add is None or (_plain_f32(add) and add.shape == stream.shape))):
        return False
    fn = _entry()
    if fn is None or (torch.is_grad_enabled() and (stream.requires_grad or (add is not None and add.requires_grad))):
        return False
    rows = stream.numel() // cols
    rc = fn(stream.data_ptr(), None if add is None else add.data_ptr(), weight.data_ptr(), float(eps),
            out.data_ptr(), rows, cols, torch.get_num_threads())
    if rc != 0:
        raise RuntimeError(f"RMSNorm CPU kernel failed (code {rc})")
    return True
