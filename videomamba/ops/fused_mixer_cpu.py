"""The fused bidirectional mixer forward on CPU (``kernels/cpu/fused_mixer.cpp``), no gradients.

One call takes the x half of in_proj ``(b, Di, Lx)`` to ``(y_fwd + y_bwd + add) * silu(z) * scale`` for a window
of positions: per sub-chunk of the sequence, conv + SiLU, x_proj, dt_proj + softplus and the scan of each
direction, with every intermediate in cache, in one OpenMP region. The reference is the unfused composition in
:mod:`videomamba.modules.mixer_math` (what the tests compare against), which also stays the path for
gradients, other dtypes and other devices.
"""
from __future__ import annotations

import ctypes
from typing import NamedTuple

import torch

from ._build import cpu_arch, load_native, target_info

_SOURCE = "cpu/fused_mixer.cpp"
_f = ctypes.POINTER(ctypes.c_float)
_i64 = ctypes.c_int64
_PTRS = ctypes.c_void_p * 9

# Positions per sub-chunk. Longer sub-chunks pay the per-row costs (the strided start of each channel's conv
# input, the state load of each channel block) less often: on a 2-core Xeon 512 positions ran the kernel 1.3x
# faster than 64 (VideoMamba-Ti, 3137 tokens). Since the scan runs in 64-position tiles (kernels/cpu/
# fused_mixer.cpp), 128 to 512 measure the same on a 2-core EPYC (Zen 4, 1 MB of L2 per core), so the working
# set (conv outputs Di x sub, x_dbl, B/C) is kept near half a MB, which also fits CPUs with smaller caches; wider
# models take shorter sub-chunks.
MAX_SUB = 512
_SUB_BUDGET_FLOATS = 1 << 17


