"""Image data for image_sm: the embedded Moving Digits variant or ImageNet-style folders / meta files,
with timm's train transforms (random resized crop, flip, RandAugment, colour jitter, random erasing)
and the eval resize + centre crop at ``aug.eval_crop_pct`` (0.875 in the official recipe). The data sets
are registered by name in :mod:`videomamba.data.image_classification` (task ``image_classification``)."""
from __future__ import annotations

from videomamba.data.image_classification import image_datasets, image_transforms


def build_transforms(cfg, train: bool):
    return image_transforms(cfg, train)


def build_datasets(cfg):
    """(train, val) image data sets of ``cfg.data.name``."""
    return image_datasets(cfg)
