"""Public selective-scan entry point (mamba-ssm's calling convention) and backend dispatch.

Backends:
  ``cpu``        native C++ kernel (OpenMP + SIMD), built on first use; CPU tensors.
  ``triton``     Triton kernel; CUDA tensors (or CPU tensors under ``TRITON_INTERPRET=1``, for tests).
  ``mamba_ssm``  mamba-ssm's CUDA kernel, when that package is importable (optional; a measured baseline,
                 never picked over ``triton``; no ``initial_state``; docs/gpu.md says how to install it).
  ``reference``  the O(L) pure-PyTorch oracle; any device.
``auto`` (default) picks cpu for CPU tensors and triton for CUDA tensors, falling back to the reference
for inputs a kernel does not cover (e.g. constant B/C). Override per call with ``backend=`` or globally
with ``VIDEOMAMBA_SCAN_BACKEND``; a backend that is asked for by name and cannot run raises.
"""
from __future__ import annotations

import os

import torch

from .selective_scan_cpu import MAX_STATE
from .selective_scan_ref import selective_scan_ref

# Which backends exist and can run here live in .backends, below both this module and the custom op.
from .backends import BACKENDS, ENV_VAR, _mamba_ssm_importable, _triton_importable, backend_available  # noqa: F401


def _check_shapes(u, delta, A, B, C, D, z, delta_bias):
    if u.dim() != 3:
        raise ValueError(f"selective_scan_fn: u must be (batch, dim, L), got shape {tuple(u.shape)}")
    batch, dim, L = u.shape
    if delta.shape != u.shape:
        raise ValueError(f"selective_scan_fn: delta shape {tuple(delta.shape)} != u shape {tuple(u.shape)}")
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f"selective_scan_fn: A must be (dim={dim}, N), got {tuple(A.shape)}")
    N = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        if t.dim() == 2:
            ok = tuple(t.shape) == (dim, N)
        elif t.dim() == 3:
            ok = tuple(t.shape) == (batch, N, L)
        elif t.dim() == 4:
            ok = t.shape[0] == batch and t.shape[2:] == (N, L) and dim % t.shape[1] == 0
        else:
            ok = False
        if not ok:
            raise ValueError(
                f"selective_scan_fn: {name} must be (dim, N), (batch, N, L) or (batch, G, N, L) with G | dim; "
                f"got {tuple(t.shape)} for batch={batch}, dim={dim}, N={N}, L={L}")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and tuple(t.shape) != (dim,):
            raise ValueError(f"selective_scan_fn: {name} must be (dim={dim},), got {tuple(t.shape)}")
    if z is not None and z.shape != u.shape:
        raise ValueError(f"selective_scan_fn: z shape {tuple(z.shape)} != u shape {tuple(u.shape)}")


def _refuse_forward_mode_ad(*tensors):
    """The kernels (and the reference's recurrence) define reverse-mode gradients only; torch.func
    transforms and forward-mode AD would otherwise see a silent zero tangent."""
    from torch.autograd import forward_ad

    for t in tensors:
        if t is None:
            continue
        if torch._C._functorch.is_functorch_wrapped_tensor(t) or (
                forward_ad._current_level >= 0 and forward_ad.unpack_dual(t).tangent is not None):
            raise NotImplementedError("selective_scan_fn supports reverse-mode autograd only (backward(), "
                                      "torch.autograd.grad); torch.func transforms and forward-mode AD are not "
                                      "implemented")


KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _kernel_covers(u, A, B, C) -> bool:
    """What the fast kernels compute: fp32 math (so no fp64), real A, input-dependent B/C, N <= 256."""
    return (u.dtype in KERNEL_DTYPES and not A.is_complex() and B.dim() >= 3 and C.dim() >= 3
            and A.shape[1] <= MAX_STATE)


