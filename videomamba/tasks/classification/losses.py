"""Classification losses from the ``aug`` config: mixup/cutmix with soft-target CE (label smoothing
folded into the soft targets), label-smoothing CE, or plain CE. Video batches ``(B, C, T, H, W)`` get
the same mixup/cutmix as images, with one cutmix box shared by all frames (as the official video mixup).

A loss is a ``loss_fn(model, x, y)`` for the engine's loop; the batch mixing is part of it
(:class:`MixedBatchLoss`), so the engine never sees mixup."""
from __future__ import annotations

import torch


class VideoMixup:
    """timm's ``Mixup`` for images and videos. A video batch is viewed as ``(B, C*T, H, W)`` so that timm
    cuts the box out of the last two (spatial) axes of every frame alike and blends whole clips."""

    def __init__(self, mixup):
        self.mixup = mixup

    def __call__(self, x: torch.Tensor, target: torch.Tensor):
        if x.dim() != 5:
            return self.mixup(x, target)
        b, c, t, h, w = x.shape
        flat = x.contiguous().view(b, c * t, h, w)
        flat, target = self.mixup(flat, target)   # in place on the view
        return flat.view(b, c, t, h, w), target


def build_criterion(cfg):
    """Returns ``(criterion, mixup_fn or None)``. Keys: aug.mixup, aug.cutmix, aug.mixup_prob,
    aug.mixup_switch_prob, aug.mixup_mode, aug.smoothing; model.num_classes."""
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    a = cfg.aug
    if a.get("mixup", 0) > 0 or a.get("cutmix", 0) > 0:
        from timm.data import Mixup

        mix = Mixup(mixup_alpha=a.mixup, cutmix_alpha=a.cutmix, prob=a.get("mixup_prob", 1.0),
                    switch_prob=a.get("mixup_switch_prob", 0.5), mode=a.get("mixup_mode", "batch"),
                    label_smoothing=a.smoothing, num_classes=cfg.model.num_classes)
        return SoftTargetCrossEntropy(), VideoMixup(mix)
    if a.get("smoothing", 0) > 0:
        return LabelSmoothingCrossEntropy(a.smoothing), None
    return torch.nn.CrossEntropyLoss(), None


class ClassificationLoss:
    """``loss_fn(model, x, y) = criterion(model(x), y)``."""

    def __init__(self, criterion):
        self.criterion = criterion

    def __call__(self, model, x: torch.Tensor, y: torch.Tensor):
        return self.criterion(model(x), y)


class MixedBatchLoss:
    """Any ``loss_fn`` applied to the mixed batch: ``loss_fn(model, *mixup(x, y))`` (mixup/cutmix draw from
    numpy's generator, so a resumed run mixes the same way)."""

    def __init__(self, loss_fn, mixup):
        self.loss_fn, self.mixup = loss_fn, mixup

    def __call__(self, model, x: torch.Tensor, y: torch.Tensor):
        x, y = self.mixup(x, y)
        return self.loss_fn(model, x, y)


def with_mixup(loss_fn, mixup):
    """``loss_fn`` on mixed batches, or ``loss_fn`` itself when the recipe does not mix."""
    return loss_fn if mixup is None else MixedBatchLoss(loss_fn, mixup)


def default_loss_fn(criterion):
    """``loss_fn(model, x, y)`` for plain classification (no mixing)."""
    return ClassificationLoss(criterion)


def build_loss(cfg):
    """The classification loss of ``cfg``: the criterion of :func:`build_criterion`, on mixed batches when the
    ``aug`` section mixes."""
    criterion, mixup = build_criterion(cfg)
    return with_mixup(ClassificationLoss(criterion), mixup)


def regression_loss(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Regression (LVU's scored tasks): MSE on the single output (the official ``model(x)[:, 0]``)."""
    return torch.nn.functional.mse_loss(model(x)[:, 0].float(), y.float())
