"""Image classification with VideoMamba: ``python -m image_sm.train --config CONFIG [--opts k=v ...]``.

Single process, ``torchrun --nproc_per_node=N`` or Slurm ``srun``; ``--eval`` evaluates a checkpoint.
The run itself (optimiser, schedule, DDP/DeepSpeed, resume, checkpoints, logs) is
``videomamba.engine.TrainingRun``; this file only assembles the image experiment: data, model, loss.
"""
from __future__ import annotations


import torch

import videomamba
from videomamba.engine import init_distributed, load_config, save_config
from videomamba.engine.classification import default_loss_fn, evaluate
from videomamba.engine.distill import SelfDistillationLoss
from videomamba.engine.loaders import build_loaders
from videomamba.engine.losses import build_criterion
from videomamba.engine.runner import TrainingRun
from videomamba.engine import task
from videomamba.engine.task import parse_task_args, run_main, eval_weights, seed_everything

from .data import build_datasets


def build_model(cfg, distill_dim: int | None = None, load_finetune: bool = True):
    # e.g. 224 -> 448 fine-tuning: the loader interpolates pos_embed and drops a mismatched head. Any timm
    # model name works too (the masked-pretraining pipeline trains a CLIP-architecture ViT teacher here).
    extra = {"distill_dim": distill_dim} if distill_dim else {}
    return task.build_model(cfg, load_finetune, log=lambda m: print(m, flush=True), img_size=cfg.data.img_size,
                            **extra)


def build_teacher(cfg, device) -> torch.nn.Module:
    """The frozen self-distillation teacher (VideoMamba-S in the paper) from ``distill.teacher_checkpoint``."""
    d = cfg.distill
    if not d.get("teacher_checkpoint"):
        raise ValueError("distill.enabled needs distill.teacher_checkpoint (e.g. videomamba_s16_in1k_res224.pth)")
    teacher = videomamba.create_model(d.teacher, num_classes=cfg.model.num_classes, img_size=cfg.data.img_size,
                                      drop_path_rate=0.0, **(d.get("teacher_kwargs") or {}))
    report = videomamba.load_checkpoint(teacher, d.teacher_checkpoint)
    print(f"teacher {d.teacher} from {d.teacher_checkpoint}:\n{report}", flush=True)
    if report.missing or report.dropped:
        raise RuntimeError(f"{d.teacher_checkpoint}: the teacher checkpoint does not fit {d.teacher} "
                           f"(missing {report.missing[:5]}, dropped {list(report.dropped)[:5]})")
    return teacher.to(device)


def main(argv=None):
    args = parse_task_args(__doc__, argv, "only evaluate")

    cfg = load_config(args.config, args.opts)
    info = init_distributed()
    seed_everything(cfg.seed)            # the same initial weights on every rank ...
    distill = cfg.get("distill") or {}
    teacher = build_teacher(cfg, info.device) if distill.get("enabled") and not args.eval else None
    weights = eval_weights(cfg, args.checkpoint) if args.eval else None
    model = build_model(cfg, distill_dim=teacher.embed_dim if teacher is not None else None,
                        load_finetune=weights is None)
    seed_everything(cfg.seed + info.rank)   # ... and different augmentation / drop-path draws per rank

    train_set, val_set = build_datasets(cfg)
    train_loader, val_loader, train_sampler = build_loaders(cfg, info, train_set, val_set)
    criterion, mixup_fn = build_criterion(cfg)

    if args.eval:
        if weights is not None:   # strict; a self-distillation student's distill_head is skipped
            videomamba.load_checkpoint(model, weights, strict=True)
            if info.is_main:
                print(f"evaluating {weights}", flush=True)
        model.to(info.device)
        wrapped = torch.nn.parallel.DistributedDataParallel(model) if info.distributed else model
        stats = evaluate(wrapped, val_loader, info.device, cfg.train.amp, not args.no_progress)
        if info.is_main:
            print(f"eval: top-1 {stats['acc1']:.2f}  top-5 {stats['acc5']:.2f}  loss {stats['loss']:.4f}  "
                  f"(n={stats['n']})", flush=True)
        return stats

    if info.is_main:
        save_config(cfg, f"{cfg.output_dir}/config.yaml")
    loss_fn = (SelfDistillationLoss(teacher, criterion, distill.get("weight", 1.0)) if teacher is not None
               else default_loss_fn(criterion))
    run = TrainingRun(cfg, info, model, train_loader, val_loader, train_sampler, loss_fn, mixup_fn,
                      progress=not args.no_progress)
    return run.fit()


if __name__ == "__main__":
    run_main(main, "image_sm.train")
