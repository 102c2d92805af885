"""Exponential moving average of model weights (timm ModelEma semantics: ``ema = d*ema + (1-d)*w`` for
floating tensors, buffers copied), kept in fp32 on the model's device or on CPU."""
from __future__ import annotations

import copy

import torch

from ..utils.tensors import unwrap


class ModelEma(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, decay: float = 0.9999, device: str | torch.device | None = None):
        super().__init__()
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.module = copy.deepcopy(unwrap(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        if device is not None:
            self.module.to(device)

    @torch.no_grad()
    def update(self, model: torch.nn.Module):
        src = unwrap(model).state_dict()
        for name, ema_v in self.module.state_dict().items():
            v = src[name].to(ema_v.device)
            if ema_v.dtype.is_floating_point:
                ema_v.mul_(self.decay).add_(v.to(ema_v.dtype), alpha=1.0 - self.decay)
            else:
                ema_v.copy_(v)

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)
