"""Building blocks: the bidirectional Mamba mixer and the pre-norm residual block."""
from .bimamba import BiMamba
from .block import Block

__all__ = ["BiMamba", "Block"]
