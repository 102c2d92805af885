"""Stop a run on a non-finite loss with a diagnostic instead of training on NaNs."""
from __future__ import annotations

import math

import torch

from ..utils.dist import all_gather_object, all_reduce_sum


class NonFiniteLossError(RuntimeError):
    pass


def check_finite_loss(loss: torch.Tensor | float, step: int, epoch: int, model: torch.nn.Module | None = None,
                      lr: float | None = None):
    """Raise :class:`NonFiniteLossError` on every rank when any rank's loss is NaN/Inf.

    The message names the step, epoch, learning rate, which ranks diverged and the parameters that are
    already non-finite, which tells an lr blow-up (finite weights, huge loss) from corrupted weights."""
    value = float(loss.detach().float().item() if torch.is_tensor(loss) else loss)
    # Cheap every step: one all-reduce of a flag; the per-rank values are gathered only when one is bad.
    device = loss.device if torch.is_tensor(loss) else torch.device("cpu")
    if all_reduce_sum(torch.tensor([0.0 if math.isfinite(value) else 1.0], device=device)).item() == 0:
        return
    per_rank = all_gather_object(value)
    bad = [r for r, v in enumerate(per_rank) if not math.isfinite(v)]
    if not bad:
        return
    msg = f"non-finite loss at epoch {epoch}, step {step} on rank(s) {bad}: {[per_rank[r] for r in bad]}"
    if lr is not None:
        msg += f"; lr {lr:.3g}"
    if model is not None:
        broken = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
        msg += (f"; {len(broken)} non-finite parameter tensors, first: {broken[:5]}" if broken
                else "; all parameters still finite (try a lower lr, clip_grad, or bf16 instead of fp16)")
    raise NonFiniteLossError(msg)
