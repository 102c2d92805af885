"""Checkpoint loading (every official layout) and saving (safetensors, atomic)."""
from __future__ import annotations

import logging
import os
from typing import Mapping

import torch

from .adapt import (AdaptResult, adapt_state_dict, inflate_patch_weight, resize_spatial_pos_embed,
                    resize_temporal_pos_embed, strip_prefixes)
from .io import extract_state_dict, read_checkpoint, save_checkpoint
from .report import LoadReport

_log = logging.getLogger("videomamba")


def load_checkpoint(model: torch.nn.Module, path_or_state_dict: str | os.PathLike | Mapping,
                    strict: bool = False, inflate: str = "center", model_key: str | None = None,
                    weights_only: bool | None = None, verbose: bool = True) -> LoadReport:
    """Load any official VideoMamba checkpoint into ``model`` and say what happened.

    Accepts a path (``.pth``/``.safetensors``) or an in-memory dict; training containers
    (``model``/``module``/``state_dict``, or ``model_key``) and flat dicts; ``module.``/``backbone.``/
    ``encoder.``/``vision_encoder.`` prefixes. Adapts sizes (2D->3D ``inflate='center'|'average'``,
    bicubic spatial and linear temporal position embeddings) and drops a head of another label set.

    ``strict=True`` raises if any model tensor is missing or dropped or any checkpoint tensor is left
    over; otherwise the report (also logged when ``verbose``) lists them.
    """
    if isinstance(path_or_state_dict, Mapping):
        source, obj = "state_dict", path_or_state_dict
    else:
        source = str(path_or_state_dict)
        obj = read_checkpoint(path_or_state_dict, weights_only=weights_only)
    sd = extract_state_dict(obj, model_key, source=source)
    result = adapt_state_dict(sd, model, inflate=inflate, report=LoadReport(source=source))
    report = result.report
    if strict and not report.clean:
        raise RuntimeError(f"strict load failed:\n{report}")
    model.load_state_dict(result.state_dict, strict=False)
    if verbose:
        _log.info("%s", report)
    return report


__all__ = ["load_checkpoint", "save_checkpoint", "read_checkpoint", "extract_state_dict", "adapt_state_dict",
           "AdaptResult", "LoadReport", "inflate_patch_weight", "resize_spatial_pos_embed",
           "resize_temporal_pos_embed", "strip_prefixes"]
