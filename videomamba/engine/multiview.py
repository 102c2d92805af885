"""Moved to :mod:`videomamba.tasks.classification.multiview` (video classification's test protocol); this name stays an alias of it."""
import sys

from ..tasks.classification import multiview as _moved

sys.modules[__name__] = _moved
