"""Image classification with VideoMamba: ``python -m image_sm.train --config CONFIG [--opts k=v ...]``.

Single process, ``torchrun --nproc_per_node=N`` or Slurm ``srun``; ``--eval`` evaluates a checkpoint.
Everything generic lives in ``videomamba.engine``; this file assembles the image experiment.
"""
from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np
import torch

import videomamba
from videomamba.data.image_dataset import build_image_dataset
from videomamba.engine import (ModelEma, RunLogger, cosine_per_epoch, cosine_per_step, find_resume,
                               init_distributed, load_config, load_training_state, param_groups, save_config,
                               save_training_state)
from videomamba.engine.classification import evaluate, train_one_epoch
from videomamba.engine.samplers import ShardSampler
from videomamba.engine.train_state import BEST, LATEST


def build_transforms(cfg, train: bool):
    from timm.data import create_transform

    a, d = cfg.aug, cfg.data
    if train:
        return create_transform(d.img_size, is_training=True, scale=tuple(a.scale), ratio=tuple(a.ratio),
                                hflip=a.hflip, color_jitter=a.color_jitter or None, auto_augment=a.auto_augment,
                                re_prob=a.reprob, interpolation="bicubic")
    return create_transform(d.img_size, is_training=False, crop_pct=a.eval_crop_pct, interpolation="bicubic")


def build_datasets(cfg):
    d = cfg.data
    if d.name == "moving_digits":
        from videomamba.data.moving_digits import make_image_variant

        root = make_image_variant(d.root, canvas=d.img_size)
        train_args, val_args = (root, root / "train.txt"), (root, root / "val.txt")
    elif d.name == "folder":
        train_args, val_args = (d.train_root, d.train_meta), (d.val_root, d.val_meta)
    else:
        raise ValueError(f"data.name must be 'moving_digits' or 'folder', got {d.name!r}")
    n = cfg.model.num_classes
    return (build_image_dataset(*train_args, transform=build_transforms(cfg, True), num_classes=n),
            build_image_dataset(*val_args, transform=build_transforms(cfg, False), num_classes=n))


def build_loaders(cfg, info, train_set, val_set):
    g = torch.Generator().manual_seed(cfg.seed)
    if info.distributed:
        from torch.utils.data.distributed import DistributedSampler

        train_sampler = DistributedSampler(train_set, info.world_size, info.rank, shuffle=True, seed=cfg.seed)
        val_sampler = ShardSampler(len(val_set), info.rank, info.world_size)   # exact: no padded duplicates
    else:
        train_sampler = torch.utils.data.RandomSampler(train_set, generator=g)
        val_sampler = torch.utils.data.SequentialSampler(val_set)
    kw = dict(batch_size=cfg.data.batch_size, num_workers=cfg.data.num_workers)
    return (torch.utils.data.DataLoader(train_set, sampler=train_sampler, drop_last=True, **kw),
            torch.utils.data.DataLoader(val_set, sampler=val_sampler, **kw), train_sampler)


