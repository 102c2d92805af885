"""The video-text training loss: the model computes its losses in one forward (VTC, VTM, MLM, UTA; see
:class:`videomamba.models.video_text.VideoMambaText`); this weights and sums them for the engine's loop."""
from __future__ import annotations


class VideoTextLoss:
    """``loss_fn(model, x, idx) -> (loss, parts)``: the weighted sum of the model's losses, weights from the
    config's ``loss.*`` (a weight of 0 turns a loss off); ``parts`` are logged as ``loss_<name>``."""

    def __init__(self, weights: dict):
        self.weights = {k: float(v) for k, v in weights.items() if float(v or 0) > 0}

    def __call__(self, model, x, idx):
        losses = model(x["media"], x["input_ids"], x["attention_mask"], idx)
        total = sum(self.weights[k] * v for k, v in losses.items())
        return total, {f"loss_{k}": v.detach() for k, v in losses.items()}