def resolve_backend(backend: str | None, u, A, B, C) -> str:
    """The backend that will run: explicit argument, else ``$VIDEOMAMBA_SCAN_BACKEND``, else auto."""
    name = backend or os.environ.get(ENV_VAR) or "auto"
    if name not in BACKENDS:
        source = "backend argument" if backend else ENV_VAR
        raise ValueError(f"{source}={name!r} is not a scan backend; choose from {BACKENDS}")
    dev = u.device.type
    if name == "auto":
        if not _kernel_covers(u, A, B, C):
            return "reference"
        if dev == "cpu" and backend_available("cpu", dev):
            return "cpu"
        if dev == "cuda":
            if backend_available("triton", dev):
                return "triton"
            if backend_available("mamba_ssm", dev):
                return "mamba_ssm"
        return "reference"
    if not backend_available(name, dev):
        why = {"cpu": "needs CPU tensors and a C++ compiler to build the kernel (see the warning above)",
               "triton": "needs the triton package and CUDA tensors (or TRITON_INTERPRET=1 on CPU)",
               "mamba_ssm": "needs the mamba_ssm package and CUDA tensors"}.get(name, "")
        raise RuntimeError(f"scan backend {name!r} is not available for {dev} tensors here: {why}")
    if name in ("cpu", "triton", "mamba_ssm") and not _kernel_covers(u, A, B, C):
        raise ValueError(f"scan backend {name!r} needs fp32/bf16/fp16 inputs, input-dependent B/C, real A and "
                         f"N <= 256 (got {u.dtype}, B {tuple(B.shape)}); use backend='reference'")
    return name


def selective_scan_fn(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                      C: torch.Tensor, D: torch.Tensor | None = None, z: torch.Tensor | None = None,
                      delta_bias: torch.Tensor | None = None, delta_softplus: bool = False,
                      return_last_state: bool = False, backend: str | None = None, reverse: bool = False,
                      initial_state: torch.Tensor | None = None):
    """Selective scan, ``out = scan(u, delta, A, B, C) + D*u``, gated by ``silu(z)``.

    Semantics: :func:`videomamba.ops.selective_scan_ref.selective_scan_ref`. ``backend``: see module doc.
    Our extensions: ``reverse`` scans from the last position to the first without flipping copies;
    ``initial_state (batch, dim, N)`` starts the recurrence from a given state (differentiable), so that a
    sequence can be scanned in pieces, each starting from the previous piece's last state.
    """
    _check_shapes(u, delta, A, B, C, D, z, delta_bias)
    if initial_state is not None and tuple(initial_state.shape) != (u.shape[0], u.shape[1], A.shape[1]):
        raise ValueError(f"selective_scan_fn: initial_state must be (batch, dim, N) = "
                         f"{(u.shape[0], u.shape[1], A.shape[1])}, got {tuple(initial_state.shape)}")
    if not torch.compiler.is_compiling():
        _refuse_forward_mode_ad(u, delta, A, B, C, D, z, delta_bias, initial_state)
    name = resolve_backend(backend, u, A, B, C)
    if name == "reference":
        return selective_scan_ref(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias,
                                  delta_softplus=delta_softplus, return_last_state=return_last_state,
                                  reverse=reverse, initial_state=initial_state)
    if name == "mamba_ssm":
        return _mamba_ssm_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, reverse,
                               initial_state)
    from .scan_op import selective_scan

    out, last = selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, name,
                               initial_state=initial_state)
    return (out, last) if return_last_state else out


def _mamba_ssm_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, reverse, initial_state):
    """mamba-ssm's ``selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
    return_last_state=False)`` (mamba_ssm/ops/selective_scan_interface.py, 2.x). Its contract, checked in its
    csrc/selective_scan/selective_scan.cpp: u (batch, dim, L) in fp32/fp16/bf16; delta, z and input-dependent
    B/C ((batch, N, L) or (batch, G, N, L)) in u's dtype; A (dim, N), D and delta_bias (dim,) in fp32; N <= 256.
    No initial state and no reverse flag: a reverse scan runs on flipped copies (u, delta, B, C, z along L) and
    its output is flipped back. Its backward ignores the gradient of the returned last state."""
    if initial_state is not None:
        raise NotImplementedError("selective_scan_fn: the mamba_ssm backend takes no initial_state; "
                                  "use backend='triton' or 'reference'")
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as mamba_fn

    dtype = u.dtype   # its kernel refuses any other dtype for these (TORCH_CHECK): a mixed call is cast
    delta, z = delta.to(dtype), None if z is None else z.to(dtype)
    B, C = (t.to(dtype) if t.dim() >= 3 else t.float() for t in (B, C))
    A, D, delta_bias = A.float(), None if D is None else D.float(), None if delta_bias is None else delta_bias.float()
    if reverse:
        flip = lambda t: t if t is None or t.dim() < 3 else t.flip(-1)  # noqa: E731
        u, delta, B, C, z = flip(u), flip(delta), flip(B), flip(C), flip(z)
    res = mamba_fn(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
                   return_last_state=return_last_state)
    if not reverse:
        return res
    return (res[0].flip(-1), res[1]) if return_last_state else res.flip(-1)
