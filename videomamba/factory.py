"""``create_model``: build a registered variant, optionally with official weights."""
from __future__ import annotations

import os
from pathlib import Path

import timm

from .checkpoint import load_checkpoint
from .models.zoo import ZOO


def checkpoint_home() -> Path:
    """Folder searched for official checkpoint files: ``$VIDEOMAMBA_HOME`` or ``~/.cache/videomamba``."""
    return Path(os.environ.get("VIDEOMAMBA_HOME", Path.home() / ".cache" / "videomamba"))


def create_model(name: str, pretrained: bool = False, checkpoint_path: str | os.PathLike | None = None,
                 strict: bool = False, inflate: str = "center", **kwargs):
    """Build ``videomamba_{tiny,small,middle,base}[.tag]``.

    ``num_frames=None`` (default) builds the image layout, an int the video layout. A tag (e.g.
    ``videomamba_tiny.k400_f8_res224``, see MODEL_ZOO.md) sets num_classes/img_size/num_frames to that
    checkpoint's; explicit kwargs win. Weights come from ``checkpoint_path`` or, with
    ``pretrained=True``, from the tag's official file in :func:`checkpoint_home`, falling back to the
    Hugging Face hub through timm when the file is not there.
    """
    entry = ZOO.get(name)
    if entry is not None:
        kwargs = {**entry.kwargs(), **kwargs}
    elif "." in name:
        raise ValueError(f"unknown pretrained tag {name!r}; known: see videomamba.models.ZOO")
    local = None
    if pretrained and checkpoint_path is None:
        if entry is None:
            raise ValueError(f"pretrained=True needs a tagged name such as '{name}.in1k_res224' "
                             "or checkpoint_path=...")
        local = checkpoint_home() / entry.file
        if local.is_file():
            checkpoint_path = local
    use_hub = pretrained and checkpoint_path is None
    model = timm.create_model(name, pretrained=use_hub, **kwargs)
    if checkpoint_path is not None:
        model.load_report = load_checkpoint(model, checkpoint_path, strict=strict, inflate=inflate)
    return model


def list_models(pretrained: bool = False) -> list[str]:
    """Registered variant names, or with ``pretrained=True`` every ``variant.tag`` of the zoo."""
    if pretrained:
        return sorted(ZOO)
    return timm.list_models("videomamba_*")
