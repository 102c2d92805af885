"""Registered VideoMamba variants (timm registry) and their pretrained configs."""
from __future__ import annotations

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from .hooks import installed
from .masked_student import VideoMambaPretrain
from .vision_mamba import VisionMamba
from .zoo import HF_HUB_ID, ZOO, zoo_entries

# Architecture of each variant (docs/design.md §1.5); d_state 16, expand 2, d_conv 4, patch 16 for all.
VARIANT_ARGS = {
    "videomamba_tiny": dict(embed_dim=192, depth=24),
    "videomamba_small": dict(embed_dim=384, depth=24),
    "videomamba_middle": dict(embed_dim=576, depth=32),
    "videomamba_base": dict(embed_dim=768, depth=24),
}


def _cfg(entry=None, **kwargs):
    cfg = {
        "url": "", "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": None,
        "crop_pct": 0.875, "interpolation": "bicubic", "fixed_input_size": True,
        "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
        "first_conv": "patch_embed.proj", "classifier": "head", "license": "apache-2.0",
        "paper_ids": "arXiv:2403.06977", "origin_url": "https://github.com/OpenGVLab/VideoMamba",
    }
    if entry is not None:
        cfg.update(hf_hub_id=HF_HUB_ID, hf_hub_filename=entry.file, num_classes=entry.num_classes,
                   input_size=(3, entry.img_size, entry.img_size), notes=(entry.note,) if entry.note else ())
    cfg.update(kwargs)
    return cfg


# Masked-pretraining students (docs/design.md §3.4): no head, 8 frames; the official file of M loads strictly.
PRETRAIN_VARIANTS = ("videomamba_tiny", "videomamba_small", "videomamba_middle")

default_cfgs = generate_default_cfgs(
    {**{e.name: _cfg(e) for v in VARIANT_ARGS for e in zoo_entries(v)},
     **{f"{v}_pretrain": _cfg(num_classes=0) for v in PRETRAIN_VARIANTS}}
)


def checkpoint_filter_fn(state_dict, model):
    """timm hook: adapt an official checkpoint (any container/prefix/size) to ``model`` (the checkpoint layer's
    adapter, see :mod:`.hooks`)."""
    return installed("checkpoint_filter_fn")(state_dict, model)


def _create(variant: str, pretrained: bool = False, **kwargs) -> VisionMamba:
    # timm passes the tag of 'variant.tag' as pretrained_cfg: the checkpoint fixes frames/size/classes.
    tag = kwargs.get("pretrained_cfg")
    entry = ZOO.get(f"{variant}.{tag}") if isinstance(tag, str) else None
    kwargs = {**VARIANT_ARGS[variant], "architecture": variant, **(entry.kwargs() if entry else {}), **kwargs}
    return build_model_with_cfg(VisionMamba, variant, pretrained,
                                pretrained_filter_fn=checkpoint_filter_fn, pretrained_strict=False, **kwargs)


@register_model
def videomamba_tiny(pretrained: bool = False, **kwargs) -> VisionMamba:
    """VideoMamba-Ti: D 192, depth 24 (7.1M params with the IN-1K head)."""
    return _create("videomamba_tiny", pretrained, **kwargs)


@register_model
def videomamba_small(pretrained: bool = False, **kwargs) -> VisionMamba:
    """VideoMamba-S: D 384, depth 24 (25.8M params with the IN-1K head)."""
    return _create("videomamba_small", pretrained, **kwargs)


@register_model
def videomamba_middle(pretrained: bool = False, **kwargs) -> VisionMamba:
    """VideoMamba-M: D 576, depth 32 (74.2M params with the IN-1K head)."""
    return _create("videomamba_middle", pretrained, **kwargs)


@register_model
def videomamba_base(pretrained: bool = False, **kwargs) -> VisionMamba:
    """VideoMamba-B: D 768, depth 24 (97.6M params with the IN-1K head); released for images only."""
    return _create("videomamba_base", pretrained, **kwargs)


def _create_pretrain(variant: str, pretrained: bool = False, **kwargs) -> VideoMambaPretrain:
    if pretrained:
        raise ValueError(f"{variant}_pretrain: pass the student checkpoint with create_model(..., checkpoint_path=...)")
    kwargs = {**VARIANT_ARGS[variant], "architecture": f"{variant}_pretrain", **kwargs}
    return build_model_with_cfg(VideoMambaPretrain, f"{variant}_pretrain", False, **kwargs)


@register_model
def videomamba_tiny_pretrain(pretrained: bool = False, **kwargs) -> VideoMambaPretrain:
    """Masked-pretraining student of VideoMamba-Ti (8 frames, clip decoder to 512)."""
    return _create_pretrain("videomamba_tiny", pretrained, **kwargs)


@register_model
def videomamba_small_pretrain(pretrained: bool = False, **kwargs) -> VideoMambaPretrain:
    """Masked-pretraining student of VideoMamba-S (8 frames, clip decoder to 512)."""
    return _create_pretrain("videomamba_small", pretrained, **kwargs)


@register_model
def videomamba_middle_pretrain(pretrained: bool = False, **kwargs) -> VideoMambaPretrain:
    """Masked-pretraining student of VideoMamba-M (8 frames, clip decoder to 512): the official
    ``videomamba_m16_{k400,ssv2}_mask_pt_f8_res224.pth`` layout."""
    return _create_pretrain("videomamba_middle", pretrained, **kwargs)
