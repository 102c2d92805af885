"""Every default of the data layer, defined once: the constants the data sets' own signatures fall back
to, and per task the table of values a ``data.*`` / ``aug.*`` key takes when the config leaves it out.

The per-task tables differ on purpose where the tasks' recipes do: masked pretraining reads VideoMAE-style
lists (``path label``, space-separated) and samples sparsely unless told otherwise, while fine-tuning reads
Kinetics-style ``path,label`` files and needs ``data.sampler`` in its config. Everything else (generating
the data, the annotation files per split, reading them) is shared code in the builder modules, which read
their defaults from here only.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

# ------------------------------------------------------------------------------------------ shared constants
SAMPLING_RATE = 4                  # dense sampler: frames between two sampled frames (--sampling_rate 4)
TRIMMED = 60                       # lvu sampler: window length in seconds (--trimmed 60)
TIME_STRIDE = 16                   # lvu sampler: window stride in seconds (--time_stride 16)
NUM_SAMPLE = 1                     # repeated augmentation: augmented copies of each training clip
REMODE = "pixel"                   # random erasing fill: per-pixel normal noise (timm's default)
RECOUNT = 1                        # random erasing boxes per image
TRAIN_INTERPOLATION = "bicubic"    # the train crop's resize (the official --train_interpolation)


# ------------------------------------------------------------------------------------------ per-task tables
@dataclass(frozen=True)
class VideoClassificationDefaults:
    """``data.*`` / ``aug.*`` of video fine-tuning (``video_sm``). ``data.sampler`` has no default: every
    config names its sampler."""
    delimiter: str                 # data.delimiter: annotation columns, ',' (Kinetics) or ' ' (SSv2)
    sampling_rate: int             # data.sampling_rate (dense sampler)
    trimmed: float                 # data.trimmed (lvu sampler)
    time_stride: float             # data.time_stride (lvu sampler)
    num_sample: int                # data.num_sample (also when null or 0)
    check_files: bool              # data.check_files: rank 0 warns about listed videos that do not exist
    remode: str                    # aug.remode
    train_interpolation: str       # aug.train_interpolation


@dataclass(frozen=True)
class VideoPretrainDefaults:
    """``data.*`` of masked video pretraining (``video_sm.pretrain``). Its clips are whole videos (no LVU
    windows, no time control), one copy each, and the listed files are not checked up front."""
    delimiter: str                 # data.delimiter: the VideoMAE lists are "path label"
    sampler: str                   # data.sampler
    sampling_rate: int             # data.sampling_rate (dense sampler)
    val: Mapping[str, bool]        # data.val per data.name: measure the alignment loss on a validation split


@dataclass(frozen=True)
class ImageClassificationDefaults:
    """``data.*`` / ``aug.*`` of image classification (``image_sm``)."""
    check_files: bool              # data.check_files: rank 0 stats every image a meta file lists
    remode: str                    # aug.remode
    recount: int                   # aug.recount
    train_interpolation: str       # aug.train_interpolation


@dataclass(frozen=True)
class VideoTextDefaults:
    """``data.*`` of video-text pretraining and retrieval (``video_mm``); per corpus where noted."""
    media: str                     # data.{train,test}.<corpus>.media: video | image
    expand_captions: bool          # data.train.<corpus>.expand_captions: one pair per caption
    paragraph: bool                # data.test.<corpus>.paragraph: join a video's captions into one text
    sample_train: str              # data.sample_train: frame sampling of training clips
    hflip: float                   # data.hflip


VIDEO_CLASSIFICATION = VideoClassificationDefaults(
    delimiter=",", sampling_rate=SAMPLING_RATE, trimmed=TRIMMED, time_stride=TIME_STRIDE, num_sample=NUM_SAMPLE,
    check_files=True, remode=REMODE, train_interpolation=TRAIN_INTERPOLATION)

VIDEO_PRETRAIN = VideoPretrainDefaults(
    delimiter=" ", sampler="sparse", sampling_rate=SAMPLING_RATE,
    # the official recipes have no validation split; the embedded Moving Digits data has one
    val=MappingProxyType({"csv": False, "moving_digits": True}))

IMAGE_CLASSIFICATION = ImageClassificationDefaults(
    check_files=True, remode=REMODE, recount=RECOUNT, train_interpolation=TRAIN_INTERPOLATION)

VIDEO_TEXT = VideoTextDefaults(media="video", expand_captions=True, paragraph=False, sample_train="rand", hflip=0.5)
