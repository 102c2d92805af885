"""Moved to :mod:`videomamba.tools.model_source` (the command-line tools live together); this name stays an alias."""
import sys

from .tools import model_source as _moved

sys.modules[__name__] = _moved
