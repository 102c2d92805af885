"""Unmasked-token alignment (UTA): the student's visible tokens regress the CLIP teacher's features of the
same tokens (docs/design.md §3.4). Shared by the video_sm masked pretraining and the video_mm UTA loss.

The loss of one training step (:class:`MaskedAlignmentLoss`, a ``loss_fn(model, x, y)`` for the engine):
teacher features and CLS attention (no gradient) -> mask (attention-guided or random) -> student on the
visible tokens -> ``mean(2 - 2 cos)`` over layers, clips and visible tokens (the CLS included).
"""
from __future__ import annotations

import torch
from tqdm import tqdm

from ..utils.tensors import unwrap
from .masks import make_mask


def alignment_loss(student: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``mean(2 - 2 <s, t>)`` of L2-normalised features of equal shape ``(..., C)`` (the official
    ``clip_loss_type: l2`` on unit vectors: ``|s - t|^2 = 2 - 2 cos``)."""
    if student.shape != target.shape:
        raise ValueError(f"student features {tuple(student.shape)} and teacher targets {tuple(target.shape)} differ")
    return (2 - 2 * (student.float() * target.float()).sum(dim=-1)).mean()


def visible_targets(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Teacher features ``(K, B, L, C)`` at the visible positions of ``mask (B, L)`` -> ``(K, B, V, C)``."""
    K, B, L, C = features.shape
    return features[:, ~mask].reshape(K, B, -1, C)


class MaskedAlignmentLoss:
    """``loss_fn(model, x, y) -> (loss, parts)`` for :class:`videomamba.engine.TrainingRun`.

    ``teacher``: a :class:`~videomamba.models.clip_teacher.CLIPTeacher` (frozen, on the model's device);
    ``mask_type``/``mask_ratio``: see :mod:`videomamba.objectives.masks`; ``return_layers``/``teacher_interval``:
    the teacher layers aligned with the student's ``clip_return_layers``; ``loss_ratio``: the loss weight.
    Masks are drawn from torch's generator (exact resume) unless a ``generator`` is given.
    """

    def __init__(self, teacher, mask_type: str = "attention", mask_ratio: float = 0.8, return_layers: int = 1,
                 teacher_interval: int = 1, loss_ratio: float = 1.0):
        if not loss_ratio > 0:
            raise ValueError(f"loss ratio must be > 0, got {loss_ratio}")
        self.teacher, self.mask_type, self.mask_ratio = teacher, mask_type, float(mask_ratio)
        self.return_layers, self.teacher_interval, self.loss_ratio = return_layers, teacher_interval, loss_ratio

    def masks_and_targets(self, x: torch.Tensor, grid: tuple[int, int], generator=None):
        """The teacher's pass and the mask it guides: ``(mask (B, L), targets (K, B, V, C))``."""
        out = self.teacher(x, return_layers=self.return_layers, interval=self.teacher_interval)
        B, T = x.shape[0], (x.shape[2] if x.dim() == 5 else 1)
        mask = make_mask(self.mask_type, B, T, grid, self.mask_ratio, attn=out.attn, device=x.device,
                         generator=generator)
        return mask, visible_targets(out.features, mask)

    def __call__(self, model, x: torch.Tensor, y=None, generator=None):
        student = unwrap(model)
        if student.tubelet_size != 1:
            raise ValueError("masked alignment needs tubelet size 1 (one teacher frame per student frame)")
        mask, target = self.masks_and_targets(x, tuple(student.patch_embed.grid_size), generator)
        pred = model(x, mask)
        loss = alignment_loss(pred, target) * self.loss_ratio
        return loss, {"align_cos": 1 - loss.detach() / (2 * self.loss_ratio)}



MaskedAlignmentStep = MaskedAlignmentLoss   # its old name

@torch.no_grad()
def evaluate_alignment(model, loader, device, amp: str = "none", progress: bool = True, *,
                       step: MaskedAlignmentLoss, seed: int = 0) -> dict:
    """Mean alignment loss over an evaluation loader (batches of :func:`collate_eval` or ``(x, y)``), with
    masks from a generator seeded with ``seed`` so that epochs are compared on the same masks. Returns
    ``loss`` (lower is better), ``cos`` (mean cosine) and ``n``, summed over every rank."""
    from ..utils.tensors import autocast
    from ..utils.dist import all_reduce_sum, show_progress

    model.eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    total, n = 0.0, 0
    for batch in tqdm(loader, desc="eval", disable=not show_progress(progress), leave=False, dynamic_ncols=True):
        x = batch[0].to(device, non_blocking=True)
        if x.numel() == 0:
            continue
        with autocast(device, amp):
            loss, _ = step(model, x, None, generator=gen)
        total += loss.item() * x.shape[0]
        n += x.shape[0]
    s = all_reduce_sum(torch.tensor([total, n], dtype=torch.float64, device=device))
    mean = s[0].item() / max(s[1].item(), 1)
    return {"loss": mean, "cos": 1 - mean / (2 * step.loss_ratio), "n": int(s[1].item())}
