"""Pure-PyTorch reference selective scan: the oracle every fast kernel is tested against.

Semantics follow mamba-ssm's ``selective_scan_fn``::

    delta = softplus(delta + delta_bias)            (each step optional)
    h_t   = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t
    y_t   = <C_t, h_t> + D * u_t
    out   = y * silu(z)                             (if z is given)

All state math is fp32 (fp64 stays fp64) whatever the input dtype; the output has u's dtype.

Why not a Python loop under autograd? Indexing a (.., L, ..) tensor step by step makes autograd
materialise a full-size zero gradient per step, which is what makes mamba-ssm's reference
quadratic in L during backward. Here everything except the recurrence is vectorised over L, and
the recurrence is one small autograd Function whose backward is the reverse-time adjoint scan,
so forward and backward are both O(L).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


class LinearRecurrence(torch.autograd.Function):
    """``h[t] = a[t] * h[t-1] + b[t]`` along dim 0 with ``h[-1] = 0``.

    ``a`` and ``b`` are ``(L, ...)`` tensors of the same shape. Backward is the adjoint recurrence
    ``g[t] = dh[t] + a[t+1] * g[t+1]`` run in reverse time, giving ``db = g`` and
    ``da[t] = g[t] * h[t-1]``. Each step is one in-place op on a contiguous time slice.
    """

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a = a.contiguous()
        h = b.contiguous().clone()
        a_t, h_t = a.unbind(0), h.unbind(0)
        for t in range(1, len(h_t)):
            h_t[t].addcmul_(a_t[t], h_t[t - 1])
        ctx.save_for_backward(a, h)
        return h

    @staticmethod
    def backward(ctx, grad_h: torch.Tensor):
        a, h = ctx.saved_tensors
        g = grad_h.contiguous().clone()
        a_t, g_t = a.unbind(0), g.unbind(0)
        for t in range(len(g_t) - 2, -1, -1):
            g_t[t].addcmul_(a_t[t + 1], g_t[t + 1])
        grad_a = torch.zeros_like(a)
        torch.mul(g[1:], h[:-1], out=grad_a[1:])
        return grad_a, g


def linear_recurrence(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """All states of ``h[t] = a[t] * h[t-1] + b[t]`` (time on dim 0), differentiable, O(L)."""
    return LinearRecurrence.apply(a, b)


def _state_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                       delta_softplus=False, return_last_state=False, reverse=False, initial_state=None):
    """Reference selective scan (see module docstring).

    Args:
        u, delta: ``(batch, dim, L)``.
        A: ``(dim, N)``, real.
        B, C: input-dependent ``(batch, N, L)`` or grouped ``(batch, G, N, L)`` (G divides dim),
            or constant ``(dim, N)``.
        D: ``(dim,)`` skip connection; z: ``(batch, dim, L)`` gate; delta_bias: ``(dim,)``.
        reverse: scan from the last position to the first (``flip(scan(flip(inputs)))``); the last
            state is then the one after position 0.
        initial_state: ``(batch, dim, N)`` state before the first scan step (zeros when None); a
            sequence scanned in pieces passes each piece's last state to the next.
    Returns:
        ``out (batch, dim, L)`` in u's dtype, and with ``return_last_state`` also the final state
        ``(batch, dim, N)`` in the state dtype (fp32, or fp64 for fp64 inputs).
    """
    if reverse:
        flip = lambda t: t if t is None or t.dim() < 3 else t.flip(-1)  # noqa: E731  (time is last)
        res = selective_scan_ref(flip(u), flip(delta), A, flip(B), flip(C), D, flip(z), delta_bias,
                                 delta_softplus, return_last_state, initial_state=initial_state)
        return (res[0].flip(-1), res[1]) if return_last_state else res.flip(-1)
    dtype_in = u.dtype
    sd = _state_dtype(u)
    batch, dim, L = u.shape
    N = A.shape[-1]
    if A.is_complex():
        raise NotImplementedError("selective_scan_ref: complex A is not supported")
    u = u.to(sd)
    delta = delta.to(sd)
    A = A.to(sd)
    if delta_bias is not None:
        delta = delta + delta_bias.to(sd)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)

    # Time-major layout (L, batch, dim, N): each recurrence step is one contiguous slab.
    delta_t = delta.permute(2, 0, 1).contiguous()                        # (L, b, d)
    du_t = delta_t * u.permute(2, 0, 1)                                  # (L, b, d)
    delta_a = torch.exp(delta_t.unsqueeze(-1) * A)                       # (L, b, d, N)
    if B.dim() == 2:                                                     # constant B (d, N)
        delta_bu = du_t.unsqueeze(-1) * B.to(sd)
    else:
        Bg = _grouped(B).to(sd).permute(3, 0, 1, 2)                      # (L, b, G, N)
        G = Bg.shape[2]
        delta_bu = (du_t.view(L, batch, G, dim // G, 1) * Bg.unsqueeze(3)).view(L, batch, dim, N)

    if initial_state is not None:   # h_0 = a_0 * h_init + b_0; the rest of the recurrence is unchanged
        first = delta_bu[0] + delta_a[0] * initial_state.to(sd)
        delta_bu = torch.cat((first[None], delta_bu[1:]))
    h = linear_recurrence(delta_a, delta_bu)                             # (L, b, d, N)

    if C.dim() == 2:
        y = torch.einsum("lbdn,dn->bdl", h, C.to(sd))
    else:
        Cg = _grouped(C).to(sd)                                          # (b, G, N, L)
        G = Cg.shape[1]
        y = torch.einsum("lbghn,bgnl->bghl", h.view(L, batch, G, dim // G, N), Cg)
        y = y.reshape(batch, dim, L)

    out = y if D is None else y + u * D.to(sd)[:, None]
    if z is not None:
        out = out * F.silu(z.to(sd))
    out = out.to(dtype_in)
    if return_last_state:
        return out, h[-1]
    return out


def _grouped(BC: torch.Tensor) -> torch.Tensor:
    """View input-dependent B/C as ``(batch, G, N, L)``."""
    return BC.unsqueeze(1) if BC.dim() == 3 else BC
