"""Masked video pretraining with a CLIP teacher (unmasked-token alignment, docs/design.md §3.4):
``python -m video_sm.pretrain --config CONFIG [--opts k=v ...] [--eval [--checkpoint P]]``.

The student (``videomamba_*_pretrain``) sees only the visible tokens of each clip (attention-guided masks
from the teacher's CLS attention by default) and regresses the frozen teacher's features of those tokens.
Single process, ``torchrun --nproc_per_node=N`` or Slurm, DeepSpeed: the run is
``videomamba.engine.TrainingRun`` as for every task (exact resume, checkpoints, logs). With a validation
split (``data.val``) the mean alignment loss on fixed masks is measured every epoch and selects
``checkpoint-best.pth``; the official recipes have none and keep ``checkpoint-latest.pth`` only.
``--eval`` measures that loss for a checkpoint. Fine-tune from the result with
``python -m video_sm.finetune --config CONFIG --opts model.finetune=<output_dir>/checkpoint-latest.pth``.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

from videomamba.data import video_pretrain as _data
from videomamba.data.errors import DataError
from videomamba.data.video_dataset import VideoClipDataset, collate_eval, collate_train
from videomamba.engine import save_config
from videomamba.engine.loaders import build_eval_loader, build_loaders
from videomamba.engine.runner import TrainingRun
from videomamba.engine.task import build_model, eval_weights, input_shape, log, run_main, seed_everything, start_task
from videomamba.objectives import MaskedAlignmentLoss, evaluate_alignment
from videomamba.tasks.masked import build_alignment_loss


def annotation_files(cfg) -> dict[str, Path | None]:
    """``train`` (required) and ``val`` (optional) annotation files: the generated Moving Digits csv files,
    or ``data.train_file`` / ``data.val_file`` (``data.data_path/{train,val}.csv`` by default). The labels
    in them are read but not used. Registered by name in :mod:`videomamba.data.video_pretrain`."""
    return _data.annotation_files(cfg)


def build_sets(cfg, files) -> tuple[VideoClipDataset, VideoClipDataset | None]:
    return _data.pretrain_sets(cfg, files)


def build_step(cfg, model, device) -> MaskedAlignmentLoss:
    """The teacher of ``cfg`` (checked against the student ``model``) and the alignment loss (its old name:
    :func:`videomamba.tasks.masked.build_alignment_loss`)."""
    return build_alignment_loss(cfg, model, device)


def model_shape(cfg) -> dict:
    """The student's input shape (kept for callers of this name: :func:`videomamba.engine.task.input_shape`)."""
    return input_shape(cfg)


def main(argv=None):
    args, cfg, info = start_task(__doc__, argv, "only measure the alignment loss on the validation split")
    progress = not args.no_progress
    seed_everything(cfg.seed)            # the same initial weights on every rank ...
    files = annotation_files(cfg)
    weights = eval_weights(cfg, args.checkpoint, log) if args.eval else None
    model = build_model(cfg, load_finetune=weights is None, log=log, **input_shape(cfg))
    seed_everything(cfg.seed + info.rank)   # ... and different augmentation / mask draws per rank
    loss = build_alignment_loss(cfg, model, info.device)
    train_set, val_set = build_sets(cfg, files)
    evaluate_fn = partial(evaluate_alignment, step=loss, seed=cfg.seed)

    if args.eval:
        if val_set is None:
            raise DataError("--eval needs a validation split (data.val / data.val_file)")
        run = TrainingRun(cfg, info, model, None, build_eval_loader(cfg, info, val_set, collate_eval),
                          evaluate_fn=evaluate_fn, metric="loss", higher_is_better=False, progress=progress)
        res = run.evaluate_only(weights)
        log(f"alignment on {res['n']} validation clips: loss {res['loss']:.4f}, mean cosine {res['cos']:.4f}")
        return res

    if info.is_main:
        save_config(cfg, f"{cfg.output_dir}/config.yaml")
    train_loader, val_loader, sampler = build_loaders(cfg, info, train_set, val_set, collate_train, collate_eval)
    meta = {"teacher": str(cfg.teacher.path), "mask": {"type": cfg.mask.type, "ratio": cfg.mask.ratio}}
    run = TrainingRun(cfg, info, model, train_loader, val_loader, sampler, loss,
                      evaluate_fn=evaluate_fn if val_loader is not None else None, progress=progress,
                      metric="loss", higher_is_better=False, checkpoint_meta=meta,
                      epoch_stats_fn=lambda: {"unreadable_videos": train_set.failures.value})
    return run.fit()


if __name__ == "__main__":
    run_main(main, "video_sm.pretrain", cpu_processes=True)
