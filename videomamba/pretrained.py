"""Old name of :mod:`videomamba.checkpoint.model_folder` (the model folder format); kept as an alias of it."""
import sys

from .checkpoint import model_folder as _model_folder

sys.modules[__name__] = _model_folder
