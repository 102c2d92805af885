"""Old name of :mod:`videomamba.models.masked_student` (the masked-pretraining student); kept as an alias."""
import sys

from . import masked_student as _moved

sys.modules[__name__] = _moved
