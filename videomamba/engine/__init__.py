"""Training engine shared by image_sm, video_sm and video_mm: configs, optimiser groups, schedules."""
from .config import Config, ConfigError, apply_overrides, load_config, merge, save_config
from .optim import layer_id, param_groups
from .schedule import cosine_per_epoch, cosine_per_step

__all__ = ["Config", "ConfigError", "load_config", "save_config", "apply_overrides", "merge",
           "param_groups", "layer_id", "cosine_per_step", "cosine_per_epoch"]
