"""Image classification data by ``data.name`` (``image_sm``): the embedded Moving Digits image variant or
ImageNet-style folders / meta files, with timm's train transforms (random resized crop, flip,
RandAugment, colour jitter, random erasing) and the eval resize + centre crop at ``aug.eval_crop_pct``
(0.875 in the official recipe). Defaults: :data:`videomamba.data.defaults.IMAGE_CLASSIFICATION`.

Registered names (task ``image_classification``):

- ``moving_digits``: the 10 digit classes at ``data.img_size``, generated on first use into ``data.root``;
- ``moving_digits_video_scale``: the same digits at the videos' scale (64 px canvas, 24-32 px digits at a
  random place; the video-text pipeline's image model);
- ``folder``: ``data.train_root`` / ``data.val_root`` (ImageFolder trees, or the roots of the paths in
  ``data.train_meta`` / ``data.val_meta``).
"""
from __future__ import annotations

from ..utils.dist import is_main, main_process_first
from .defaults import IMAGE_CLASSIFICATION
from .image_dataset import ImageDataset, build_image_dataset
from .registry import DataSource, data_source, register_dataset

TASK = "image_classification"


def image_transforms(cfg, train: bool):
    from timm.data import create_transform

    a, d, D = cfg.aug, cfg.data, IMAGE_CLASSIFICATION
    if train:
        return create_transform(d.img_size, is_training=True, scale=tuple(a.scale), ratio=tuple(a.ratio),
                                hflip=a.hflip, color_jitter=a.color_jitter or None, auto_augment=a.auto_augment,
                                re_prob=a.reprob, re_mode=a.get("remode", D.remode),
                                re_count=a.get("recount", D.recount),
                                interpolation=a.get("train_interpolation", D.train_interpolation))
    return create_transform(d.img_size, is_training=False, crop_pct=a.eval_crop_pct, interpolation="bicubic")


class ImageClassificationSource(DataSource):
    """``splits``: ``{"train" | "val": (root, meta file or None)}``. ``build(split)``: the images of that
    split with its transforms."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.splits = self.locate(cfg.data)

    def locate(self, d) -> dict[str, tuple]:
        raise NotImplementedError

    def build(self, split: str) -> ImageDataset:
        cfg = self.cfg
        root, meta = self.splits[split]
        # Meta files: rank 0 checks that every listed image exists (one stat per image on a shared file system
        # is enough); the others trust it and still name file and line if an image cannot be read.
        check = cfg.data.get("check_files", IMAGE_CLASSIFICATION.check_files) and is_main()
        return build_image_dataset(root, meta, transform=image_transforms(cfg, split == "train"),
                                   num_classes=cfg.model.num_classes, check_files=check)


@register_dataset(TASK, "moving_digits")
class MovingDigitsImages(ImageClassificationSource):
    def locate(self, d):
        with main_process_first():   # one rank renders the data set, the others wait and read it
            root = self.render(d)
        return {"train": (root, root / "train.txt"), "val": (root, root / "val.txt")}

    def render(self, d):
        from . import moving_digits

        return moving_digits.make_image_variant(d.root, canvas=d.img_size)


@register_dataset(TASK, "moving_digits_video_scale")
class MovingDigitsVideoScaleImages(MovingDigitsImages):
    def render(self, d):
        from . import moving_digits

        if int(d.img_size) != 64:
            raise ValueError(f"data.name=moving_digits_video_scale: data.img_size must be 64 (the videos' canvas), "
                             f"got {d.img_size}")
        return moving_digits.make_video_scale_images(d.root)


@register_dataset(TASK, "folder")
class ImageFolders(ImageClassificationSource):
    def locate(self, d):
        if not d.get("train_root") or not d.get("val_root"):
            raise ValueError("data.name=folder needs data.train_root and data.val_root "
                             "(ImageFolder trees, or roots for data.train_meta / data.val_meta files)")
        return {"train": (d.train_root, d.get("train_meta")), "val": (d.val_root, d.get("val_meta"))}


def image_datasets(cfg) -> tuple[ImageDataset, ImageDataset]:
    """The train and val sets of ``cfg.data.name``."""
    source = data_source(cfg, TASK)
    return source.build("train"), source.build("val")
