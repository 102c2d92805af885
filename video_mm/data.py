"""The video_mm data from a config: training corpora grouped by media type (one loader each, alternating per
step) and the retrieval test sets. Config keys: see ``configs/video_mm/_base_pretrain.yaml`` (``data.*``).
The data sets are :mod:`videomamba.data.video_text_corpora`, the loaders :mod:`videomamba.tasks.video_text.loaders`;
these names stay importable from here."""
from __future__ import annotations

from videomamba.data.video_text_corpora import expand, moving_digits_captions, test_sets, train_sets
from videomamba.tasks.video_text.loaders import test_loader, train_loader


def moving_digits_paths(d):
    """Point the ``moving_digits`` corpora of the embedded default at the generated caption files (the
    preparation of the ``moving_digits`` video-text source, :mod:`videomamba.data.video_text_corpora`)."""
    moving_digits_captions(d)


__all__ = ["expand", "moving_digits_paths", "train_sets", "train_loader", "test_sets", "test_loader"]
