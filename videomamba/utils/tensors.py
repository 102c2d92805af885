"""Helpers on tensors and modules that the models, losses, engine and tools all need."""
from __future__ import annotations

import contextlib

import torch


def autocast(device: torch.device, amp: str):
    """``amp``: 'none', 'bf16' or 'fp16'."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def to_device(x, device):
    """A batch part (tensor, or a dict / list / tuple of them, e.g. a video-text batch) on ``device``."""
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(to_device(v, device) for v in x)
    return x


def batch_len(x) -> int:
    """Samples in a batch part: the first dimension of its (first) tensor."""
    if isinstance(x, torch.Tensor):
        return x.shape[0]
    values = x.values() if isinstance(x, dict) else x
    return next(batch_len(v) for v in values if isinstance(v, (torch.Tensor, dict, list, tuple)))


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model inside DDP / DeepSpeed / torch.compile wrappers."""
    for attr in ("module", "_orig_mod"):
        while hasattr(model, attr) and isinstance(getattr(model, attr), torch.nn.Module):
            model = getattr(model, attr)
    return model
