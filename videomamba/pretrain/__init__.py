"""Old name of :mod:`videomamba.objectives` (masks, masked alignment, contrastive losses); kept as an alias so
``videomamba.pretrain`` and its submodules still import, as the very same module objects."""
import sys

from .. import objectives as _objectives
from ..objectives import alignment as _alignment, contrastive as _contrastive, masks as _masks

for _name, _module in (("alignment", _alignment), ("contrastive", _contrastive), ("masks", _masks)):
    sys.modules[f"{__name__}.{_name}"] = _module
sys.modules[__name__] = _objectives
