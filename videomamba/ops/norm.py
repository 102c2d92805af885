"""RMSNorm / LayerNorm with mamba-ssm's fused add+norm semantics, in plain PyTorch.

``add_norm(x, residual)`` computes ``r = x + residual`` and ``norm(r)`` in fp32, returns the
normalised value in x's dtype and (with ``prenorm``) the new residual, kept in fp32 when
``residual_in_fp32`` (the official VideoMamba setting) so the residual stream never loses precision
under bf16/fp16 autocast.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import rms_norm_cpu


def rms_norm_ref(x: torch.Tensor, weight: torch.Tensor | None, eps: float = 1e-5) -> torch.Tensor:
    """``x * rsqrt(mean(x^2) + eps) * weight`` over the last dim, computed in x's dtype."""
    y = x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)
    return y if weight is None else y * weight


def add_norm(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None = None,
             residual: torch.Tensor | None = None, eps: float = 1e-5, prenorm: bool = False,
             residual_in_fp32: bool = False, is_rms_norm: bool = True):
    """Fused ``residual += x; y = norm(residual)`` semantics (mamba-ssm ``layer_norm_fn``)."""
    out_dtype = x.dtype
    compute_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    r = x.to(compute_dtype)
    if residual is not None:
        r = r + residual.to(compute_dtype)
    w = None if weight is None else weight.to(compute_dtype)
    if is_rms_norm:
        y = rms_norm_ref(r, w, eps)
        if bias is not None:
            y = y + bias.to(compute_dtype)
    else:
        b = None if bias is None else bias.to(compute_dtype)
        y = F.layer_norm(r, r.shape[-1:], w, b, eps)
    y = y.to(out_dtype)
    if not prenorm:
        return y
    # mamba-ssm: an incoming residual keeps its dtype; a new one is fp32 or x's dtype.
    if residual is not None:
        res_dtype = residual.dtype
    else:
        res_dtype = torch.float32 if residual_in_fp32 and x.dtype != torch.float64 else out_dtype
    return y, r.to(res_dtype)


class RMSNorm(nn.Module):
    """RMSNorm with a weight only (state_dict key ``weight``), eps 1e-5 by default."""

    def __init__(self, hidden_size: int, eps: float = 1e-5, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size, device=device, dtype=dtype))
        self.register_parameter("bias", None)

    def forward(self, x, residual=None, prenorm=False, residual_in_fp32=False):
        return add_norm(x, self.weight, None, residual=residual, eps=self.eps, prenorm=prenorm,
                        residual_in_fp32=residual_in_fp32, is_rms_norm=True)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def norm_into(norm: nn.Module, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``norm(x)`` written into ``out`` (x's shape, dtype and device): the same operations as :func:`add_norm`
    without a residual, but no temporary as large as x (no-grad paths that reuse their buffers). fp32 and fp64
    RMSNorm give bit-identical results; other cases fall back to :func:`norm_forward` and a copy."""
    if isinstance(norm, RMSNorm) and x.dtype in (torch.float32, torch.float64) and norm.weight.dtype == x.dtype:
        torch.mul(x, x, out=out)                                   # = x.pow(2) (pow of 2 is a multiply)
        scale = out.mean(dim=-1, keepdim=True).add_(norm.eps).rsqrt_()
        return torch.mul(x, scale, out=out).mul_(norm.weight)
    return out.copy_(norm_forward(norm, x))


def add_norm_into(norm: nn.Module, stream: torch.Tensor, add: torch.Tensor | None, out: torch.Tensor) -> torch.Tensor:
    """``stream += add`` (when given), then ``out = norm(stream)``: the no-gradient block loop's residual update and
    the next block's norm. fp32 RMSNorm on CPU takes one native pass per row (:mod:`.rms_norm_cpu`; ``out`` may
    then be ``add`` itself); everything else the torch ops of :func:`norm_into`."""
    if isinstance(norm, RMSNorm) and rms_norm_cpu.add_rms_norm_(stream, add, norm.weight, norm.eps, out):
        return out
    if add is not None:
        stream += add
    return norm_into(norm, stream, out)


def norm_forward(norm: nn.Module, x, residual=None, prenorm=False, residual_in_fp32=False):
    """Fused add+norm for either an :class:`RMSNorm` or an ``nn.LayerNorm``."""
    if isinstance(norm, RMSNorm):
        return norm(x, residual=residual, prenorm=prenorm, residual_in_fp32=residual_in_fp32)
    if isinstance(norm, nn.LayerNorm):
        return add_norm(x, norm.weight, norm.bias, residual=residual, eps=norm.eps, prenorm=prenorm,
                        residual_in_fp32=residual_in_fp32, is_rms_norm=False)
    raise TypeError(f"norm_forward: unsupported norm {type(norm).__name__}")
