"""VideoMamba models and their registry entries."""
from .variants import VARIANT_ARGS, checkpoint_filter_fn, videomamba_base, videomamba_middle, videomamba_small, videomamba_tiny
from .vision_mamba import VisionMamba
from .zoo import ZOO, ZooEntry, zoo_entries

__all__ = ["VisionMamba", "VARIANT_ARGS", "ZOO", "ZooEntry", "zoo_entries", "checkpoint_filter_fn",
           "videomamba_tiny", "videomamba_small", "videomamba_middle", "videomamba_base"]
