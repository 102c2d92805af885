"""Public selective-scan entry point (mamba-ssm's calling convention).

Today it validates shapes and runs the O(L) pure-PyTorch reference; the fast CPU/GPU kernels plug in
behind this same function, so callers never change.
"""
from __future__ import annotations

import torch

from .selective_scan_ref import selective_scan_ref


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


def selective_scan_fn(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                      C: torch.Tensor, D: torch.Tensor | None = None, z: torch.Tensor | None = None,
                      delta_bias: torch.Tensor | None = None, delta_softplus: bool = False,
                      return_last_state: bool = False):
    """Selective scan, ``out = scan(u, delta, A, B, C) + D*u``, gated by ``silu(z)``.

    See :func:`videomamba.ops.selective_scan_ref.selective_scan_ref` for the exact semantics.
    """
    _check_shapes(u, delta, A, B, C, D, z, delta_bias)
    return selective_scan_ref(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias,
                              delta_softplus=delta_softplus, return_last_state=return_last_state)
