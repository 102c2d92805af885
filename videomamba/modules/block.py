"""Pre-norm residual block: ``residual += drop_path(h); h = mixer(norm(residual))``."""
from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import DropPath
from torch.utils.checkpoint import checkpoint

from ..ops import norm_forward
from .mixer_recompute import recompute_applies, recomputed_mixer


class Block(nn.Module):
    """Add -> Norm -> Mixer, returning ``(mixer_out, residual)`` as the official Block does.

    ``drop_path`` is applied to the *incoming* hidden state (the previous block's mixer output) when
    it is added to the residual; this one-step shift is the official schedule.

    ``recompute``: ``"block"`` runs norm + mixer in training as one autograd function that keeps only the
    residual-stream tensor for backward and recomputes the rest (:mod:`.mixer_recompute`); ``"none"`` keeps
    every intermediate (plain autograd). The results are the same.
    """

    def __init__(self, dim: int, mixer: nn.Module, norm: nn.Module, drop_path: float = 0.0,
                 residual_in_fp32: bool = True):
        super().__init__()
        self.residual_in_fp32 = residual_in_fp32
        self.mixer = mixer
        self.norm = norm
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.use_checkpoint = False
        self.recompute = "none"

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor | None = None):
        if residual is not None:
            hidden_states = self.drop_path(hidden_states)
        if recompute_applies(self, hidden_states):
            r = hidden_states.float() if residual is None else hidden_states.float() + residual.float()
            keeps_fp32 = residual.dtype == torch.float32 if residual is not None else (
                self.residual_in_fp32 or hidden_states.dtype == torch.float32)
            if keeps_fp32:   # (a low-precision residual stream takes the plain path)
                return recomputed_mixer(self, r, hidden_states.dtype), r
        hidden_states, residual = norm_forward(self.norm, hidden_states, residual, prenorm=True,
                                               residual_in_fp32=self.residual_in_fp32)
        if self.use_checkpoint and torch.is_grad_enabled():
            hidden_states = checkpoint(self.mixer, hidden_states, use_reentrant=False)
        else:
            hidden_states = self.mixer(hidden_states)
        return hidden_states, residual
