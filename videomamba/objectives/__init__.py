"""Training objectives built from tensors, shared by the models and the tasks: token masks (:mod:`.masks`),
the unmasked-token alignment with a CLIP teacher (:mod:`.alignment`) and the video-text contrastive, matching
and masked-language pieces (:mod:`.contrastive`). They sit below the models (the video-text model computes
its losses in ``forward``) and use nothing above :mod:`videomamba.utils`."""
from .alignment import MaskedAlignmentLoss, MaskedAlignmentStep, alignment_loss, evaluate_alignment, visible_targets
from .masks import MASK_TYPES, attention_mask, make_mask, visible_patches

__all__ = ["MASK_TYPES", "make_mask", "attention_mask", "visible_patches", "MaskedAlignmentLoss", "MaskedAlignmentStep",
           "alignment_loss", "evaluate_alignment", "visible_targets"]
