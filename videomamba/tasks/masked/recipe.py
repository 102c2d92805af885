"""Masked video pretraining's pieces from a config: the frozen CLIP teacher (checked against the student) and
the unmasked-token alignment loss (:class:`videomamba.objectives.MaskedAlignmentLoss`) the engine trains with.
Its evaluation (the mean alignment loss on fixed masks) is :func:`videomamba.objectives.evaluate_alignment`."""
from __future__ import annotations

from ...engine.task import log
from ...models.clip_teacher import load_clip_teacher
from ...objectives import MaskedAlignmentLoss


def build_alignment_loss(cfg, model, device) -> MaskedAlignmentLoss:
    """The teacher of ``cfg.teacher`` (its feature width and patch grid checked against the student ``model``)
    and the loss of ``cfg.mask`` / ``cfg.loss``."""
    t = cfg.teacher
    if not t.get("path"):
        raise ValueError("teacher.path is required: the CLIP visual tower file (videomamba convert-clip IN OUT "
                         "writes one from an OpenAI CLIP checkpoint)")
    teacher = load_clip_teacher(t.path).to(device)
    if teacher.out_dim != model.clip_output_dim:
        raise ValueError(f"teacher {t.path} gives {teacher.out_dim}-d features but the student's decoder gives "
                         f"{model.clip_output_dim} (model.kwargs.clip_output_dim)")
    grid = (teacher.img_size // teacher.patch_size,) * 2
    if grid != tuple(model.patch_embed.grid_size):
        raise ValueError(f"teacher {t.path} has a {grid[0]}x{grid[1]} patch grid ({teacher.img_size} px / "
                         f"{teacher.patch_size}), the student {model.patch_embed.grid_size}: the masks and "
                         "targets are per patch, so they must agree")
    log(f"teacher {t.path}: {teacher.describe()}")
    return MaskedAlignmentLoss(teacher, cfg.mask.type, cfg.mask.ratio, len(model.return_index),
                               t.get("return_interval", 1), cfg.get("loss", {}).get("ratio", 1.0))
