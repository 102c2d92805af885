"""Masked video pretraining data by ``data.name`` (``video_sm.pretrain``): the same annotation files, record
reading and Moving Digits videos as video classification (:mod:`.video_classification`), with the
pretraining defaults (:data:`videomamba.data.defaults.VIDEO_PRETRAIN`: ``path label`` lists, the sparse
sampler, a validation split only where the data set has one) and the pretraining augmentation. The labels
in the files are read but not used.

Registered names (task ``video_pretrain``):

- ``moving_digits``: the generated train videos; ``val.csv`` too unless ``data.val`` is false;
- ``csv``: ``data.train_file`` (``data.data_path/train.csv`` by default) and, optionally, ``data.val_file``
  (``data.data_path/val.csv`` when ``data.val`` is true).
"""
from __future__ import annotations

from pathlib import Path

from .defaults import VIDEO_PRETRAIN
from .registry import DataSource, data_source, register_dataset
from .video_classification import moving_digits_videos, read_records, split_file
from .video_dataset import VideoClipDataset
from .video_transforms import VideoEvalTransform, VideoPretrainTransform

TASK = "video_pretrain"


def _clip_options(d) -> dict:
    D = VIDEO_PRETRAIN
    return dict(num_frames=d.num_frames, sampler=d.get("sampler", D.sampler),
                sampling_rate=d.get("sampling_rate", D.sampling_rate), backend=d.get("backend"))


def _clips(cfg, split: str, records, file: Path, options: dict) -> VideoClipDataset:
    d, a = cfg.data, cfg.aug
    if split == "train":
        return VideoClipDataset(records, "train", source=str(file),
                                transform=VideoPretrainTransform(d.input_size, tuple(a.scales), a.hflip), **options)
    return VideoClipDataset(records, "eval", source=str(file),
                            transform=VideoEvalTransform(d.input_size, d.get("short_side_size") or d.input_size),
                            **options)


def pretrain_dataset(cfg, split: str, file: Path) -> VideoClipDataset:
    """``split='train'``: clips with the pretraining augmentation; otherwise the centre-crop clips."""
    d = cfg.data
    options = _clip_options(d)
    return _clips(cfg, split, read_records(d, file, d.get("delimiter", VIDEO_PRETRAIN.delimiter)), file, options)


def pretrain_sets(cfg, files: dict[str, Path | None]) -> tuple[VideoClipDataset, VideoClipDataset | None]:
    """The training clips and the validation clips (None without a ``val`` file); both files are read
    (and checked) before either set is made."""
    d = cfg.data
    options = _clip_options(d)
    delimiter = d.get("delimiter", VIDEO_PRETRAIN.delimiter)
    records = {s: read_records(d, f, delimiter) for s, f in files.items() if f is not None}
    train = _clips(cfg, "train", records["train"], files["train"], options)
    val = _clips(cfg, "val", records["val"], files["val"], options) if "val" in records else None
    return train, val


class VideoPretrainSource(DataSource):
    """``files``: ``{"train": file, "val": file or None}``. ``build("train" | "val")``: that split's set
    (None for a ``val`` without a file)."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.files: dict[str, Path | None] = self.locate(cfg.data)

    def locate(self, d) -> dict[str, Path | None]:
        raise NotImplementedError

    def build(self, split: str) -> VideoClipDataset | None:
        if split not in self.files:
            raise ValueError(f"masked video pretraining has the splits 'train' and 'val', got {split!r}")
        file = self.files[split]
        return None if file is None else pretrain_dataset(self.cfg, split, file)


@register_dataset(TASK, "moving_digits")
class MovingDigitsPretrainVideos(VideoPretrainSource):
    def locate(self, d):
        root = moving_digits_videos(d)
        val = d.get("val", VIDEO_PRETRAIN.val["moving_digits"])
        return {"train": root / "train.csv", "val": root / "val.csv" if val else None}


@register_dataset(TASK, "csv")
class CsvPretrainVideos(VideoPretrainSource):
    def locate(self, d):
        train = split_file(d, "train")
        if train is None:
            raise ValueError("data.name=csv needs data.train_file or data.data_path (with train.csv)")
        val = split_file(d, "val") if d.get("val_file") or d.get("val", VIDEO_PRETRAIN.val["csv"]) else None
        return {"train": train, "val": val}


def annotation_files(cfg) -> dict[str, Path | None]:
    """``train`` (required) and ``val`` (optional) annotation files of ``cfg.data.name``."""
    return data_source(cfg, TASK).files
