"""Selective scan on CPU through the native kernel (``kernels/cpu/selective_scan.cpp``).

Inputs of any float dtype are computed in fp32; B/C are passed time-major ``(batch, G, L, NP)`` so
that each step reads one contiguous state vector, with the state size padded to the kernel's vector
width (``lanes()``: 16 with AVX-512, 8 with AVX2, 4 with SSE/NEON) by zeros in A, B and C, which keeps
the padded states at exactly 0.
"""
from __future__ import annotations

import ctypes

import torch

from ._build import load_native, target_info

_f = ctypes.POINTER(ctypes.c_float)
_i64 = ctypes.c_int64
_SOURCE = "cpu/selective_scan.cpp"
MAX_STATE = 256     # kMaxState in the kernel


def _lib():
    lib = load_native(_SOURCE)
    if lib is not None and not getattr(lib, "_vm_typed", False):
        common = [_f, _f, _f, _f, _f, _f, _f, _f, ctypes.c_int, ctypes.c_int, _i64, _i64, _i64, _i64, _i64]
        lib.vm_selective_scan_fwd.argtypes = common + [_f, _f, _f, _f, ctypes.c_int]
        lib.vm_selective_scan_bwd.argtypes = common + [_f] * 13 + [ctypes.c_int]
        lib.vm_set_flush_denormals.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.vm_selective_scan_fwd.restype = ctypes.c_int
        lib.vm_selective_scan_bwd.restype = ctypes.c_int
        lib._vm_typed = True
    return lib


def available() -> bool:
    return _lib() is not None


def flush_denormals(on: bool = True) -> bool:
    """Treat subnormal floats as zero (x86 FTZ+DAZ, ARM FZ) on this thread and on the OpenMP threads torch's
    CPU ops run on. Subnormals appear in training (tiny gradients) and make every op that touches them
    ~100x slower: 28% of a VideoMamba-Ti training step at initialisation. Results change by < 1.2e-38.
    The native kernels flush inside their own calls whatever this says. Returns False without the kernel."""
    torch.set_flush_denormal(on)
    lib = _lib()
    if lib is None:
        return False
    lib.vm_set_flush_denormals(int(on), torch.get_num_threads())
    return True


def lanes() -> int:
    """The loaded kernel's vector width in floats."""
    return _lib().vm_selective_scan_lanes()


def target() -> str:
    """What the loaded kernel was compiled for, e.g. ``"AVX2+FMA, 8 lanes"``."""
    return target_info(_lib(), "vm_selective_scan")


def _p(t: torch.Tensor | None):
    return ctypes.cast(t.data_ptr(), _f) if t is not None else None


