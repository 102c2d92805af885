"""Video data for video_sm: the embedded Moving Digits videos or annotation files of a real data set
(K400, SSv2, Breakfast, COIN, LVU), with the official train augmentation and the val/test views.
The data sets are registered by name in :mod:`videomamba.data.video_classification` (task
``video_classification``); this module keeps the task's entry points."""
from __future__ import annotations

from pathlib import Path

from videomamba.data import video_classification as _vc
from videomamba.data.video_dataset import VideoClipDataset

SPLITS = _vc.SPLITS


def resolve_files(cfg) -> tuple[dict[str, Path], list[str] | None]:
    """Annotation file per split and the class names (if known).

    ``data.name``: 'moving_digits' / 'moving_digits_long' (generated on first use into ``data.root``) or
    'csv': ``data.data_path/{train,val,test}.csv``, each overridable with ``data.{split}_file``; names
    from ``data.class_names`` (a text file, one per line) when given."""
    return _vc.resolve_files(cfg)


def resolve_class_factors(cfg) -> dict[str, list[int]] | None:
    """``model.head_factors``: each class's label per factor for a factored head, or None."""
    return _vc.resolve_class_factors(cfg)


def build_dataset(cfg, split: str, file: Path, test_views: bool = False) -> VideoClipDataset:
    """``split='train'`` -> augmented clips; otherwise evaluation views: the validation clip, or with
    ``test_views`` the ``test.num_views x test.num_crops`` protocol."""
    return _vc.clip_dataset(cfg, split, file, test_views)