def default_sub(d_inner: int, d_state: int = 16, dt_rank: int = 24) -> int:
    """Positions per sub-chunk for ``d_inner`` channels: 256 for VideoMamba-Ti, fewer for wider models."""
    per_position = d_inner + dt_rank + 4 * d_state
    return max(128, min(MAX_SUB, _SUB_BUDGET_FLOATS // per_position // 64 * 64))


class FusedDirection(NamedTuple):
    """One scan direction's tensors for :func:`mixer_fwd`, and the state entering the window (``(b, Di, N)``
    in that direction's scan order, or None for zeros)."""
    conv_weight: torch.Tensor          # (Di, 1, K) or (Di, K)
    conv_bias: torch.Tensor | None
    x_proj_weight: torch.Tensor        # (R + 2N, Di)
    dt_proj_weight: torch.Tensor       # (Di, R)
    dt_proj_bias: torch.Tensor
    A_log: torch.Tensor                # (Di, N)
    D: torch.Tensor | None
    initial_state: torch.Tensor | None = None


_typed: dict = {}   # -march level -> the loaded library with its argument types set (a dict lookup per call)
_raw: dict = {}     # -march level -> the same entry point taking every pointer as a plain int (PackedPair calls)


def _lib():
    arch = cpu_arch()
    lib = _typed.get(arch)
    if lib is None:
        lib = load_native(_SOURCE)
        if lib is not None:
            lib.vm_fused_mixer_fwd.argtypes = [_f, _i64, _i64, _i64, _i64, _i64, _i64, _i64, _i64, _i64,
                                               ctypes.c_void_p, ctypes.c_void_p, _f, _f, ctypes.c_float, _f, _f,
                                               _i64, ctypes.c_int]
            lib.vm_fused_mixer_fwd.restype = ctypes.c_int
            lib.vm_fused_mixer_lanes.restype = ctypes.c_int
            _typed[arch] = lib
    return lib


def _raw_entry():
    """The kernel's entry point with every pointer argument a ``c_void_p``, so that callers pass ``data_ptr()``
    ints (no ctypes pointer objects built per call)."""
    arch = cpu_arch()
    fn = _raw.get(arch)
    if fn is None:
        lib = _lib()
        if lib is None:
            raise RuntimeError("the fused mixer kernel is not available (see the warning about kernels/cpu)")
        fn = lib["vm_fused_mixer_fwd"]   # a second function object: its own argument types
        vp = ctypes.c_void_p
        fn.argtypes = [vp, _i64, _i64, _i64, _i64, _i64, _i64, _i64, _i64, _i64, vp, vp, vp, vp, ctypes.c_float,
                       vp, vp, _i64, ctypes.c_int]
        fn.restype = ctypes.c_int
        _raw[arch] = fn
    return fn


def available() -> bool:
    return _lib() is not None


def target() -> str:
    """What the loaded kernel was compiled for, e.g. ``"AVX2+FMA, 8 lanes"``."""
    return target_info(_lib(), "vm_fused_mixer")


def _f32(t: torch.Tensor | None) -> torch.Tensor | None:
    if t is None or (t.dtype == torch.float32 and t.is_contiguous()):
        return t
    return t.detach().to(torch.float32).contiguous()


def _ptr(t: torch.Tensor | None):
    return None if t is None else ctypes.cast(t.data_ptr(), _f)


class _Packed:
    """A direction's tensors as the kernel takes them (fp32, contiguous, the states padded to the vector width);
    keeps them alive for the call. A_log goes as it is: the kernel computes A = -exp(A_log) itself, so nothing
    derived from a parameter is cached where an update through ``.data`` (DeepSpeed) could leave it stale."""

    def __init__(self, d: FusedDirection, batch: int, NP: int, want_last: bool):
        Di, N = d.A_log.shape
        self.conv_w = _f32(d.conv_weight.reshape(Di, -1))
        self.K = self.conv_w.shape[1]
        state = d.initial_state
        self.tensors = [self.conv_w, _f32(d.conv_bias), _f32(d.x_proj_weight), _f32(d.dt_proj_weight),
                        _f32(d.dt_proj_bias), _f32(d.A_log), _f32(d.D),
                        None if state is None else torch.nn.functional.pad(state.detach().float(), (0, NP - N)).contiguous()]
        self.last = torch.empty(batch, Di, NP, dtype=torch.float32) if want_last else None
        self.R = self.tensors[3].shape[1]
        self.N = N
        self.array = _PTRS(*[None if t is None else t.data_ptr() for t in self.tensors + [self.last]])

    def last_state(self):
        return None if self.last is None else self.last[..., :self.N]


def mixer_fwd(x: torch.Tensor, forward: FusedDirection | None, backward: FusedDirection | None, *,
              lo: int = 0, n: int | None = None, z: torch.Tensor | None = None, add: torch.Tensor | None = None,
              scale: float = 1.0, out: torch.Tensor | None = None, scratch: torch.Tensor | None = None,
              return_last_state: bool = False, sub: int | None = None):
    """``out (b, Di, n) = (y_fwd + y_bwd + add) * silu(z) * scale`` over positions ``[lo, lo + n)`` of
    ``x (b, Di, Lx)`` (the convolutions read the positions around the window that x holds, zeros beyond it).
    A direction that is None is skipped; ``z`` / ``add`` ``(b, Di, n)`` are optional. ``scratch``: an fp32
    buffer of ``>= b * Di * n`` elements for the backward direction's output when both run (allocated when None).
    ``sub``: positions per sub-chunk (default: :func:`default_sub`).
    Returns ``out`` and, with ``return_last_state``, the states leaving the window ``(last_fwd, last_bwd)``
    (``(b, Di, N)`` views, None for a skipped direction)."""
    lib = _lib()
    if lib is None:
        raise RuntimeError("the fused mixer kernel is not available (see the warning about kernels/cpu)")
    if forward is None and backward is None:
        raise ValueError("mixer_fwd: give at least one direction")
    b, Di, Lx = x.shape
    n = Lx - lo if n is None else n
    if not (0 <= lo and 0 <= n and lo + n <= Lx):
        raise ValueError(f"mixer_fwd: window [{lo}, {lo + n}) is outside x's {Lx} positions")
    xx = _f32(x)
    N = (forward or backward).A_log.shape[1]
    lanes = lib.vm_fused_mixer_lanes()
    NP = -(-N // lanes) * lanes
    packed = [None if d is None else _Packed(d, b, NP, return_last_state) for d in (forward, backward)]
    K = next(p.K for p in packed if p is not None)
    R = next(p.R for p in packed if p is not None)
    sub = default_sub(Di, N, R) if sub is None else sub
    zz, aa = _f32(z), _f32(add)
    for name, t in (("z", zz), ("add", aa)):
        if t is not None and tuple(t.shape) != (b, Di, n):
            raise ValueError(f"mixer_fwd: {name} must have shape {(b, Di, n)}, got {tuple(t.shape)}")
    if out is None:
        out = torch.empty(b, Di, n, dtype=torch.float32)
    elif out.dtype != torch.float32 or not out.is_contiguous() or tuple(out.shape) != (b, Di, n):
        raise ValueError(f"mixer_fwd: out must be a contiguous fp32 tensor of shape {(b, Di, n)}")
    both = forward is not None and backward is not None
    if both and scratch is None:
        scratch = torch.empty(b * Di * n, dtype=torch.float32)
    elif both and (scratch.dtype != torch.float32 or scratch.numel() < b * Di * n or not scratch.is_contiguous()):
        raise ValueError(f"mixer_fwd: scratch must be a contiguous fp32 buffer of >= {b * Di * n} elements")
    rc = lib.vm_fused_mixer_fwd(_ptr(xx), b, Di, Lx, lo, n, K, R, N, NP,
                                None if packed[0] is None else packed[0].array,
                                None if packed[1] is None else packed[1].array,
                                _ptr(zz), _ptr(aa), float(scale), _ptr(out), _ptr(scratch) if both else None,
                                int(sub), torch.get_num_threads())
    if rc != 0:
        raise RuntimeError(f"fused mixer CPU kernel failed (code {rc})")
    if not return_last_state:
        return out
    return out, tuple(None if p is None else p.last_state() for p in packed)


class PackedPair:
    """Both directions of a mixer packed once for repeated whole-sequence calls without entering or leaving
    states (:func:`mixer_fwd_packed`): at an image's 197 tokens packing per call (checks, conversions, ctypes
    arrays) cost about a tenth of the kernel. Built by :func:`pack_pair`, which refuses parameters it would have
    to copy, so it points at the parameters' own memory and an in-place update reaches the next call; the caller
    decides when to pack again (a replaced parameter, moved storage)."""

    def __init__(self, forward: FusedDirection, backward: FusedDirection):
        lanes = _lib().vm_fused_mixer_lanes()
        self.N = forward.A_log.shape[1]
        self.NP = -(-self.N // lanes) * lanes
        self.packed = (_Packed(forward, 1, self.NP, False), _Packed(backward, 1, self.NP, False))
        self.K, self.R = self.packed[0].K, self.packed[0].R
        self.Di = forward.A_log.shape[0]
        given = {t.data_ptr() for d in (forward, backward) for t in d[:7] if t is not None}
        self.copied = any(t is not None and t.data_ptr() not in given for p in self.packed for t in p.tensors)


def pack_pair(forward: FusedDirection, backward: FusedDirection) -> PackedPair | None:
    """``forward`` / ``backward`` (no initial states) packed once, or None when a tensor is not fp32 and
    contiguous (the kernel would read a copy, which an update of the parameter would leave stale)."""
    if forward.initial_state is not None or backward.initial_state is not None:
        raise ValueError("pack_pair: a packed pair carries no initial states")
    pair = PackedPair(forward, backward)
    return None if pair.copied else pair


def mixer_fwd_packed(pair: PackedPair, x: torch.Tensor, z: torch.Tensor, out: torch.Tensor,
                     scratch: torch.Tensor, scale: float = 1.0, sub: int | None = None) -> torch.Tensor:
    """:func:`mixer_fwd` of both directions over the whole of ``x (b, Di, L)`` with a :class:`PackedPair`:
    ``out (b, Di, L) = (y_fwd + y_bwd) * silu(z) * scale``. x, z, out: fp32 and contiguous; scratch: a contiguous
    fp32 buffer of ``>= b * Di * L`` elements."""
    b, Di, L = x.shape
    for name, t in (("x", x), ("z", z), ("out", out)):
        if t.dtype != torch.float32 or not t.is_contiguous() or t.shape != x.shape:
            raise ValueError(f"mixer_fwd_packed: {name} must be a contiguous fp32 tensor of shape {tuple(x.shape)}")
    if Di != pair.Di:
        raise ValueError(f"mixer_fwd_packed: x has {Di} channels, the packed pair {pair.Di}")
    if scratch.dtype != torch.float32 or scratch.numel() < b * Di * L or not scratch.is_contiguous():
        raise ValueError(f"mixer_fwd_packed: scratch must be a contiguous fp32 buffer of >= {b * Di * L} elements")
    if L == 0:
        return out
    sub = default_sub(Di, pair.N, pair.R) if sub is None else sub
    rc = _raw_entry()(x.data_ptr(), b, Di, L, 0, L, pair.K, pair.R, pair.N, pair.NP,
                      ctypes.addressof(pair.packed[0].array), ctypes.addressof(pair.packed[1].array),
                      z.data_ptr(), None, float(scale), out.data_ptr(), scratch.data_ptr(), int(sub),
                      torch.get_num_threads())
    if rc != 0:
        raise RuntimeError(f"fused mixer CPU kernel failed (code {rc})")
    return out
