"""Token masks for masked pretraining, in the student's frame-major token order.

A mask is a bool tensor ``(B, 1 + T*H*W)``: ``True`` = masked (dropped before the student's blocks),
column 0 is the CLS token and is always visible. Patch ``(t, i, j)`` of the ``H x W`` grid of frame ``t``
is column ``1 + t*H*W + i*W + j``, the order :meth:`VisionMamba.embed` gives.

Types (the official ``masking_generator.py`` kinds plus the attention masking of the engine), with the
number of visible patch tokens for ``ratio`` r and ``N = H*W`` patches per frame:

=============  ==========================================================  ===========================
type           what is masked                                              visible patches
=============  ==========================================================  ===========================
``tube``       the same ``int(N*r)`` random patches in every frame         ``T * (N - int(N*r))``
``random``     ``int(T*N*r)`` random patches anywhere in the clip          ``T*N - int(T*N*r)``
``tube_row``   ``int(H*r)`` random rows, drawn separately in each frame    ``T * W * (H - int(H*r))``
``random_row`` ``T*int(H*r)`` random rows of all ``T*H`` rows of the clip  ``T * W * (H - int(H*r))``
               (so the masked rows per frame vary)
``attention``  per frame, an order drawn without replacement with          ``T * (N - int(N*r))``
               probability ~ the teacher's CLS->patch attention; the first
               ``N - int(N*r)`` stay visible (40 of 196 at r = 0.8)
``none``       nothing                                                     ``T*N``
=============  ==========================================================  ===========================

Every sample of a batch has the same number of visible tokens, so ``x[~mask].reshape(B, -1, D)`` is the
visible sequence. All draws come from torch's generator (seeded per rank, saved in checkpoints), so a
resumed run draws the same masks.
"""
from __future__ import annotations

import torch

MASK_TYPES = ("tube", "random", "tube_row", "random_row", "attention", "none")


def _check(mask_type: str, ratio: float):
    if mask_type not in MASK_TYPES:
        raise ValueError(f"mask type must be one of {MASK_TYPES}, got {mask_type!r}")
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")


def visible_patches(mask_type: str, frames: int, grid: tuple[int, int], ratio: float) -> int:
    """Visible patch tokens per clip (the CLS not counted); see the module table."""
    _check(mask_type, ratio)
    H, W = grid
    N = H * W
    if mask_type in ("tube", "attention"):
        return frames * (N - int(N * ratio))
    if mask_type == "random":
        return frames * N - int(frames * N * ratio)
    if mask_type in ("tube_row", "random_row"):
        return frames * W * (H - int(H * ratio))
    return frames * N


def _lowest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Bool tensor marking the ``k`` smallest entries of each row of ``scores`` (a uniform random subset
    when the scores are uniform noise)."""
    out = torch.zeros_like(scores, dtype=torch.bool)
    if k > 0:
        out.scatter_(-1, scores.argsort(dim=-1)[..., :k], True)
    return out


def make_mask(mask_type: str, batch: int, frames: int, grid: tuple[int, int], ratio: float,
              attn: torch.Tensor | None = None, device=None, generator: torch.Generator | None = None
              ) -> torch.Tensor:
    """A ``(batch, 1 + frames*H*W)`` bool mask (True = masked, CLS visible); ``attn (batch, frames, H*W)``
    is the teacher's CLS->patch attention, needed by ``attention``."""
    _check(mask_type, ratio)
    H, W = grid
    N = H * W
    if attn is not None:
        device = attn.device
    rand = lambda *shape: torch.rand(*shape, device=device, generator=generator)   # noqa: E731
    if mask_type == "none":
        patches = torch.zeros(batch, frames * N, dtype=torch.bool, device=device)
    elif mask_type == "tube":
        patches = _lowest(rand(batch, 1, N), int(N * ratio)).expand(batch, frames, N)
    elif mask_type == "random":
        patches = _lowest(rand(batch, frames * N), int(frames * N * ratio))
    elif mask_type == "tube_row":    # the official generator: each frame its own int(H*r) rows
        rows = _lowest(rand(batch, frames, H), int(H * ratio))
        patches = rows[..., None].expand(batch, frames, H, W)
    elif mask_type == "random_row":  # T*int(H*r) rows out of the clip's T*H: per-frame counts vary
        rows = _lowest(rand(batch, frames * H), frames * int(H * ratio)).view(batch, frames, H)
        patches = rows[..., None].expand(batch, frames, H, W)
    else:
        patches = attention_mask(attn, frames, N, ratio, generator)
    patches = patches.reshape(batch, frames * N)
    cls = torch.zeros(batch, 1, dtype=torch.bool, device=patches.device)
    return torch.cat((cls, patches), dim=1)


def attention_mask(attn: torch.Tensor | None, frames: int, patches_per_frame: int, ratio: float,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """``(B, T, N)`` mask from the teacher's CLS attention: per frame, ``torch.multinomial`` without
    replacement draws an order of the patches weighted by attention, and the first ``N - int(N*ratio)``
    of it stay visible, so high-attention patches are likely kept (the official engine's rule)."""
    if attn is None:
        raise ValueError("mask type 'attention' needs the teacher's CLS attention (attn=...)")
    B = attn.shape[0]
    if tuple(attn.shape[1:]) != (frames, patches_per_frame):
        raise ValueError(f"attention of shape {tuple(attn.shape)} does not fit {frames} frames x "
                         f"{patches_per_frame} patches (is the teacher's patch grid the student's?)")
    # a floor keeps every patch drawable: attention that underflowed to 0 (bf16) would otherwise make
    # multinomial without replacement fail once the nonzero entries are exhausted
    probs = attn.reshape(B * frames, patches_per_frame).float().clamp_min(1e-12)
    keep = patches_per_frame - int(patches_per_frame * ratio)
    order = torch.multinomial(probs, patches_per_frame, replacement=False, generator=generator)
    masked = torch.ones_like(probs, dtype=torch.bool)
    masked.scatter_(1, order[:, :keep], False)
    return masked.view(B, frames, patches_per_frame)
