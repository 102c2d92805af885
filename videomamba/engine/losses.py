"""Classification criteria from the ``aug`` config: mixup/cutmix with soft-target CE (label smoothing
folded into the soft targets), label-smoothing CE, or plain CE."""
from __future__ import annotations

import torch


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
        return SoftTargetCrossEntropy(), mix
    if a.get("smoothing", 0) > 0:
        return LabelSmoothingCrossEntropy(a.smoothing), None
    return torch.nn.CrossEntropyLoss(), None
