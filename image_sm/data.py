"""Image data for image_sm: the embedded Moving Digits variant or ImageNet-style folders / meta files,
with timm's train transforms (random resized crop, flip, RandAugment, colour jitter, random erasing)
and the eval resize + centre crop at ``aug.eval_crop_pct`` (0.875 in the official recipe)."""
from __future__ import annotations

from videomamba.data.image_dataset import build_image_dataset
from videomamba.engine.dist import is_main, main_process_first


def build_transforms(cfg, train: bool):
    from timm.data import create_transform

    a, d = cfg.aug, cfg.data
    if train:
        return create_transform(d.img_size, is_training=True, scale=tuple(a.scale), ratio=tuple(a.ratio),
                                hflip=a.hflip, color_jitter=a.color_jitter or None, auto_augment=a.auto_augment,
                                re_prob=a.reprob, re_mode=a.get("remode", "pixel"), re_count=a.get("recount", 1),
                                interpolation=a.get("train_interpolation", "bicubic"))
    return create_transform(d.img_size, is_training=False, crop_pct=a.eval_crop_pct, interpolation="bicubic")


def build_datasets(cfg):
    d = cfg.data
    if d.name == "moving_digits":
        from videomamba.data.moving_digits import make_image_variant

        with main_process_first():   # one rank renders the data set, the others wait and read it
            root = make_image_variant(d.root, canvas=d.img_size)
        train_args, val_args = (root, root / "train.txt"), (root, root / "val.txt")
    elif d.name == "folder":
        if not d.get("train_root") or not d.get("val_root"):
            raise ValueError("data.name=folder needs data.train_root and data.val_root "
                             "(ImageFolder trees, or roots for data.train_meta / data.val_meta files)")
        train_args, val_args = (d.train_root, d.get("train_meta")), (d.val_root, d.get("val_meta"))
    else:
        raise ValueError(f"data.name must be 'moving_digits' or 'folder', got {d.name!r}")
    n = cfg.model.num_classes
    # Meta files: rank 0 checks that every listed image exists (one stat per image on a shared file system
    # is enough); the others trust it and still name file and line if an image cannot be read.
    check = d.get("check_files", True) and is_main()
    return (build_image_dataset(*train_args, transform=build_transforms(cfg, True), num_classes=n, check_files=check),
            build_image_dataset(*val_args, transform=build_transforms(cfg, False), num_classes=n, check_files=check))
