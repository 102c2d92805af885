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

from .mixer_chunked import chunked_inference_applies, mixer_chunked
from .mixer_math import (  # noqa: F401  (the helpers' old home re-exports them)
    DirectionParams, project_in, project_in_half, direction_inputs, scan_direction, gated_scan_sum, _pair_applies, scan_backend_for, project_out, _weight_matmul)


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
        self.inference_chunk = 2048  # tokens per chunk of the no-grad path (mixer_chunked.py); up to two run whole

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

    def __getstate__(self):
        # the fused kernel's packed parameters (mixer_chunked._fused_pair) hold ctypes pointers: a copy packs anew
        state = dict(super().__getstate__())
        state.pop("_fused_pair_cache", None)
        return state

    # ------------------------------------------------------------------ math on tensors
    def direction_params(self, reverse: bool) -> "DirectionParams":
        if reverse:
            return DirectionParams(self.conv1d_b.weight, self.conv1d_b.bias,
                                   self.x_proj_b.weight, self.dt_proj_b.weight, self.dt_proj_b.bias, self.A_b_log,
                                   self.D_b)
        return DirectionParams(self.conv1d.weight, self.conv1d.bias, self.x_proj.weight, self.dt_proj.weight,
                               self.dt_proj.bias, self.A_log, self.D)

    def direction_tensors(self) -> tuple | None:
        """The tensors of both directions' :meth:`direction_params`, in that order, read from the parameter dicts:
        the whole-sequence path checks them per block and call, where ``nn.Module`` attribute lookups cost about a
        microsecond each. None when a submodule keeps its weights elsewhere (a wrapped or quantised layer)."""
        try:
            out = []
            for conv, x_proj, dt_proj, A_log, D in (("conv1d", "x_proj", "dt_proj", "A_log", "D"),
                                                    ("conv1d_b", "x_proj_b", "dt_proj_b", "A_b_log", "D_b")):
                c, d = self._modules[conv]._parameters, self._modules[dt_proj]._parameters
                out += [c["weight"], c.get("bias"), self._modules[x_proj]._parameters["weight"], d["weight"],
                        d["bias"], self._parameters[A_log], self._parameters[D]]
            return tuple(out)
        except (KeyError, AttributeError, TypeError):
            return None

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
