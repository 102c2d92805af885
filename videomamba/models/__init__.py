"""VideoMamba models and their registry entries."""
from .variants import VARIANT_ARGS, checkpoint_filter_fn, videomamba_base, videomamba_middle, videomamba_small, videomamba_tiny
from .clip_teacher import CLIPTeacher, TeacherOutput, build_clip_vit, convert_clip, load_clip_teacher
from .masked_student import VideoMambaPretrain
from .vision_mamba import VisionMamba
from .zoo import ZOO, ZooEntry, zoo_entries
from .config import MaskedStudentConfig, VideoMambaConfig, VideoTextConfig, VideoTextVisionConfig
from .build import config_from_dict, model_from_config

__all__ = ["VisionMamba", "VideoMambaPretrain", "CLIPTeacher", "TeacherOutput", "build_clip_vit", "load_clip_teacher",
           "convert_clip", "VARIANT_ARGS", "ZOO", "ZooEntry", "zoo_entries", "checkpoint_filter_fn",
           "videomamba_tiny", "videomamba_small", "videomamba_middle", "videomamba_base", "VideoMambaConfig",
           "MaskedStudentConfig", "VideoTextVisionConfig", "VideoTextConfig", "config_from_dict", "model_from_config"]
