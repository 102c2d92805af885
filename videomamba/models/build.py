"""Rebuild a model from its configuration: ``model_from_config(model.config)`` (or the dict a checkpoint or a
model folder saved) gives the same architecture, with fresh weights."""
from __future__ import annotations

from typing import Any, Mapping

import timm
import torch.nn as nn

from .config import CONFIG_CLASSES, VideoMambaConfig
from .masked_student import VideoMambaPretrain
from .variants import default_cfgs  # noqa: F401  (registers the variants with timm)
from .video_text import VideoTextVisionEncoder
from .vision_mamba import VisionMamba

MODEL_CLASSES = {VisionMamba.config_class.model_type: VisionMamba,
                 VideoMambaPretrain.config_class.model_type: VideoMambaPretrain,
                 VideoTextVisionEncoder.config_class.model_type: VideoTextVisionEncoder}


def config_from_dict(data: Mapping[str, Any], source: str = "model config") -> VideoMambaConfig:
    """The config object of a saved dict, of the family its ``model_type`` names (default: the backbone)."""
    kind = data.get("model_type", VideoMambaConfig.model_type)
    if kind not in CONFIG_CLASSES:
        raise ValueError(f"{source}: model_type {kind!r} is not one of {sorted(CONFIG_CLASSES)}")
    return CONFIG_CLASSES[kind].from_dict(data, source)


def model_from_config(config: VideoMambaConfig | Mapping[str, Any], source: str = "model config",
                      **overrides) -> nn.Module:
    """A new model of ``config`` (an object or its ``to_dict()``); ``overrides`` change fields (e.g.
    ``inference_memory``). A registered ``architecture`` is built through timm, so the model also gets its
    ``pretrained_cfg``; a model built from the class directly is rebuilt from the class."""
    if isinstance(config, Mapping):
        config = config_from_dict(config, source)
    if config.architecture and config.architecture in timm.list_models(config.architecture):
        return timm.create_model(config.architecture, **{**config.kwargs(), **overrides})
    return MODEL_CLASSES[config.model_type](config, **overrides)
