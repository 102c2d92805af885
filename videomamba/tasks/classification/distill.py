"""Self-distillation as the VideoMamba paper describes it: a frozen teacher (VideoMamba-S) and a student
whose final normalised tokens pass through ``distill_head`` (RMSNorm + Linear to the teacher's width).
Both token sets are L2-normalised per token; the loss adds ``mean(2 - 2 <s, t>)`` over batch and tokens
(the squared distance of unit vectors, no temperature) to the classification loss, weight 1 on both."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def token_cosine_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """``mean(2 - 2 cos)`` over (batch, tokens) of two ``(B, L, C)`` tensors (normalised here again)."""
    if student.shape != teacher.shape:
        raise ValueError(f"self-distillation: student tokens {tuple(student.shape)} and teacher tokens "
                         f"{tuple(teacher.shape)} differ; use the same input size and patch size for both")
    s = F.normalize(student.float(), dim=-1)
    t = F.normalize(teacher.float(), dim=-1)
    return (2 - 2 * (s * t).sum(dim=-1)).mean()


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class SelfDistillationLoss:
    """``loss_fn(model, x, y)`` for the train loop: ``model`` must be built with ``distill_dim`` equal to
    the teacher's width. Returns the total loss and its two parts for logging."""

    def __init__(self, teacher: torch.nn.Module, base_criterion, weight: float = 1.0):
        self.teacher = freeze(teacher)
        self.base_criterion = base_criterion
        self.weight = weight

    def __call__(self, model, x: torch.Tensor, y: torch.Tensor):
        logits, student_tokens = model(x, return_distill=True)
        with torch.no_grad():
            teacher_tokens = self.teacher.forward_features(x)
        ce = self.base_criterion(logits, y)
        distill = token_cosine_loss(student_tokens, teacher_tokens)
        return ce + self.weight * distill, {"loss_cls": ce.detach(), "loss_distill": distill.detach()}
