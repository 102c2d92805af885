"""The masked-pretraining student (``videomamba_{tiny,small,middle}_pretrain``): a video VisionMamba
without head that runs its blocks on the visible tokens only and maps chosen layers to the teacher's
feature space through ``clip_decoder``s (docs/design.md §3.4, design decision D4).

State-dict layout (the official ``videomamba_pretrain.py``): the video backbone's keys without ``head.*``,
the final norm saved as ``norm.weight`` (not ``norm_f``), and per returned layer ``k``
``clip_decoder.{k}.head.{weight (out, D), bias}`` + ``clip_decoder.{k}.norm.{weight, bias} (out)``. The
fixed sinusoidal ``clip_pos_embed`` is a non-persistent buffer (not saved, as officially).

Which features are aligned (``clip_target``):

- ``"official"`` (default, reproduces the released students): for the last layer, the **un-normalised
  residual stream entering the last block**, as the official loop appends ``residual`` after it. So the
  last block and the final norm get no gradient; they are frozen here (``requires_grad=False``) and the
  last mixer is not run, which gives the same weights (AdamW skips parameters without a gradient), no
  wasted compute and no need for DDP's ``find_unused_parameters``. Earlier return layers ``r`` use
  ``norm(output of block r)`` through the shared final norm.
- ``"final"``: the normalised output of the last block (what ``forward_features`` returns), so every
  block learns.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import trunc_normal_

from ..ops import norm_forward
from .config import MaskedStudentConfig
from .vision_mamba import VisionMamba

CLIP_TARGETS = ("official", "final")


def sinusoid_table(positions: int, dim: int) -> torch.Tensor:
    """``(1, positions, dim)`` fixed sin/cos position table: channel ``2i`` is ``sin(p / 10000^(2i/dim))``,
    ``2i+1`` the cosine of the same angle (the VideoMAE/UMT table)."""
    pos = torch.arange(positions, dtype=torch.float64)[:, None]
    j = torch.arange(dim)
    angle = pos / torch.pow(10000.0, (2 * (j // 2)).double() / dim)
    table = torch.where(j % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float()[None]


class ClipDecoder(nn.Module):
    """``Linear(D -> out)`` + ``LayerNorm(out)`` (keys ``head``, ``norm``), then L2 normalisation."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.head = nn.Linear(in_dim, out_dim)
        self.norm = nn.LayerNorm(out_dim)
        # the official init order overwrites the decoder's own init with trunc_normal(.02) / LN 1, 0
        trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.norm(self.head(x)).float(), dim=-1)


