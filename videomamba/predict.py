"""Moved to :mod:`videomamba.tools.predict` (the command-line tools live together); this name stays an alias."""
import sys

from .tools import predict as _moved

sys.modules[__name__] = _moved
