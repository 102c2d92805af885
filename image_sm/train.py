"""Image classification with VideoMamba: ``python -m image_sm.train --config CONFIG [--opts k=v ...]``.

Single process, ``torchrun --nproc_per_node=N`` or Slurm ``srun``; ``--eval`` evaluates a checkpoint.
The run itself (optimiser, schedule, DDP/DeepSpeed, resume, checkpoints, logs) is
``videomamba.engine.TrainingRun``; this file only assembles the image experiment: data, model, loss.
"""
from __future__ import annotations

import torch

from videomamba.checkpoint import load_checkpoint
from videomamba.engine import save_config
from videomamba.engine import task
from videomamba.engine.loaders import build_loaders
from videomamba.engine.runner import TrainingRun
from videomamba.engine.task import eval_weights, log, run_main, seed_everything, start_task
from videomamba.factory import create_model
from videomamba.tasks.classification import (ClassificationLoss, SelfDistillationLoss, build_criterion, evaluate,
                                             with_mixup)

from .data import build_datasets


def build_model(cfg, distill_dim: int | None = None, load_finetune: bool = True):
    # e.g. 224 -> 448 fine-tuning: the loader interpolates pos_embed and drops a mismatched head. Any timm
    # model name works too (the masked-pretraining pipeline trains a CLIP-architecture ViT teacher here).
    extra = {"distill_dim": distill_dim} if distill_dim else {}
    return task.build_model(cfg, load_finetune, log=log, **task.input_shape(cfg), **extra)


def build_teacher(cfg, device) -> torch.nn.Module:
    """The frozen self-distillation teacher (VideoMamba-S in the paper) from ``distill.teacher_checkpoint``."""
    d = cfg.distill
    if not d.get("teacher_checkpoint"):
        raise ValueError("distill.enabled needs distill.teacher_checkpoint (e.g. videomamba_s16_in1k_res224.pth)")
    teacher = create_model(d.teacher, num_classes=cfg.model.num_classes, img_size=cfg.data.img_size,
                           drop_path_rate=0.0, **(d.get("teacher_kwargs") or {}))
    report = load_checkpoint(teacher, d.teacher_checkpoint)
    log(f"teacher {d.teacher} from {d.teacher_checkpoint}:\n{report}")
    if report.missing or report.dropped:
        raise RuntimeError(f"{d.teacher_checkpoint}: the teacher checkpoint does not fit {d.teacher} "
                           f"(missing {report.missing[:5]}, dropped {list(report.dropped)[:5]})")
    return teacher.to(device)


def main(argv=None):
    args, cfg, info = start_task(__doc__, argv, "only evaluate")
    seed_everything(cfg.seed)            # the same initial weights on every rank ...
    distill = cfg.get("distill") or {}
    teacher = build_teacher(cfg, info.device) if distill.get("enabled") and not args.eval else None
    weights = eval_weights(cfg, args.checkpoint, log) if args.eval else None
    model = build_model(cfg, distill_dim=teacher.embed_dim if teacher is not None else None,
                        load_finetune=weights is None)
    seed_everything(cfg.seed + info.rank)   # ... and different augmentation / drop-path draws per rank

    train_set, val_set = build_datasets(cfg)
    train_loader, val_loader, train_sampler = build_loaders(cfg, info, train_set, val_set)
    progress = not args.no_progress

    if args.eval:   # strict; a self-distillation student's distill_head is skipped
        if weights is not None:
            log(f"evaluating {weights}")
        run = TrainingRun(cfg, info, model, None, val_loader, evaluate_fn=evaluate, metric="acc1", progress=progress)
        stats = run.evaluate_only(weights)
        log(f"eval: top-1 {stats['acc1']:.2f}  top-5 {stats['acc5']:.2f}  loss {stats['loss']:.4f}  (n={stats['n']})")
        return stats

    if info.is_main:
        save_config(cfg, f"{cfg.output_dir}/config.yaml")
    criterion, mixup = build_criterion(cfg)
    loss = (SelfDistillationLoss(teacher, criterion, distill.get("weight", 1.0)) if teacher is not None
            else ClassificationLoss(criterion))
    run = TrainingRun(cfg, info, model, train_loader, val_loader, train_sampler, with_mixup(loss, mixup),
                      evaluate_fn=evaluate, metric="acc1", progress=progress)
    return run.fit()


if __name__ == "__main__":
    run_main(main, "image_sm.train", cpu_processes=True)
