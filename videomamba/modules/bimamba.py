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

    def _scan_direction(self, x, z, conv1d, x_proj, dt_proj, A_log, D, reverse: bool):
        """One direction: depthwise conv + SiLU, input-dependent (dt, B, C), selective scan gated by z.

        The backward direction (``reverse=True``) runs the anti-causal conv and the reversed scan on the
        un-flipped sequence, which equals the official flip -> scan -> flip without the copies.
        Channel-major matmuls keep every intermediate contiguous (no transposes to copy).
        """
        x = causal_conv1d_fn(x, conv1d.weight, conv1d.bias, activation="silu", reverse=reverse)  # (b, Di, L)
        x_dbl = _weight_matmul(x_proj.weight, x)                              # (b, R + 2N, L)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=1)
        dt = _weight_matmul(dt_proj.weight, dt)                               # (b, Di, L); bias in the scan
        A = -torch.exp(A_log.float())
        return selective_scan_fn(x, dt, A, B, C, D.float(), z=z, delta_bias=dt_proj.bias.float(),
                                 delta_softplus=True, reverse=reverse)

    def forward(self, hidden_states: torch.Tensor, inference_params=None, T: int = 1) -> torch.Tensor:
        """``(batch, L, d_model) -> (batch, L, d_model)``. ``inference_params``/``T`` are accepted
        for signature compatibility with the official mixer and ignored: both directions always run."""
        h_t = hidden_states.transpose(1, 2)                                   # (b, D, L) view
        w_x, w_z = self.in_proj.weight.chunk(2, dim=0)
        x, z = _weight_matmul(w_x, h_t), _weight_matmul(w_z, h_t)             # (b, Di, L) each, contiguous
        if self.in_proj.bias is not None:
            b_x, b_z = self.in_proj.bias.chunk(2)
            x, z = x + b_x[:, None], z + b_z[:, None]
        y = self._scan_direction(x, z, self.conv1d, self.x_proj, self.dt_proj, self.A_log, self.D, reverse=False)
        y = y + self._scan_direction(x, z, self.conv1d_b, self.x_proj_b, self.dt_proj_b, self.A_b_log, self.D_b,
                                     reverse=True)
        if self.divide_output:
            y = y / 2
        out = torch.matmul(y.transpose(1, 2), self.out_proj.weight.t())       # (b, L, D)
        return out if self.out_proj.bias is None else out + self.out_proj.bias

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, d_inner={self.d_inner}, d_state={self.d_state}, "
                f"dt_rank={self.dt_rank}, divide_output={self.divide_output}")


def _weight_matmul(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``weight (out, in) @ x (b, in, L) -> (b, out, L)`` as one bmm writing a contiguous result
    (``torch.matmul`` of a 2-D by a 3-D tensor computes the transpose and copies it)."""
    return torch.bmm(weight.unsqueeze(0).expand(x.shape[0], -1, -1), x)
