"""``create_model``: build a registered variant, optionally with official weights."""
from __future__ import annotations

import os
from pathlib import Path

import timm

from .checkpoint import load_checkpoint
from .models.zoo import HF_HUB_ID, ZOO


def checkpoint_home() -> Path:
    """Folder searched for official checkpoint files: ``$VIDEOMAMBA_HOME`` or ``~/.cache/videomamba``."""
    return Path(os.environ.get("VIDEOMAMBA_HOME", Path.home() / ".cache" / "videomamba"))


def create_model(name: str, pretrained: bool = False, checkpoint_path: str | os.PathLike | None = None,
                 strict: bool = False, inflate: str = "center", **kwargs):
    """Build ``videomamba_{tiny,small,middle,base}[.tag]``.

    ``num_frames=None`` (default) builds the image layout, an int the video layout. A tag (e.g.
    ``videomamba_tiny.k400_f8_res224``, see MODEL_ZOO.md) sets num_classes/img_size/num_frames to that
    checkpoint's; explicit kwargs win. Weights come from ``checkpoint_path`` or, with
    ``pretrained=True``, from the tag's official file (see :func:`fetch_checkpoint`). Loading goes
    through :func:`videomamba.load_checkpoint`; its report is kept as ``model.load_report``.
    """
    entry = ZOO.get(name)
    if entry is not None:
        kwargs = {**entry.kwargs(), **kwargs}
    elif "." in name:
        raise ValueError(f"unknown pretrained tag {name!r}; known: see videomamba.models.ZOO")
    if pretrained and checkpoint_path is None:
        if entry is None:
            raise ValueError(f"pretrained=True needs a tagged name such as '{name}.in1k_res224' "
                             "or checkpoint_path=...")
        checkpoint_path = fetch_checkpoint(entry.file)
    model = timm.create_model(name, pretrained=False, **kwargs)
    if checkpoint_path is not None:
        model.load_report = load_checkpoint(model, checkpoint_path, strict=strict, inflate=inflate)
    return model


def fetch_checkpoint(filename: str) -> Path:
    """Path of an official checkpoint file: from :func:`checkpoint_home`, else downloaded there from
    the Hugging Face hub (``OpenGVLab/VideoMamba``)."""
    home = checkpoint_home()
    local = home / filename
    if local.is_file():
        return local
    try:
        if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
            raise ConnectionError("HF_HUB_OFFLINE is set")
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(HF_HUB_ID, filename, local_dir=str(home)))
    except Exception as err:  # offline, no hub package, file renamed upstream, ...
        raise FileNotFoundError(
            f"official checkpoint {filename} is not in {home} and could not be downloaded from "
            f"{HF_HUB_ID} ({type(err).__name__}: {str(err).splitlines()[0][:200]}). Download it by hand "
            f"into $VIDEOMAMBA_HOME or pass checkpoint_path=...") from err


def list_models(pretrained: bool = False) -> list[str]:
    """Registered variant names, or with ``pretrained=True`` every ``variant.tag`` of the zoo."""
    if pretrained:
        return sorted(ZOO)
    return timm.list_models("videomamba_*")
