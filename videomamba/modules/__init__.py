"""Building blocks: the bidirectional Mamba mixer and the pre-norm residual block."""
from .bimamba import BiMamba
from .block import Block
from .workspace import Workspace

__all__ = ["BiMamba", "Block", "Workspace"]
