"""Checkpoint loading (every official layout) and saving (safetensors, atomic)."""
from __future__ import annotations

import logging
import os
import re
from typing import Mapping

import torch

from .adapt import (AdaptResult, adapt_state_dict, inflate_patch_weight, resize_spatial_pos_embed,
                    resize_temporal_pos_embed, strip_prefixes)
from .infer import architecture_mismatch, infer_model_config
from ..utils.checkpoint_io import (CheckpointError, CheckpointKeyError, CheckpointMismatchError,
                                   CheckpointNotFoundError, CheckpointTypeError, extract_state_dict, read_checkpoint,
                                   save_checkpoint, sniff_format)
from ..models import hooks as _hooks
from .report import LoadReport

_log = logging.getLogger("videomamba")


def checkpoint_filter_fn(state_dict, model):
    """timm's hook (``pretrained_filter_fn``): any official checkpoint (container, prefixes, sizes) adapted to
    ``model``. Installed into the models' registry, which cannot import this package."""
    return adapt_state_dict(extract_state_dict(state_dict), model).state_dict


_hooks.install(checkpoint_filter_fn=checkpoint_filter_fn)


def load_checkpoint(model: torch.nn.Module, path_or_state_dict: str | os.PathLike | Mapping,
                    strict: bool = False, inflate: str = "center", model_key: str | None = None,
                    weights_only: bool | None = None, verbose: bool = True) -> LoadReport:
    """Load any official VideoMamba checkpoint into ``model`` and say what happened.

    Accepts a path (``.pth``/``.safetensors``) or an in-memory dict; training containers
    (``model``/``module``/``state_dict``, or ``model_key``) and flat dicts; ``module.``/``backbone.``/
    ``encoder.``/``vision_encoder.`` prefixes. Adapts sizes (2D->3D ``inflate='center'|'average'``,
    bicubic spatial and linear temporal position embeddings) and drops a head of another label set.

    Weights of another architecture raise :class:`CheckpointMismatchError` (a ``CheckpointError`` and a
    ``RuntimeError``) before the model is touched, in one line naming the file and the mismatch: a
    VideoMamba checkpoint must agree with the model on embed dim, depth and every block/patch-embedding
    shape that cannot be adapted, and any checkpoint must load at least one ``layers.*`` tensor (see
    :func:`~videomamba.checkpoint.infer.architecture_mismatch`). ``infer_model_config`` builds the
    model a checkpoint holds.

    ``strict=True`` also raises (``CheckpointMismatchError``, its ``.report`` the full :class:`LoadReport`)
    if any model tensor is missing or dropped or any checkpoint tensor is left over; otherwise the
    report (also logged when ``verbose``) lists them. Unreadable files raise :class:`CheckpointError`.
    """
    if isinstance(path_or_state_dict, Mapping):
        source, obj = "state_dict", path_or_state_dict
    else:
        source = str(path_or_state_dict)
        obj = read_checkpoint(path_or_state_dict, weights_only=weights_only)
    sd = extract_state_dict(obj, model_key, source=source)
    result = adapt_state_dict(sd, model, inflate=inflate, report=LoadReport(source=source))
    report = result.report
    target = model.state_dict()
    mismatch = architecture_mismatch(strip_prefixes(dict(sd), set(target), LoadReport(source=source)), target,
                                     report, raw_keys=list(sd))
    if mismatch is not None:
        raise CheckpointMismatchError(source, mismatch, report=report)
    if strict and not report.clean:
        raise CheckpointMismatchError(source, _strict_summary(report), report=report)
    model.load_state_dict(result.state_dict, strict=False)
    if verbose:
        _log.info("%s", report)
    return report


STRICT_FAILED = "strict load failed: "
# adapt.py's reason for a tensor it could not load: "shape (8,64) != model (10,64) ..." / "... cannot be adapted to
# model (10,64)"
_SHAPES = re.compile(r"^shape (\([\d,]*\)) (?:!= model|cannot be adapted to model) (\([\d,]*\))")


def _dropped_shapes(reason: str) -> tuple[str, str] | None:
    """``(checkpoint shape, model shape)`` of a dropped tensor's reason, or None for another reason."""
    m = _SHAPES.match(reason)
    return (m.group(1), m.group(2)) if m else None


def _class_counts(report: LoadReport) -> tuple[int, int] | None:
    """``(classes in the checkpoint, classes in the model)`` when the heads disagree, else None."""
    shapes = _dropped_shapes(report.dropped.get("head.weight", ""))
    if shapes is None:
        return None
    ck, model = (int(s.strip("()").split(",")[0]) for s in shapes)
    return ck, model


def _strict_summary(report: LoadReport, shown: int = 3, model_from: str | None = None) -> str:
    """One line naming what disagrees in a load that is not clean: a head of another class count as both
    counts, a tensor of another shape with both shapes, and the first ``shown`` missing / unexpected keys.
    ``model_from``: the file the model was built from (e.g. ``"config.json"``): the line then says what that
    file and the weights each hold, without the ``"strict load failed: "`` lead."""
    def some(items: list[str]) -> str:
        return ", ".join(items[:shown]) + (f" and {len(items) - shown} more" if len(items) > shown else "")

    ck_name = "the weights" if model_from else "the checkpoint"
    parts = []
    dropped = dict(report.dropped)
    classes = _class_counts(report)
    if classes is not None and classes[0] != classes[1]:
        ck, model = classes
        ck_shape, model_shape = _dropped_shapes(dropped.pop("head.weight"))
        if _dropped_shapes(dropped.get("head.bias", "")) is not None:
            dropped.pop("head.bias")
        parts.append(f"{model_from} says {model} classes, the weights hold {ck} (head.weight: {model_shape} vs "
                     f"{ck_shape})" if model_from else
                     f"the checkpoint holds {ck} classes, the model {model} (head.weight: {ck_shape} vs {model_shape})")
    if dropped:
        named = []
        for key, reason in dropped.items():
            shapes = _dropped_shapes(reason)
            named.append(f"{key} {shapes[0]} in {ck_name}, {shapes[1]} in the model" if shapes else f"{key}: {reason}")
        parts.append(f"{_count(len(dropped), 'tensor')} of another shape: {some(named)}")
    if report.missing:
        parts.append(f"{_count(len(report.missing), 'model tensor')} missing from {ck_name}: {some(report.missing)}")
    if report.unexpected:
        parts.append(f"{_count(len(report.unexpected), 'tensor')} in {ck_name} that the model does not have: "
                     f"{some(report.unexpected)}")
    return ("" if model_from else STRICT_FAILED) + "; ".join(parts)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


__all__ = ["load_checkpoint", "save_checkpoint", "read_checkpoint", "extract_state_dict", "adapt_state_dict",
           "AdaptResult", "LoadReport", "inflate_patch_weight", "resize_spatial_pos_embed",
           "resize_temporal_pos_embed", "strip_prefixes", "CheckpointError", "CheckpointNotFoundError",
           "CheckpointMismatchError", "CheckpointKeyError", "CheckpointTypeError", "infer_model_config",
           "sniff_format"]
