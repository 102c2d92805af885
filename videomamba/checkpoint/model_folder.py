"""The model folder: ``config.json`` + ``model.safetensors``, the way timm and the Hugging Face Hub share models.

    model.save_pretrained("k400_tiny/", label_names=names)       # or videomamba.save_pretrained(model, ...)
    model = videomamba.from_pretrained("k400_tiny/")            # eval mode, weights loaded strictly
    model.label_names, model.preprocessing                      # what the folder says about its use

A folder is uploadable to the Hub as is, and ``timm.create_model("local-dir:k400_tiny/", pretrained=True)``
(after ``import videomamba``, which registers the architectures) builds the same model. ``config.json``:

* timm's keys: ``architecture`` (the registered variant), ``num_classes``, ``num_features``,
  ``global_pool``, ``label_names``, ``model_args`` (constructor kwargs that rebuild it: frames, size, width,
  depth, tubelet, ...), ``pretrained_cfg`` (timm's data config: input size, mean, std, crop);
* ours: ``preprocessing`` (how to read a video for it: ``num_frames``, ``input_size``, ``short_side_size``,
  ``mean``, ``std``, ``sampler``, ``sampling_rate``, ``num_views``, ``num_crops``), ``format_version``,
  ``source`` (where the weights came from).

``videomamba predict``, ``extract``, ``demo`` and :func:`videomamba.load_checkpoint` accept such a folder
wherever they take a checkpoint file; ``videomamba convert ck.pth FOLDER`` writes one from any official file.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..models import hooks as _hooks
from ..utils.checkpoint_io import CheckpointError, CheckpointNotFoundError, atomic_write

__all__ = ["Preprocessing", "save_pretrained", "from_pretrained", "is_model_folder", "read_folder_config",
           "model_args_of", "CONFIG_NAME", "WEIGHTS_NAME", "FORMAT_VERSION"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"   # the Hub's (and timm's) name for safetensors weights
FORMAT_VERSION = 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SAMPLERS = ("sparse", "dense", "ssv2", "lvu")
CARD_MARK = "Saved by the `videomamba` package"   # a model card we wrote (and may rewrite)


@dataclass
class Preprocessing:
    """How a video (or image) is read for a model: the test protocol its weights were evaluated with.

    Defaults are the Kinetics-400 protocol of the official video models: ``num_frames`` frames by sparse
    sampling, short side resized to ``short_side_size``, 4 temporal views x 3 crops, ImageNet mean/std.
    ``num_frames=None`` is an image model."""

    num_frames: int | None
    input_size: int
    short_side_size: int | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    sampler: str = "sparse"
    sampling_rate: int = 4
    num_views: int = 4
    num_crops: int = 3

    def __post_init__(self):
        if self.short_side_size is None:
            self.short_side_size = self.input_size
        self.mean, self.std = tuple(float(v) for v in self.mean), tuple(float(v) for v in self.std)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "preprocessing") -> "Preprocessing":
        """Validate ``d`` (a ``config.json`` block or a training checkpoint's ``extra.data``); unknown keys
        are ignored, a bad value raises :class:`CheckpointError` naming the key."""
        if not isinstance(d, Mapping):
            raise CheckpointError(source, f"'preprocessing' must be an object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known and v is not None}
        if "input_size" not in kw:
            raise CheckpointError(source, "'preprocessing' has no 'input_size'")
        for key in ("num_frames", "input_size", "short_side_size", "sampling_rate", "num_views", "num_crops"):
            if key in kw:
                v = kw[key]
                if isinstance(v, (list, tuple)) and len(v) == 2 and v[0] == v[1]:
                    v = v[0]   # a square (H, W) size
                if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                    raise CheckpointError(source, f"preprocessing.{key} must be a positive integer, got {v!r}")
                kw[key] = v
        for key in ("mean", "std"):
            if key in kw:
                v = kw[key]
                if not (isinstance(v, (list, tuple)) and len(v) == 3 and all(isinstance(x, (int, float)) for x in v)):
                    raise CheckpointError(source, f"preprocessing.{key} must be 3 numbers (RGB), got {v!r}")
        if kw.get("short_side_size", kw["input_size"]) < kw["input_size"]:
            raise CheckpointError(source, f"preprocessing.short_side_size={kw['short_side_size']} is smaller than "
                                  f"input_size={kw['input_size']}: the crop would not fit")
        if kw.get("sampler", "sparse") not in SAMPLERS:
            raise CheckpointError(source, f"preprocessing.sampler={kw['sampler']!r} is not one of {SAMPLERS}")
        kw.setdefault("num_frames", None)
        return cls(**kw)


# ---------------------------------------------------------------------------- what rebuilds a model
def model_args_of(model: torch.nn.Module) -> tuple[str, dict[str, Any]]:
    """``(architecture, kwargs)`` such that ``create_model(architecture, **kwargs)`` rebuilds ``model``: its
    ``model.config``, written as the fields that differ from what the architecture sets by itself (the
    config's defaults under the variant's sizes), as transformers writes a config's differences."""
    from ..models import VisionMamba
    from ..models.variants import VARIANT_ARGS

    if not isinstance(model, VisionMamba):
        raise TypeError(f"save_pretrained: a VisionMamba is needed, got {type(model).__name__} (a video-text "
                        "model saves its vision encoder's backbone: convert it with --vision-only)")
    config = model.config
    name = config.architecture
    if name is None:   # built from the class: name the variant of its width (every other size is written out)
        suffix = "" if config.model_type == "videomamba" else "_pretrain"
        name = next((v + suffix for v, a in VARIANT_ARGS.items() if a["embed_dim"] == config.embed_dim),
                    "videomamba_tiny" + suffix)
    variant = name[:-len("_pretrain")] if name.endswith("_pretrain") else name
    defaults = {**type(config)().fields(), **VARIANT_ARGS.get(variant, {})}
    args = {k: v for k, v in config.kwargs().items() if v != defaults.get(k)}
    return name, args


def _json_ready(value):
    if isinstance(value, tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, list):
        return [_json_ready(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    return value


def _default_preprocessing(model) -> Preprocessing:
    h, w = model.patch_embed.img_size
    if h != w:
        raise ValueError(f"save_pretrained: input size {(h, w)} is not square, and the video test crops are: "
                         "a model folder holds square-input models only")
    return Preprocessing(num_frames=model.num_frames, input_size=int(h))


def _model_card(architecture: str, config: Mapping[str, Any]) -> str:
    pre = config["preprocessing"]
    kind = "video" if pre["num_frames"] else "image"
    shape = (f"{pre['num_frames']} frames at {pre['input_size']}px" if pre["num_frames"]
             else f"{pre['input_size']}px images")
    task = f"{config['num_classes']}-class {kind} classifier" if config["num_classes"] else f"{kind} backbone (no head)"
    return (f"---\nlicense: apache-2.0\nlibrary_name: timm\ntags:\n- videomamba\n- {kind}-classification\n"
            f"- state-space-model\n---\n\n# {architecture}: VideoMamba {task}\n\n"
            f"{shape}; source: `{config.get('source') or 'unknown'}`. {CARD_MARK} "
            "(arXiv 2403.06977).\n\n```python\nimport videomamba\n"
            "model = videomamba.from_pretrained(\"path/to/this/folder\")\n```\n")


def save_pretrained(model: torch.nn.Module, directory: str | os.PathLike, label_names: Sequence[str] | None = None,
                    preprocessing: Preprocessing | Mapping[str, Any] | None = None, source: str | None = None,
                    model_card: bool = True) -> Path:
    """Write ``directory/config.json`` and ``directory/model.safetensors`` (each file atomically), plus a
    ``README.md`` model card unless one is there. ``label_names``/``preprocessing`` default to the model's
    own (``model.label_names``/``model.preprocessing``, set by :func:`from_pretrained`), else no names and
    the Kinetics-400 protocol at the model's frames and size. Returns the folder."""
    from ..utils.checkpoint_io import save_checkpoint

    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise CheckpointError(directory, "exists and is not a folder: a model folder is written there")
    architecture, args = model_args_of(model)
    if preprocessing is None:
        preprocessing = getattr(model, "preprocessing", None) or _default_preprocessing(model)
    if isinstance(preprocessing, Mapping):
        preprocessing = Preprocessing.from_dict(preprocessing)
    if preprocessing.input_size != model.patch_embed.img_size[0]:
        raise ValueError(f"save_pretrained: preprocessing.input_size={preprocessing.input_size} but the model takes "
                         f"{model.patch_embed.img_size[0]}px")
    if preprocessing.num_frames != model.num_frames:
        raise ValueError(f"save_pretrained: preprocessing.num_frames={preprocessing.num_frames} but the model "
                         f"takes {model.num_frames} frames")
    if label_names is None:
        label_names = getattr(model, "label_names", None)
    num_classes = int(model.num_classes)
    if label_names is not None:
        label_names = [str(n) for n in label_names]
        if len(label_names) != num_classes:
            raise ValueError(f"save_pretrained: {len(label_names)} label names for a {num_classes}-class head")
    pre = preprocessing.to_dict()
    pretrained_cfg = {   # timm's data config, so timm's own tools resolve the right input
        "architecture": architecture,
        "input_size": [3, pre["input_size"], pre["input_size"]],
        "interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "center",
        "mean": pre["mean"], "std": pre["std"], "num_classes": num_classes,
        "fixed_input_size": True, "first_conv": "patch_embed.proj", "classifier": "head",
        "license": "apache-2.0", "paper_ids": "arXiv:2403.06977",
        "origin_url": "https://github.com/OpenGVLab/VideoMamba",
    }
    config: dict[str, Any] = {
        "architecture": architecture,
        "num_classes": num_classes,
        "num_features": int(model.num_features),
        "global_pool": getattr(model, "global_pool", "token"),
    }
    if label_names:
        config["label_names"] = label_names
    config.update({
        "model_args": _json_ready(args),
        "pretrained_cfg": pretrained_cfg,
        "preprocessing": pre,
        "format_version": FORMAT_VERSION,
        "source": source if source is not None else getattr(model, "pretrained_source", None),
    })
    directory.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, directory / WEIGHTS_NAME, metadata={"architecture": architecture})
    text = json.dumps(config, indent=2) + "\n"
    atomic_write(directory / CONFIG_NAME, lambda tmp: Path(tmp).write_text(text))
    card = directory / "README.md"
    if model_card and (not card.exists() or CARD_MARK in card.read_text(errors="replace")):   # never a user's card
        atomic_write(card, lambda tmp: Path(tmp).write_text(_model_card(architecture, config)))
    return directory


# ---------------------------------------------------------------------------- reading
def is_model_folder(path: str | os.PathLike) -> bool:
    """True for a folder holding a ``config.json`` (a model folder, perhaps a broken one)."""
    p = Path(path)
    return p.is_dir() and (p / CONFIG_NAME).is_file()


def read_folder_config(directory: str | os.PathLike) -> dict[str, Any]:
    """``config.json`` of a model folder, checked: a problem raises :class:`CheckpointError` naming the file
    and the line (bad JSON) or key."""
    directory = Path(directory)
    path = directory / CONFIG_NAME
    if not directory.exists():
        raise CheckpointNotFoundError(directory, "model folder not found")
    if not path.is_file():
        raise CheckpointNotFoundError(path, "no config.json: a model folder holds config.json + model.safetensors "
                                      "(written by save_pretrained or `videomamba convert CK FOLDER`)")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CheckpointError(path, f"line {err.lineno} column {err.colno}: not valid JSON ({err.msg})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise CheckpointError(path, f"cannot read the file ({err})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(path, f"must hold a JSON object, got {type(cfg).__name__}")
    arch = cfg.get("architecture")
    if not isinstance(arch, str):
        raise CheckpointError(path, "key 'architecture' (the registered variant, e.g. 'videomamba_tiny') is missing")
    from ..factory import list_models

    if arch not in list_models():
        raise CheckpointError(path, f"architecture {arch!r} is not a VideoMamba variant ({', '.join(list_models())})")
    args = cfg.setdefault("model_args", {})
    if not isinstance(args, dict):
        raise CheckpointError(path, f"'model_args' must be an object, got {type(args).__name__}")
    n = cfg.get("num_classes", args.get("num_classes"))
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise CheckpointError(path, f"'num_classes' must be an integer >= 0, got {n!r}")
    names = cfg.get("label_names")
    if names is not None:
        if isinstance(names, dict):   # timm allows {index: name}
            names = [names.get(str(i), names.get(i, f"class {i}")) for i in range(n)]
        if not (isinstance(names, list) and all(isinstance(s, str) for s in names)) or len(names) != n:
            raise CheckpointError(path, f"'label_names' must be a list of {n} strings (one per class)")
        cfg["label_names"] = names
    pre = cfg.get("preprocessing")
    if pre is None:   # a plain timm folder: its data config, at the model's frames
        pc = cfg.get("pretrained_cfg") or {}
        if not isinstance(pc, dict):
            raise CheckpointError(path, f"'pretrained_cfg' must be an object, got {type(pc).__name__}")
        size = pc.get("input_size") or [3, args.get("img_size", 224)]
        if not (isinstance(size, list) and len(size) == 3):
            raise CheckpointError(path, f"pretrained_cfg.input_size must be [channels, height, width], got {size!r}")
        size = size[-1]
        pre = {"num_frames": args.get("num_frames"), "input_size": size,
               **{k: pc[k] for k in ("mean", "std") if k in pc}}
    cfg["preprocessing"] = Preprocessing.from_dict(pre, source=f"{path} key 'preprocessing'")
    if cfg["preprocessing"].num_frames != args.get("num_frames"):
        raise CheckpointError(path, f"preprocessing.num_frames={cfg['preprocessing'].num_frames} but "
                              f"model_args.num_frames={args.get('num_frames')}")
    img = args.get("img_size", 224)
    img = img[0] if isinstance(img, (list, tuple)) and len(img) == 2 and img[0] == img[1] else img
    if cfg["preprocessing"].input_size != img:
        raise CheckpointError(path, f"preprocessing.input_size={cfg['preprocessing'].input_size} but the model "
                              f"takes {img}px (model_args.img_size)")
    cfg["num_classes"] = n
    return cfg


def from_pretrained(directory: str | os.PathLike, device: str | torch.device | None = None,
                    **kwargs) -> torch.nn.Module:
    """Build the model of a folder written by :func:`save_pretrained` and load its weights strictly.

    Returns it in eval mode with ``label_names`` (list or None), ``preprocessing``
    (:class:`Preprocessing`), ``pretrained_cfg`` and ``pretrained_source`` (the folder) set. ``kwargs`` are
    extra constructor options that do not change the weights' shapes (e.g. ``drop_path_rate`` for
    fine-tuning, ``inference_memory``)."""
    from . import STRICT_FAILED, _strict_summary, load_checkpoint
    from ..factory import create_model

    directory = Path(directory)
    cfg = read_folder_config(directory)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointNotFoundError(weights, "weights file not found (a model folder holds config.json + "
                                      "model.safetensors)")
    args = {**cfg["model_args"], "num_classes": cfg["num_classes"], **kwargs}
    try:
        model = create_model(cfg["architecture"], **args)
    except (TypeError, ValueError, KeyError, RuntimeError) as err:
        raise CheckpointError(directory / CONFIG_NAME, f"'model_args' do not build a model "
                              f"({type(err).__name__}: {err})") from None
    try:
        load_checkpoint(model, weights, strict=True, verbose=False)
    except CheckpointError as err:
        problem = err.problem
        if problem.startswith(STRICT_FAILED) and err.report is not None:
            # say what config.json and the weights each hold (e.g. "config.json says 10 classes, the weights hold 8")
            problem = _strict_summary(err.report, model_from=CONFIG_NAME)
        raise type(err)(weights, problem, report=err.report) from None
    model.label_names = cfg.get("label_names")
    model.preprocessing = cfg["preprocessing"]
    model.pretrained_cfg = {**(cfg.get("pretrained_cfg") or {}), "source": "local-dir", "file": str(directory)}
    model.pretrained_source = str(directory)
    if device is not None:
        model = model.to(device)
    return model.eval()


_hooks.install(save_pretrained=save_pretrained, from_pretrained=from_pretrained)
