"""One entry for "a model from somewhere": a model folder, a training checkpoint of this package, or any
VideoMamba weights file (official ``.pth``, converted ``.safetensors``). ``predict``, ``extract``, the web
demo and ``convert`` build their model through :func:`load_model`, so each accepts all three.

* a **model folder** (:mod:`videomamba.checkpoint.model_folder`) brings its architecture, label names and preprocessing;
* a **training checkpoint** (``extra.model_config``, ``extra.label_names``, ``extra.data``) is rebuilt
  from its saved config, with its saved sampler, input size and test views;
* **weights alone** are rebuilt from their tensor shapes (:func:`~videomamba.checkpoint.infer_model_config`)
  and read the Kinetics way (sparse sampling, short side = input size, 4 temporal views x 3 crops), or the
  SSv2 way (2 views) for an official SSv2 file. A masked-pretraining student (``clip_decoder``, ``norm``)
  loads as a backbone; of a video-text file only ``vision_encoder.*`` is used.

Weights load strictly; errors are :class:`~videomamba.checkpoint.CheckpointError` naming the file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from ..checkpoint import CheckpointError, extract_state_dict, infer_model_config, load_checkpoint, read_checkpoint
from ..models.config import VideoTextConfig
from ..checkpoint.model_folder import Preprocessing, from_pretrained, is_model_folder

__all__ = ["LoadedModel", "load_model"]


@dataclass
class LoadedModel:
    """A model in eval mode and what its source says about using it."""

    model: torch.nn.Module
    source: str
    architecture: str
    kind: str                          # 'folder' | 'training' | 'weights'
    preprocessing: Preprocessing
    label_names: list[str] | None = None
    model_config: dict[str, Any] = field(default_factory=dict)   # create_model kwargs (not the name)

    @property
    def num_classes(self) -> int:
        return int(getattr(self.model, "num_classes", 0) or 0)


def _training_meta(obj: Any) -> Mapping | None:
    extra = obj.get("extra") if isinstance(obj, Mapping) else None
    config = extra.get("model_config") if isinstance(extra, Mapping) else None
    # a backbone's or student's config (a video-text model's is rebuilt by the search tools, not here)
    if isinstance(config, Mapping) and config.get("model_type", "videomamba") != VideoTextConfig.model_type:
        return extra
    return None


def _square(source: str, size) -> int:
    if isinstance(size, (tuple, list)):
        if len(size) != 2 or size[0] != size[1]:
            raise CheckpointError(source, f"input size {tuple(size)} is not square: the test crops are square")
        size = size[0]
    return int(size)


def _vision_part(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The vision encoder of a video-text state dict (official UMT or ``video_mm``) as a backbone; any other
    dict unchanged. ``pool_norm`` (the norm before the video-text pooling) belongs to the retrieval head,
    like ``clip_decoder``, not to the backbone's tokens."""
    vision = {k[len("vision_encoder."):]: v for k, v in sd.items()
              if k.startswith("vision_encoder.") and not k.startswith("vision_encoder.pool_norm.")}
    return vision if vision and len(vision) < len(sd) else sd


def _official_protocol(source: str, num_frames: int | None, size: int) -> Preprocessing:
    """The test protocol of weights that do not say: SSv2 (2 temporal views) for an official SSv2 file
    name, else Kinetics-400 (4 x 3)."""
    ssv2 = "ssv2" in Path(source).name.lower()
    return Preprocessing(num_frames=num_frames, input_size=size, sampler="ssv2" if ssv2 else "sparse",
                         num_views=2 if ssv2 else 4, num_crops=3)


def load_model(source: str | os.PathLike, device: str | torch.device | None = None,
               model_key: str | None = None, **model_kwargs) -> LoadedModel:
    """Build and load the model ``source`` holds (see the module doc), in eval mode on ``device`` (default
    CPU). ``model_key`` picks the weights of a container (e.g. ``'model_ema'``; default: ``model``/``module``/
    ``state_dict`` or a flat dict). ``model_kwargs`` are extra constructor options that do not change weight shapes (e.g.
    ``inference_memory='low'``)."""
    from ..factory import create_model

    src = os.fspath(source)
    if is_model_folder(src):
        if model_key is not None:
            raise CheckpointError(src, "a model folder holds one set of weights: no model_key")
        model = from_pretrained(src, **model_kwargs)
        from ..checkpoint.model_folder import model_args_of

        arch, cfg = model_args_of(model)
        loaded = LoadedModel(model, src, arch, "folder", model.preprocessing, model.label_names, cfg)
    else:
        obj = read_checkpoint(src)
        sd = extract_state_dict(obj, model_key, source=src)
        meta = _training_meta(obj)
        data = dict(meta.get("data") or {}) if meta is not None else {}
        if meta is not None:
            cfg = dict(meta["model_config"])   # model.config.to_dict(); older checkpoints: create_model kwargs + name
            cfg.pop("model_type", None)
            name = cfg.pop("architecture", None) or cfg.pop("name", None)
            cfg.pop("name", None)
            if not isinstance(name, str):
                raise CheckpointError(src, "extra.model_config has no model name")
        else:
            sd = _vision_part(sd)
            cfg = infer_model_config(sd, source=src)
            name = cfg.pop("name")
        try:
            model = create_model(name, **{**cfg, **model_kwargs})
        except (TypeError, ValueError, KeyError, RuntimeError) as err:
            raise CheckpointError(src, f"cannot build the model its config describes "
                                  f"({type(err).__name__}: {err})") from None
        try:
            load_checkpoint(model, sd, strict=True, verbose=False)
        except CheckpointError as err:   # the loader names the in-memory dict: name the file instead
            raise type(err)(src, err.problem, report=err.report) from None
        size = _square(src, data.get("input_size") or cfg.get("img_size") or 224)
        frames = cfg.get("num_frames")
        if meta is not None:
            pre = Preprocessing.from_dict({"num_frames": frames, **data, "input_size": size,
                                           "short_side_size": _square(src, data.get("short_side_size") or size)},
                                          source=f"{src} extra.data")
            names = meta.get("label_names")
            names = list(names) if isinstance(names, (list, tuple)) and all(isinstance(s, str) for s in names) else None
        else:
            pre, names = _official_protocol(src, frames, size), None
        model.preprocessing, model.label_names, model.pretrained_source = pre, names, src
        loaded = LoadedModel(model, src, name, "training" if meta is not None else "weights", pre, names, cfg)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    loaded.model = loaded.model.to(dev).eval()
    return loaded
