"""Moved to :mod:`videomamba.tools.search` (the command-line tools live together); this name stays an alias."""
import sys

from .tools import search as _moved

sys.modules[__name__] = _moved
