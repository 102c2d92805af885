"""Moved to :mod:`videomamba.utils.checkpoint_io` (the models read weight files too, and sit below this
package); this name stays an alias of it."""
import sys

from ..utils import checkpoint_io as _checkpoint_io

sys.modules[__name__] = _checkpoint_io
