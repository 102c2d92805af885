"""Pre-norm residual block: ``residual += drop_path(h); h = mixer(norm(residual))``."""
from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import DropPath
from torch.utils.checkpoint import checkpoint

from ..ops import norm_forward


class Block(nn.Module):
    """Add -> Norm -> Mixer, returning ``(mixer_out, residual)`` as the official Block does.

    ``drop_path`` is applied to the *incoming* hidden state (the previous block's mixer output) when
    it is added to the residual; this one-step shift is the official schedule.
    """

    def __init__(self, dim: int, mixer: nn.Module, norm: nn.Module, drop_path: float = 0.0,
                 residual_in_fp32: bool = True):
        super().__init__()
        self.residual_in_fp32 = residual_in_fp32
        self.mixer = mixer
        self.norm = norm
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.use_checkpoint = False

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor | None = None):
        if residual is not None:
            hidden_states = self.drop_path(hidden_states)
        hidden_states, residual = norm_forward(self.norm, hidden_states, residual, prenorm=True,
                                               residual_in_fp32=self.residual_in_fp32)
        if self.use_checkpoint and torch.is_grad_enabled():
            hidden_states = checkpoint(self.mixer, hidden_states, use_reentrant=False)
        else:
            hidden_states = self.mixer(hidden_states)
        return hidden_states, residual
