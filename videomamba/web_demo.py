"""Moved to :mod:`videomamba.tools.web_demo` (the command-line tools live together); this name stays an alias."""
import sys

from .tools import web_demo as _moved

sys.modules[__name__] = _moved
