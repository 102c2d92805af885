"""Moved to :mod:`videomamba.tasks.classification.losses` (classification losses); this name stays an alias of it."""
import sys

from ..tasks.classification import losses as _moved

sys.modules[__name__] = _moved
