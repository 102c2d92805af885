"""Moved to :mod:`videomamba.utils.dist` (the layers below the engine use it too); this name stays an alias."""
import sys

from ..utils import dist as _dist

sys.modules[__name__] = _dist
