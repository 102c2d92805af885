"""Moved to :mod:`videomamba.tasks.video_text.metrics` (video-text retrieval metrics); this name stays an alias of it."""
import sys

from ..tasks.video_text import metrics as _moved

sys.modules[__name__] = _moved