def build_criterion(cfg):
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if cfg.aug.mixup > 0 or cfg.aug.cutmix > 0:
        from timm.data import Mixup

        mix = Mixup(mixup_alpha=cfg.aug.mixup, cutmix_alpha=cfg.aug.cutmix, label_smoothing=cfg.aug.smoothing,
                    num_classes=cfg.model.num_classes)
        return SoftTargetCrossEntropy(), mix
    if cfg.aug.smoothing > 0:
        return LabelSmoothingCrossEntropy(cfg.aug.smoothing), None
    return torch.nn.CrossEntropyLoss(), None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--opts", nargs="*", default=[], help="dotted overrides, e.g. train.lr=1e-3")
    ap.add_argument("--eval", action="store_true", help="only evaluate (cfg.model.finetune or the run's best)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    cfg = load_config(args.config, args.opts)
    info = init_distributed()
    seed = cfg.seed + info.rank
    random.seed(seed), np.random.seed(seed), torch.manual_seed(seed)
    out = Path(cfg.output_dir)
    if info.is_main:
        save_config(cfg, out / "config.yaml")

    train_set, val_set = build_datasets(cfg)
    train_loader, val_loader, train_sampler = build_loaders(cfg, info, train_set, val_set)
    model = videomamba.create_model(cfg.model.name, num_classes=cfg.model.num_classes, img_size=cfg.data.img_size,
                                    drop_path_rate=cfg.model.drop_path_rate, **(cfg.model.get("kwargs") or {}))
    if cfg.model.finetune:
        print(videomamba.load_checkpoint(model, cfg.model.finetune))
    model.to(info.device)
    ddp = torch.nn.parallel.DistributedDataParallel(model) if info.distributed else model

    t = cfg.train
    global_batch = cfg.data.batch_size * info.world_size * t.accum_steps
    lr = t.lr * global_batch / t.lr_scale_batch
    optimizer = torch.optim.AdamW(param_groups(model, t.weight_decay, t.layer_decay, t.layer_decay_mode),
                                  lr=lr, betas=tuple(t.betas))
    steps_per_epoch = max(len(train_loader) // t.accum_steps, 1)
    if t.sched_per == "epoch":
        lr_schedule = np.repeat(cosine_per_epoch(lr, t.min_lr, t.epochs, t.warmup_epochs, t.warmup_lr), steps_per_epoch)
    else:
        lr_schedule = cosine_per_step(lr, t.min_lr, t.epochs, steps_per_epoch, t.warmup_epochs, t.warmup_lr)
    criterion, mixup_fn = build_criterion(cfg)
    scaler = torch.amp.GradScaler(info.device.type) if t.amp == "fp16" else None
    ema = ModelEma(model, t.ema_decay) if t.ema_decay else None

    start_epoch, step, best = 0, 0, None
    resume = find_resume(out)
    if resume is not None and not args.eval:
        meta = load_training_state(resume, model, optimizer, scaler, ema)
        start_epoch, step, best = meta["epoch"] + 1, meta["step"], meta["best_metric"]
        print(f"resumed from {resume} at epoch {start_epoch}")
    if args.eval:
        if not cfg.model.finetune and (out / BEST).is_file():
            load_training_state(out / BEST, model, restore_random=False)
        stats = evaluate(ddp, val_loader, info.device, t.amp, not args.no_progress)
        print(f"eval: top-1 {stats['acc1']:.2f}  top-5 {stats['acc5']:.2f}  loss {stats['loss']:.4f}  (n={stats['n']})")
        return stats

    logger = RunLogger(out)
    stats = {}
    t0 = time.time()
    for epoch in range(start_epoch, t.epochs):
        if hasattr(train_sampler, "set_epoch"):
            train_sampler.set_epoch(epoch)
        tr = train_one_epoch(ddp, train_loader, optimizer, criterion, info.device, epoch, lr_schedule, step,
                             accum_steps=t.accum_steps, clip_grad=t.clip_grad, scaler=scaler, amp=t.amp,
                             mixup_fn=mixup_fn, ema=ema, logger=logger, progress=not args.no_progress)
        step = tr.pop("step")
        val = evaluate(ddp, val_loader, info.device, t.amp, progress=not args.no_progress)
        stats = {**tr, "val_acc1": val["acc1"], "val_acc5": val["acc5"], "val_loss": val["loss"]}
        if ema is not None:
            stats["val_acc1_ema"] = evaluate(ema, val_loader, info.device, t.amp, progress=False)["acc1"]
        is_best = best is None or val["acc1"] > best
        best = val["acc1"] if is_best else best
        stats["best_acc1"] = best
        logger.epoch(epoch, stats)
        if info.is_main:
            save_training_state(out / LATEST, model, optimizer, scaler, ema, epoch, step, best)
            if is_best:
                save_training_state(out / BEST, model, optimizer, scaler, ema, epoch, step, best)
    logger.close()
    if info.is_main:
        print(f"done: best val top-1 {best:.2f}% in {time.time() - t0:.0f} s; checkpoints in {out}")
    return stats


if __name__ == "__main__":
    main()
