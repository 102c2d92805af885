"""Backward + optimiser step, for plain PyTorch (DDP or not) and for DeepSpeed, behind one interface so
the train loop does not care which one runs: ``micro_step(loss, boundary)`` once per micro-batch."""
from __future__ import annotations

import torch


class TorchStepper:
    """Gradient accumulation over ``accum_steps`` micro-batches, optional GradScaler (fp16) and clipping."""

    def __init__(self, model: torch.nn.Module, optimizer, accum_steps: int = 1, clip_grad: float | None = None,
                 scaler=None):
        self.model, self.optimizer, self.accum_steps = model, optimizer, accum_steps
        self.clip_grad, self.scaler = clip_grad, scaler

    def micro_step(self, loss: torch.Tensor, boundary: bool) -> float | None:
        """Backward; on an accumulation boundary also clip and step. Returns the grad norm when clipped."""
        scaled = loss / self.accum_steps
        (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
        if not boundary:
            return None
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        norm = None
        if self.clip_grad:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad).item()
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def zero_grad(self):
        self.optimizer.zero_grad(set_to_none=True)


class DeepSpeedStepper:
    """DeepSpeed owns scaling, accumulation (``gradient_accumulation_steps``) and clipping: every
    micro-batch calls ``engine.backward`` and ``engine.step`` and the engine steps on its boundary."""

    def __init__(self, engine):
        self.engine = engine
        self.optimizer = engine.optimizer

    def micro_step(self, loss: torch.Tensor, boundary: bool) -> float | None:
        if boundary != self.engine.is_gradient_accumulation_boundary():
            raise RuntimeError("DeepSpeedStepper: the train loop and DeepSpeed disagree on the accumulation "
                               "boundary; gradient_accumulation_steps must equal train.accum_steps")
        self.engine.backward(loss)
        self.engine.step()
        return None

    def zero_grad(self):
        pass  # the engine zeroes its gradients after each step
