"""The bidirectional mixer as functions of its tensors: input projection, one direction's conv + x/dt
projections + scan, the gated sum of both directions, output projection. :class:`.bimamba.BiMamba` (the
module), :mod:`.mixer_chunked` (chunked inference) and :mod:`.mixer_recompute` (lean training) all
compose these, so each path computes the same thing the same way."""
from __future__ import annotations

import os
from typing import NamedTuple

import torch

from ..ops import causal_conv1d_fn, fused_mixer_cpu, selective_scan_fn


class DirectionParams(NamedTuple):
    """The tensors of one scan direction."""
    conv_weight: torch.Tensor
    conv_bias: torch.Tensor | None
    x_proj_weight: torch.Tensor
    dt_proj_weight: torch.Tensor
    dt_proj_bias: torch.Tensor
    A_log: torch.Tensor
    D: torch.Tensor


def project_in(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    """in_proj of ``h (b, L, D)`` as two channel-major halves ``x, z (b, Di, L)``, each contiguous."""
    h_t = h.transpose(1, 2)                                               # (b, D, L) view
    w_x, w_z = weight.chunk(2, dim=0)
    x, z = _in_proj_matmul(w_x, h_t), _in_proj_matmul(w_z, h_t)
    if bias is not None:
        b_x, b_z = bias.chunk(2)
        x, z = x + b_x[:, None], z + b_z[:, None]
    return x, z


def project_in_half(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, half: int | None,
                    out: torch.Tensor | None = None) -> torch.Tensor:
    """One half of :func:`project_in` alone: x (``half=0``) or z (``half=1``), or both as one ``(b, 2Di, L)``
    product (``half=None``), written into ``out`` when given (a contiguous tensor of that shape)."""
    d_inner = weight.shape[0] // 2
    rows = slice(0, 2 * d_inner) if half is None else slice(half * d_inner, (half + 1) * d_inner)
    x = _in_proj_matmul(weight[rows], h.transpose(1, 2), out=out)
    if bias is None:
        return x
    return x.add_(bias[rows, None]) if out is not None else x + bias[rows, None]


def direction_inputs(x: torch.Tensor, p: DirectionParams, dt_rank: int, d_state: int, reverse: bool):
    """Causal (``reverse``: anti-causal) depthwise conv + SiLU of ``x (b, Di, L)``, then the input-dependent
    ``dt`` (before its bias, which the scan adds), ``B`` and ``C``. Channel-major matmuls keep every
    intermediate contiguous (no transposes to copy)."""
    xc = causal_conv1d_fn(x, p.conv_weight, p.conv_bias, activation="silu", reverse=reverse)   # (b, Di, L)
    x_dbl = _weight_matmul(p.x_proj_weight, xc)                                               # (b, R + 2N, L)
    dt, B, C = torch.split(x_dbl, [dt_rank, d_state, d_state], dim=1)
    return xc, _weight_matmul(p.dt_proj_weight, dt), B, C


def scan_direction(xc, dt, B, C, p: DirectionParams, z, reverse: bool, initial_state=None,
                   return_last_state: bool = False):
    """The selective scan of one direction (gated by ``silu(z)`` when z is given). A, D and the dt bias
    enter in fp32 as in the official code (fp64 models keep fp64, so gradcheck sees exact derivatives)."""
    f = torch.float64 if p.A_log.dtype == torch.float64 else torch.float32
    A = -torch.exp(p.A_log.to(f))
    return selective_scan_fn(xc, dt, A, B, C, p.D.to(f), z=z, delta_bias=p.dt_proj_bias.to(f),
                             delta_softplus=True, reverse=reverse, initial_state=initial_state,
                             return_last_state=return_last_state)


def gated_scan_sum(x: torch.Tensor, z: torch.Tensor, params: tuple[DirectionParams, DirectionParams], dt_rank: int,
                   d_state: int, divide: bool) -> torch.Tensor:
    """``silu(z) * (y_forward + y_backward)`` (``/ 2`` when ``divide``) of channel-major ``x, z (b, Di, L)``.
    Without gradients, on the CPU kernels everything after in_proj is one fused pass
    (:mod:`videomamba.ops.fused_mixer_cpu`) and on the Triton backend both directions share one output pass
    (:func:`videomamba.ops.selective_scan_triton.scan_fwd_pair`); otherwise one scan per direction."""
    p_f, p_b = params
    if fused_applies(x, p_f):
        return fused_mixer_cpu.mixer_fwd(x, fused_direction(p_f), fused_direction(p_b), z=z,
                                         scale=0.5 if divide else 1.0)
    if _pair_applies(x, p_f):
        from ..ops import selective_scan_triton

        f = torch.float64 if p_f.A_log.dtype == torch.float64 else torch.float32
        dirs = []
        for reverse, p in ((False, p_f), (True, p_b)):
            xc, dt, B, C = direction_inputs(x, p, dt_rank, d_state, reverse)
            dirs.append(dict(u=xc, delta=dt, A=-torch.exp(p.A_log.to(f)), B=B, C=C, D=p.D.to(f),
                             delta_bias=p.dt_proj_bias.to(f)))
        return selective_scan_triton.scan_fwd_pair(dirs[0], dirs[1], z=z, delta_softplus=True, divide=divide)
    y = None
    for reverse, p in ((False, p_f), (True, p_b)):
        xc, dt, B, C = direction_inputs(x, p, dt_rank, d_state, reverse)
        yd = scan_direction(xc, dt, B, C, p, z, reverse)
        y = yd if y is None else y + yd
        del xc, dt, B, C, yd
    return y / 2 if divide else y


# VIDEOMAMBA_FUSED_MIXER=0 turns the fused CPU mixer off (the unfused kernels then run), e.g. to compare them.
FUSED_ENABLED = os.environ.get("VIDEOMAMBA_FUSED_MIXER", "1").strip().lower() not in ("0", "false", "no")


def fused_applies(x: torch.Tensor, p: DirectionParams) -> bool:
    """The fused CPU mixer runs where the CPU scan kernel would, on fp32 activations and parameters, when
    nothing needs a gradient (the unfused composition above is its reference and the path for the rest)."""
    from ..ops.scan_op import _eager

    if (not FUSED_ENABLED or torch.is_grad_enabled() or x.device.type != "cpu" or x.dtype != torch.float32
            or p.A_log.dtype != torch.float32 or p.x_proj_weight.dtype != torch.float32 or not _eager(x)):
        return False
    return scan_backend_for(x, p.A_log) == "cpu" and fused_mixer_cpu.available()


def fused_direction(p: DirectionParams, initial_state: torch.Tensor | None = None) -> "fused_mixer_cpu.FusedDirection":
    """One direction's tensors as :func:`videomamba.ops.fused_mixer_cpu.mixer_fwd` takes them."""
    return fused_mixer_cpu.FusedDirection(p.conv_weight, p.conv_bias, p.x_proj_weight, p.dt_proj_weight,
                                          p.dt_proj_bias, p.A_log, p.D, initial_state)


def _pair_applies(x: torch.Tensor, p: DirectionParams) -> bool:
    """The fused two-direction pass runs where the Triton scan would, when nothing needs its gradient."""
    from ..ops.scan_op import _eager

    if torch.is_grad_enabled() or not _eager(x) or p.A_log.dtype == torch.float64:
        return False
    return scan_backend_for(x, p.A_log) == "triton"


def scan_backend_for(x: torch.Tensor, A_log: torch.Tensor) -> str:
    """The scan backend a mixer's scans resolve to for activations like ``x`` (its dtype and device) and
    parameters ``A_log (d_inner, d_state)``: tiny stand-ins of the scan inputs, nothing computed."""
    from ..ops.selective_scan import resolve_backend

    d_inner, d_state = A_log.shape
    bc = x.new_empty((1, d_state, 1))
    return resolve_backend(None, x.new_empty((1, d_inner, 1)), A_log, bc, bc)


def project_out(y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                out: torch.Tensor | None = None) -> torch.Tensor:
    """out_proj of channel-major ``y (b, Di, L)`` -> ``(b, L, D)`` (into ``out`` when given)."""
    if out is None:
        out = torch.matmul(y.transpose(1, 2), weight.t())
        return out if bias is None else out + bias
    torch.matmul(y.transpose(1, 2), weight.t(), out=out)
    return out if bias is None else out.add_(bias)


# Positions per product of in_proj on CPU. A channel-major result of more positions is computed in balanced
# blocks of columns: MKL's product into a (b, 2Di, L) result slows down past about a thousand positions (768 x
# 1,569 for VideoMamba-Ti's 8 frames: 0.83-0.92x the time of the two half-height products in blocks of 400-800
# columns, 0.77-0.90x at 3,137; up to 1,024 positions the blocks measure as the whole product).
IN_PROJ_COLUMNS = 800


def _in_proj_matmul(weight: torch.Tensor, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`_weight_matmul` of in_proj: in blocks of at most :data:`IN_PROJ_COLUMNS` positions on CPU."""
    L = x.shape[-1]
    recording = torch.is_grad_enabled() and (weight.requires_grad or x.requires_grad)   # (out= has no autograd)
    if L <= IN_PROJ_COLUMNS or x.device.type != "cpu" or recording:
        return _weight_matmul(weight, x, out=out)
    if out is None:
        out = x.new_empty((x.shape[0], weight.shape[0], L))
    blocks = -(-L // IN_PROJ_COLUMNS)
    size = -(-L // blocks)
    for start in range(0, L, size):
        _weight_matmul(weight, x[..., start:start + size], out=out[..., start:start + size])
    return out


def _weight_matmul(weight: torch.Tensor, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``weight (out, in) @ x (b, in, L) -> (b, out, L)`` as one bmm writing a contiguous result
    (``torch.matmul`` of a 2-D by a 3-D tensor computes the transpose and copies it)."""
    return torch.bmm(weight.unsqueeze(0).expand(x.shape[0], -1, -1), x, out=out)
