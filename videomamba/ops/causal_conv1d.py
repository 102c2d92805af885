"""Depthwise causal 1-D convolution (causal-conv1d's ``causal_conv1d_fn``), pure PyTorch."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def causal_conv1d_fn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                     activation: str | None = None) -> torch.Tensor:
    """``y[:, c, t] = bias[c] + sum_k weight[c, k] * x[:, c, t - (K-1) + k]`` (zero left padding).

    Args:
        x: ``(batch, dim, L)``. weight: ``(dim, K)`` or ``(dim, 1, K)``. bias: ``(dim,)``.
        activation: ``None`` or ``"silu"``/``"swish"``.
    """
    if weight.dim() == 3:
        weight = weight.squeeze(1)
    dim, K = weight.shape
    if x.dim() != 3 or x.shape[1] != dim:
        raise ValueError(f"causal_conv1d_fn: x must be (batch, {dim}, L), got {tuple(x.shape)}")
    if activation not in (None, "silu", "swish"):
        raise ValueError(f"causal_conv1d_fn: activation must be None, 'silu' or 'swish', got {activation!r}")
    L = x.shape[-1]
    y = F.conv1d(x, weight.unsqueeze(1).to(x.dtype), None if bias is None else bias.to(x.dtype),
                 padding=K - 1, groups=dim)[..., :L]
    return F.silu(y) if activation is not None else y
