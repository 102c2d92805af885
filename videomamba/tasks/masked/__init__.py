"""Masked video pretraining with a CLIP teacher: the teacher and alignment loss of a config; the loss itself,
the masks and the evaluation are :mod:`videomamba.objectives` (the video-text model uses them too)."""
from ...objectives import MaskedAlignmentLoss, evaluate_alignment
from .recipe import build_alignment_loss

__all__ = ["build_alignment_loss", "MaskedAlignmentLoss", "evaluate_alignment"]
