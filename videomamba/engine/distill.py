"""Moved to :mod:`videomamba.tasks.classification.distill` (a classification loss); this name stays an alias of it."""
import sys

from ..tasks.classification import distill as _moved

sys.modules[__name__] = _moved