def _f32(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach().to(torch.float32).contiguous()


def _padded(N: int) -> int:
    w = lanes()
    return -(-N // w) * w


def _time_major(BC: torch.Tensor, NP: int) -> torch.Tensor:
    BC = BC.unsqueeze(1) if BC.dim() == 3 else BC                      # (b, G, N, L)
    b, G, N, L = BC.shape
    if N == NP:    # no padding: one transposing copy
        return BC.detach().to(torch.float32).transpose(-1, -2).contiguous()
    out = torch.zeros(b, G, L, NP, dtype=torch.float32)
    out[..., :N] = BC.detach().transpose(-1, -2)
    return out


def _prepare(u, delta, A, B, C, D, z, delta_bias):
    N = A.shape[1]
    NP = _padded(N)
    AA = _f32(A) if NP == N else torch.nn.functional.pad(A.detach().float(), (0, NP - N)).contiguous()
    return (_f32(u), _f32(delta), AA, _time_major(B, NP), _time_major(C, NP), _f32(D), _f32(z),
            _f32(delta_bias), NP)


def _state(h: torch.Tensor | None, NP: int) -> torch.Tensor | None:
    """A ``(batch, dim, N)`` state padded with zeros to the kernel's ``(batch, dim, NP)``."""
    if h is None:
        return None
    return torch.nn.functional.pad(h.detach().float(), (0, NP - h.shape[-1])).contiguous()


def scan_fwd(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, reverse=False,
             initial_state=None, out=None, add=None):
    """Returns ``(out in u's dtype, last_state fp32 (batch, dim, N))``; ``initial_state`` (batch, dim, N)
    is the state before the first scan step (zeros when None); ``out``: a contiguous fp32 tensor to write
    the output into (for fp32 inputs it is the returned one); ``add`` (batch, dim, L): added to the output
    before the ``silu(z)`` gate (no autograd)."""
    lib = _lib()
    batch, dim, L = u.shape
    N = A.shape[1]
    uu, dd, AA, BB, CC, DD, zz, bb, NP = _prepare(u, delta, A, B, C, D, z, delta_bias)
    G = BB.shape[1]
    if out is None:
        out = torch.empty(batch, dim, L, dtype=torch.float32)
    elif out.dtype != torch.float32 or not out.is_contiguous() or out.shape != u.shape:
        raise ValueError(f"scan_fwd: out must be a contiguous fp32 tensor of shape {tuple(u.shape)}")
    last = torch.empty(batch, dim, NP, dtype=torch.float32)
    h0 = _state(initial_state, NP)
    extra = _f32(add)
    if extra is not None and extra.shape != u.shape:
        raise ValueError(f"scan_fwd: add must have u's shape {tuple(u.shape)}, got {tuple(extra.shape)}")
    rc = lib.vm_selective_scan_fwd(_p(uu), _p(dd), _p(AA), _p(BB), _p(CC), _p(DD), _p(zz), _p(bb),
                                   int(delta_softplus), int(reverse), batch, dim, L, NP, G, _p(h0), _p(extra), _p(out),
                                   _p(last), torch.get_num_threads())
    if rc != 0:
        raise RuntimeError(f"selective scan CPU kernel failed (code {rc})")
    return out.to(u.dtype), last[..., :N].contiguous()


def scan_bwd(dout, u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, dlast=None,
             reverse=False, initial_state=None, return_out=False, buffers: dict | None = None):
    """Gradients ``(du, ddelta, dA, dB, dC, dD, dz, ddelta_bias)`` shaped like the inputs (None where absent),
    then ``d initial_state`` when an initial state is given, then the forward output when ``return_out``
    (computed on the way, so a caller that needs it runs no second forward scan). ``buffers``: contiguous fp32
    tensors of u's shape to write ``du``, ``ddelta``, ``dz`` and ``out`` into (those keys; for fp32 inputs they
    are the returned tensors), so that a caller reusing its buffers allocates nothing as long as the sequence."""
    lib = _lib()
    batch, dim, L = u.shape
    N = A.shape[1]
    uu, dd, AA, BB, CC, DD, zz, bb, NP = _prepare(u, delta, A, B, C, D, z, delta_bias)
    G = BB.shape[1]
    g = _f32(dout)
    gl = None if dlast is None else torch.nn.functional.pad(dlast.detach().float(), (0, NP - N)).contiguous()
    buffers = buffers or {}
    for key, t in buffers.items():
        if key not in ("du", "ddelta", "dz", "out") or t.dtype != torch.float32 or not t.is_contiguous() or t.shape != uu.shape:
            raise ValueError(f"scan_bwd: buffers[{key!r}] must be one of du/ddelta/dz/out, a contiguous fp32 "
                             f"tensor of shape {tuple(uu.shape)}")
    def output(key):   # the caller's buffer, else a new tensor (not allocated when the buffer is given)
        return buffers[key] if key in buffers else torch.empty_like(uu)

    du, ddelta = output("du"), output("ddelta")
    dz = output("dz") if z is not None else None
    f32 = dict(dtype=torch.float32)   # the C code writes fp32 whatever torch's default dtype is
    dA = torch.empty(batch, dim, NP, **f32)
    dD, dbias = torch.empty(batch, dim, **f32), torch.empty(batch, dim, **f32)
    dB, dC = torch.zeros_like(BB), torch.zeros_like(CC)
    h0 = _state(initial_state, NP)
    dh0 = torch.empty(batch, dim, NP, **f32) if h0 is not None else None
    out = output("out") if return_out else None
    rc = lib.vm_selective_scan_bwd(_p(uu), _p(dd), _p(AA), _p(BB), _p(CC), _p(DD), _p(zz), _p(bb),
                                   int(delta_softplus), int(reverse), batch, dim, L, NP, G, _p(h0), _p(g), _p(gl), _p(du),
                                   _p(ddelta), _p(dA), _p(dB), _p(dC), _p(dD), _p(dz), _p(dbias), _p(out), _p(dh0),
                                   torch.get_num_threads())
    if rc != 0:
        raise RuntimeError(f"selective scan CPU kernel backward failed (code {rc})")

    def bc_grad(grad, like):
        grad = grad[..., :N].transpose(-1, -2)                          # (b, G, N, L)
        return (grad.squeeze(1) if like.dim() == 3 else grad).to(like.dtype).contiguous()

    grads = (du.to(u.dtype), ddelta.to(delta.dtype), dA[..., :N].sum(0).to(A.dtype), bc_grad(dB, B), bc_grad(dC, C),
             None if D is None else dD.sum(0).to(D.dtype), None if z is None else dz.to(z.dtype),
             None if delta_bias is None else dbias.sum(0).to(delta_bias.dtype))
    if dh0 is not None:
        grads += (dh0[..., :N].to(initial_state.dtype),)
    return grads + (out.to(u.dtype),) if return_out else grads
