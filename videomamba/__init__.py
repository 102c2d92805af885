"""VideoMamba: the state-space video backbone (arXiv 2403.06977), installable anywhere with pip."""
from . import models, modules, ops  # noqa: F401  (registers the variants with timm)
from .checkpoint import CheckpointError, LoadReport, infer_model_config, load_checkpoint, save_checkpoint
from .factory import checkpoint_home, create_model, list_models
from .flops import FlopReport, flops
from .models import VisionMamba
from .checkpoint.model_folder import Preprocessing, from_pretrained, save_pretrained

__version__ = "0.1.0"

__all__ = ["create_model", "list_models", "load_checkpoint", "save_checkpoint", "LoadReport", "CheckpointError",
           "infer_model_config", "flops", "FlopReport",
           "VisionMamba", "checkpoint_home", "from_pretrained", "save_pretrained", "Preprocessing",
           "__version__"]
