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

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor | None = None, consume_input: bool = False):
        """``consume_input``: the caller keeps no reference to ``hidden_states`` (the previous block's output, seen
        by no hook), so the recomputing path may build this block's stream in its memory."""
        if (consume_input and residual is not None and hidden_states.dtype == torch.float32
                and residual.dtype == torch.float32 and recompute_applies(self, hidden_states)):
            # The stream entering this block is built in the previous output's memory (drop path and the add in
            # place). Freeing it and allocating the stream anew, one block
            # after another, leaves holes in glibc's heap that 64-byte aligned requests of the same size never
            # fit, so the process grew by the whole sequence of them (measured: 18 MB per block at 64 frames).
            r = self._drop_path_(hidden_states).add_(residual)
            return recomputed_mixer(self, r, hidden_states.dtype), r
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

    def _drop_path_(self, x: torch.Tensor) -> torch.Tensor:
        """timm's drop path (the same draw and the same product), in place."""
        p = self.drop_path.drop_prob if isinstance(self.drop_path, DropPath) else 0.0
        if not self.training or p == 0.0:
            return x
        keep = 1.0 - p
        random_tensor = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        if keep > 0.0 and self.drop_path.scale_by_keep:
            random_tensor.div_(keep)
        return x.mul_(random_tensor)
