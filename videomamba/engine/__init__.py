"""Training engine shared by image_sm, video_sm and video_mm: configs, distributed setup, optimiser
groups, schedules, EMA, exact-resume checkpoints, non-finite guards and run logging."""
from .config import Config, ConfigError, apply_overrides, load_config, merge, save_config
from ..utils.dist import DistInfo, init_distributed
from .ema import ModelEma
from .guards import NonFiniteLossError, check_finite_loss
from .logger import RunLogger
from .optim import layer_id, param_groups
from .schedule import cosine_per_epoch, cosine_per_step
from .runner import TrainingRun
from .train_state import find_resume, load_training_state, save_training_state, unwrap

__all__ = ["Config", "ConfigError", "load_config", "save_config", "apply_overrides", "merge", "DistInfo",
           "init_distributed", "ModelEma", "NonFiniteLossError", "check_finite_loss", "RunLogger", "param_groups",
           "layer_id", "cosine_per_step", "cosine_per_epoch", "find_resume", "load_training_state",
           "save_training_state", "unwrap", "TrainingRun"]
