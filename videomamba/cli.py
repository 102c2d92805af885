"""Moved to :mod:`videomamba.tools.cli`; this name stays an alias, and ``python -m videomamba.cli`` still runs
the command."""
import sys

from .tools import cli as _moved

if __name__ == "__main__":
    sys.exit(_moved.main())
sys.modules[__name__] = _moved
