"""Bidirectional Mamba mixer with the official VideoMamba (Vim "v2") parameter layout.

Shared between the two scan directions: ``in_proj`` (so the x and z streams) and ``out_proj``.
Separate per direction: the causal depthwise conv, ``x_proj``, ``dt_proj``, ``A_log``, ``D``
(the backward direction's copies carry a ``_b`` suffix). The backward direction scans the
time-reversed sequence; its result is flipped back and summed with the forward one::

    out = out_proj( silu(z) * (y_fwd + flip(y_bwd)) )          (divide_output=False, the checkpoints)
  (computed without flips: the backward direction runs an anti-causal conv and a reversed scan)
    out = out_proj( silu(z) * (y_fwd + flip(y_bwd)) / 2 )      (divide_output=True, Vim's bf16 fix)
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn as nn

from ..ops import causal_conv1d_fn, selective_scan_fn


class BiMamba(nn.Module):
    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: int | str = "auto", dt_min: float = 1e-3, dt_max: float = 0.1,
                 dt_init: str = "random", dt_scale: float = 1.0, dt_init_floor: float = 1e-4,
                 conv_bias: bool = True, bias: bool = False, divide_output: bool = False,
                 use_fast_path: bool = True, layer_idx: int | None = None, device=None, dtype=None):
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.expand = expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.divide_output = divide_output
        self.layer_idx = layer_idx
        self.use_fast_path = use_fast_path  # accepted for the official signature; every path is exact
        self.inference_chunk = 1024  # tokens per chunk of the no-grad path (mixer_chunked.py)

        # Own parameters first: this fixes the official state_dict order.
        A = torch.arange(1, d_state + 1, dtype=torch.float32, device=device).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(self.d_inner, device=device))
        self.A_b_log = nn.Parameter(torch.log(A.clone()))
        self.D_b = nn.Parameter(torch.ones(self.d_inner, device=device))
        for p in (self.A_log, self.D, self.A_b_log, self.D_b):
            p._no_weight_decay = True

        self.in_proj = nn.Linear(d_model, self.d_inner * 2, bias=bias, **fk)
        self.conv1d, self.x_proj, self.dt_proj = self._direction_modules(conv_bias, fk)
        self._init_dt_proj(self.dt_proj, dt_init, dt_scale, dt_min, dt_max, dt_init_floor)
        self.conv1d_b, self.x_proj_b, self.dt_proj_b = self._direction_modules(conv_bias, fk)
        self._init_dt_proj(self.dt_proj_b, dt_init, dt_scale, dt_min, dt_max, dt_init_floor)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **fk)

    def _direction_modules(self, conv_bias, fk):
        conv = nn.Conv1d(self.d_inner, self.d_inner, kernel_size=self.d_conv, groups=self.d_inner,
                         padding=self.d_conv - 1, bias=conv_bias, **fk)
        x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * self.d_state, bias=False, **fk)
        dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True, **fk)
        return conv, x_proj, dt_proj

    def _init_dt_proj(self, dt_proj, dt_init, dt_scale, dt_min, dt_max, dt_init_floor):
        """Mamba's own dt init (VisionMamba's init later overrides it, as the official code does)."""
        std = self.dt_rank ** -0.5 * dt_scale
        if dt_init == "constant":
            nn.init.constant_(dt_proj.weight, std)
        elif dt_init == "random":
            nn.init.uniform_(dt_proj.weight, -std, std)
        else:
            raise ValueError(f"BiMamba: dt_init must be 'constant' or 'random', got {dt_init!r}")
        dt = torch.exp(torch.rand(self.d_inner, device=dt_proj.weight.device)
                       * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=dt_init_floor)
        inv_dt = dt + torch.log(-torch.expm1(-dt))  # inverse of softplus
        with torch.no_grad():
            dt_proj.bias.copy_(inv_dt)
        dt_proj.bias._no_reinit = True

    # ------------------------------------------------------------------ math on tensors
    def direction_params(self, reverse: bool) -> "DirectionParams":
        if reverse:
            return DirectionParams(self.conv1d_b.weight, self.conv1d_b.bias,
                                   self.x_proj_b.weight, self.dt_proj_b.weight, self.dt_proj_b.bias, self.A_b_log,
                                   self.D_b)
        return DirectionParams(self.conv1d.weight, self.conv1d.bias, self.x_proj.weight, self.dt_proj.weight,
                               self.dt_proj.bias, self.A_log, self.D)

    def project_in(self, h: torch.Tensor, weight=None, bias=None):
        """``h (b, L, D) -> x, z (b, Di, L)``, each contiguous."""
        return project_in(h, self.in_proj.weight if weight is None else weight,
                          self.in_proj.bias if weight is None else bias)

    def direction_inputs(self, x: torch.Tensor, p: "DirectionParams", reverse: bool):
        """Depthwise conv + SiLU, then the input-dependent ``(dt, B, C)`` of one direction."""
        return direction_inputs(x, p, self.dt_rank, self.d_state, reverse)

    def forward(self, hidden_states: torch.Tensor, inference_params=None, T: int = 1) -> torch.Tensor:
        """``(batch, L, d_model) -> (batch, L, d_model)``. ``inference_params``/``T`` are accepted
        for signature compatibility with the official mixer and ignored: both directions always run.
        Without gradients (eager ``torch.no_grad`` / ``inference_mode``) a sequence longer than
        ``inference_chunk`` runs in chunks (:mod:`.mixer_chunked`): same result, a working set
        independent of L."""
        from .mixer_chunked import chunked_inference_applies, mixer_chunked

        if chunked_inference_applies(self, hidden_states):
            out = torch.empty_like(hidden_states)
            mixer_chunked(self, hidden_states, out=out)
            return out
        x, z = self.project_in(hidden_states)
        y = gated_scan_sum(x, z, (self.direction_params(False), self.direction_params(True)), self.dt_rank,
                           self.d_state, self.divide_output)
        return project_out(y, self.out_proj.weight, self.out_proj.bias)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, d_inner={self.d_inner}, d_state={self.d_state}, "
                f"dt_rank={self.dt_rank}, divide_output={self.divide_output}")


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
    x, z = _weight_matmul(w_x, h_t), _weight_matmul(w_z, h_t)
    if bias is not None:
        b_x, b_z = bias.chunk(2)
        x, z = x + b_x[:, None], z + b_z[:, None]
    return x, z


def project_in_half(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, half: int) -> torch.Tensor:
    """One half of :func:`project_in` alone: x (``half=0``) or z (``half=1``)."""
    d_inner = weight.shape[0] // 2
    rows = slice(half * d_inner, (half + 1) * d_inner)
    x = _weight_matmul(weight[rows], h.transpose(1, 2))
    return x if bias is None else x + bias[rows, None]


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
    Without gradients on the Triton backend both directions share one output pass
    (:func:`videomamba.ops.selective_scan_triton.scan_fwd_pair`); otherwise one scan per direction."""
    p_f, p_b = params
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


def project_out(y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """out_proj of channel-major ``y (b, Di, L)`` -> ``(b, L, D)``."""
    out = torch.matmul(y.transpose(1, 2), weight.t())
    return out if bias is None else out + bias


def _weight_matmul(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``weight (out, in) @ x (b, in, L) -> (b, out, L)`` as one bmm writing a contiguous result
    (``torch.matmul`` of a 2-D by a 3-D tensor computes the transpose and copies it)."""
    return torch.bmm(weight.unsqueeze(0).expand(x.shape[0], -1, -1), x)