class VideoMambaPretrain(VisionMamba):
    """Masked-pretraining student. ``forward(x, mask)`` -> ``(K, B, visible, clip_output_dim)``: the
    L2-normalised decoder outputs of the ``K = clip_return_layers`` aligned layers (ascending), on the
    tokens where ``mask`` (``(B, 1 + T*H*W)`` bool, True = masked) is False.

    Args (beyond :class:`VisionMamba`'s): ``clip_output_dim`` (the teacher's feature width, 512 for CLIP
    ViT-B/16), ``clip_decoder_embed_dim`` (must equal ``embed_dim``: the decoder input is the student's
    token plus ``clip_pos_embed``; accepted for the official flag), ``clip_return_layers`` and
    ``clip_student_return_interval`` (layers ``depth-1 - i*interval``), ``clip_target`` (see module doc).
    """

    config_class = MaskedStudentConfig

    def __init__(self, config: MaskedStudentConfig | None = None, **kwargs):
        kwargs.pop("num_classes", None)   # a student has no head
        super().__init__(config, **kwargs)
        c = self.config
        clip_target, clip_decoder_embed_dim, clip_return_layers = c.clip_target, c.clip_decoder_embed_dim, c.clip_return_layers
        clip_student_return_interval, clip_output_dim, num_frames = (c.clip_student_return_interval, c.clip_output_dim,
                                                                     c.num_frames)
        if clip_target not in CLIP_TARGETS:
            raise ValueError(f"clip_target must be one of {CLIP_TARGETS}, got {clip_target!r}")
        if clip_decoder_embed_dim is not None and clip_decoder_embed_dim != self.embed_dim:
            raise ValueError(f"clip_decoder_embed_dim={clip_decoder_embed_dim} must equal embed_dim="
                             f"{self.embed_dim} (the decoder reads the student's tokens)")
        if not 1 <= clip_return_layers <= self.depth:
            raise ValueError(f"clip_return_layers must be in [1, depth={self.depth}], got {clip_return_layers}")
        self.norm = self._modules.pop("norm_f")   # the official key is `norm`
        self.clip_target = clip_target
        self.return_index = sorted(self.depth - 1 - i * clip_student_return_interval
                                   for i in range(clip_return_layers))
        if self.return_index[0] < 0:
            raise ValueError(f"{clip_return_layers} return layers every {clip_student_return_interval} do not "
                             f"fit depth {self.depth}")
        self.clip_output_dim = clip_output_dim
        self.clip_decoder = nn.ModuleList([ClipDecoder(self.embed_dim, clip_output_dim)
                                           for _ in range(clip_return_layers)])
        positions = 1 + self.patch_embed.num_patches * (num_frames // self.tubelet_size)
        self.register_buffer("clip_pos_embed", sinusoid_table(positions, self.embed_dim), persistent=False)
        for name in self.unused_parameter_names():
            self.get_parameter(name).requires_grad_(False)

    @property
    def norm_f(self) -> nn.Module:   # the VisionMamba code paths read the final norm under this name
        return self._modules["norm"]

    def unused_parameter_names(self) -> list[str]:
        """Parameters no alignment loss reaches (official target: the last block, and the final norm
        unless an earlier layer is aligned too)."""
        if self.clip_target == "final":
            return []
        last = self.depth - 1
        names = [f"layers.{last}.{n}" for n, _ in self.layers[last].named_parameters()]
        if all(r == last for r in self.return_index):
            names += [f"norm.{n}" for n, _ in self.norm.named_parameters()]
        return names

    def forward_aligned(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """The features of the return layers (ascending) from embedded (visible) tokens."""
        last = self.depth - 1
        hidden, residual, feats = tokens, None, []
        for idx in range(last):   # the last block's mixer runs only for the "final" target, below
            hidden, residual = self.layers[idx](hidden, residual)
            if idx - 1 in self.return_index:   # `residual` now holds the output of block idx - 1
                feats.append(norm_forward(self.norm, residual, None, prenorm=False).to(tokens.dtype))
        if not {last - 1, last} & set(self.return_index):
            return feats
        if self.clip_target == "final":   # run the last block: its input stream and its normalised output
            hidden, stream = self.layers[last](hidden, residual)
        elif residual is None:            # depth 1: the stream entering block 0 is the tokens themselves
            stream = hidden
        else:   # the sum the last block would form before its norm (drop path on the incoming hidden state)
            h = self.layers[last].drop_path(hidden)
            stream = h.float() + residual.float() if self.residual_in_fp32 else h + residual
        if last - 1 in self.return_index:
            feats.append(norm_forward(self.norm, stream, None, prenorm=False).to(tokens.dtype))
        if last in self.return_index:
            if self.clip_target == "official":   # the un-normalised stream (the official `residual`)
                feats.append(stream.to(tokens.dtype))
            else:
                feats.append(norm_forward(self.norm, self.drop_path(hidden), stream, prenorm=False,
                                          residual_in_fp32=self.residual_in_fp32).to(tokens.dtype))
        return feats

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        tokens = self.pos_drop(self.embed(x))
        B, L, D = tokens.shape
        pos = self.clip_pos_embed.expand(B, -1, -1)
        if pos.shape[1] != L:
            raise ValueError(f"{L} tokens but clip_pos_embed has {pos.shape[1]} positions")
        if mask is not None:
            if tuple(mask.shape) != (B, L) or mask.dtype != torch.bool:
                raise ValueError(f"mask must be a bool tensor of shape ({B}, {L}), got {tuple(mask.shape)} "
                                 f"{mask.dtype}")
            tokens = tokens[~mask].reshape(B, -1, D)
            pos = pos[~mask].reshape(B, -1, D)
        feats = self.forward_aligned(tokens)
        return torch.stack([dec(f + pos.to(f.dtype)) for dec, f in zip(self.clip_decoder, feats)])

    def forward_head(self, x, pre_logits: bool = False):
        raise RuntimeError("VideoMambaPretrain has no classification head; fine-tune a video model from it")


__all__ = ["VideoMambaPretrain", "ClipDecoder", "sinusoid_table", "CLIP_TARGETS"]
