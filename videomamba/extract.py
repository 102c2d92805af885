"""Moved to :mod:`videomamba.tools.extract` (the command-line tools live together); this name stays an alias."""
import sys

from .tools import extract as _moved

sys.modules[__name__] = _moved
