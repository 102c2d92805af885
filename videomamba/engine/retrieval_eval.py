"""Moved to :mod:`videomamba.tasks.video_text.retrieval` (video-text retrieval evaluation); this name stays an alias of it."""
import sys

from ..tasks.video_text import retrieval as _moved

sys.modules[__name__] = _moved
