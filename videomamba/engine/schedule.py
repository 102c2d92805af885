"""Learning-rate / weight-decay schedules as plain arrays (index = optimiser step or epoch)."""
from __future__ import annotations

import math

import numpy as np


def cosine_per_step(base_value: float, final_value: float, epochs: int, iters_per_epoch: int,
                    warmup_epochs: float = 0, start_warmup_value: float = 0.0, warmup_steps: int = -1) -> np.ndarray:
    """One value per step: linear warmup from ``start_warmup_value`` to ``base_value``, then a half
    cosine down to ``final_value`` (the official video recipe's per-step schedule, also used for wd)."""
    total = int(epochs * iters_per_epoch)
    warm = warmup_steps if warmup_steps > 0 else int(warmup_epochs * iters_per_epoch)
    warm = min(warm, total)
    warmup = np.linspace(start_warmup_value, base_value, warm) if warm > 0 else np.array([])
    rest = np.arange(total - warm)
    cosine = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * rest / max(len(rest), 1)))
    out = np.concatenate((warmup, cosine))
    assert len(out) == total
    return out


def cosine_per_epoch(base_value: float, min_value: float, epochs: int, warmup_epochs: int = 0,
                     warmup_value: float = 0.0) -> np.ndarray:
    """One value per epoch, as timm's ``CosineLRScheduler`` (no warmup prefix, one cycle) gives for
    ``step(epoch)``: linear warmup, then ``min + (base - min) * (1 + cos(pi * e / epochs)) / 2``."""
    out = []
    for e in range(epochs):
        if e < warmup_epochs:
            out.append(warmup_value + e * (base_value - warmup_value) / warmup_epochs)
        else:
            out.append(min_value + 0.5 * (base_value - min_value) * (1 + math.cos(math.pi * e / epochs)))
    return np.array(out)
