"""Masked pretraining pieces shared by video_sm and video_mm: token masks and the unmasked-token
alignment with a CLIP teacher (the teacher itself is :mod:`videomamba.models.clip_teacher`)."""
from .alignment import MaskedAlignmentStep, alignment_loss, evaluate_alignment, visible_targets
from .masks import MASK_TYPES, attention_mask, make_mask, visible_patches

__all__ = ["MASK_TYPES", "make_mask", "attention_mask", "visible_patches", "MaskedAlignmentStep",
           "alignment_loss", "evaluate_alignment", "visible_targets"]
