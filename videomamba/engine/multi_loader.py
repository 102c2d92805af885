"""Moved to :mod:`videomamba.tasks.video_text.alternating_loader` (the video-text loader of several media); this name stays an alias of it."""
import sys

from ..tasks.video_text import alternating_loader as _moved

sys.modules[__name__] = _moved
