"""Video fine-tuning and evaluation with VideoMamba:
``python -m video_sm.finetune --config CONFIG [--opts k=v ...] [--eval [--checkpoint P]]``.

Single process, ``torchrun --nproc_per_node=N`` or Slurm ``srun``. Training runs on
``videomamba.engine.TrainingRun`` (optimiser, per-step schedule, DDP/DeepSpeed, exact resume, 1-view
validation per epoch, checkpoints, logs); then the test protocol (``test.num_views`` temporal views x
``test.num_crops`` crops, softmax-averaged per video across ranks) runs on the best checkpoint
(``test.test_best``) and writes ``<output_dir>/results.json`` and ``confusion.png``. ``--eval`` runs only
the test protocol: on ``--checkpoint``, else the run's best, else ``model.finetune``.
"""
from __future__ import annotations

import time
from functools import partial
from pathlib import Path

from videomamba.data.defaults import SAMPLING_RATE
from videomamba.data.video_dataset import collate_eval, collate_train
from videomamba.engine import save_config
from videomamba.engine.loaders import build_loaders
from videomamba.engine.runner import TrainingRun
from videomamba.engine.task import build_model, eval_weights, input_shape, log, run_main, seed_everything, start_task
from videomamba.engine.train_state import BEST
from videomamba.tasks.classification import build_loss, evaluate_multiview, regression_loss
from videomamba.tasks.classification.video_test import run_test
from videomamba.utils.tensors import unwrap

from .data import build_dataset, resolve_class_factors, resolve_files


def model_shape(cfg) -> dict:
    """The model's input shape (kept for callers of this name: :func:`videomamba.engine.task.input_shape`)."""
    return input_shape(cfg)


def main(argv=None):
    started = time.time()
    args, cfg, info = start_task(__doc__, argv, "only run the test protocol")
    progress = not args.no_progress
    regression = bool(cfg.model.get("regression"))
    seed_everything(cfg.seed)            # the same initial weights on every rank ...
    files, names = resolve_files(cfg)
    weights = eval_weights(cfg, args.checkpoint, log) if args.eval else None
    factors = None if regression else resolve_class_factors(cfg)
    model = build_model(cfg, load_finetune=weights is None, log=log, head_factors=factors, **input_shape(cfg))
    seed_everything(cfg.seed + info.rank)   # ... and different augmentation / drop-path draws per rank
    test_split = cfg.test.get("split", "test")
    test_set = build_dataset(cfg, test_split, files[test_split], test_views=True)

    if args.eval:
        log(f"evaluating {weights or cfg.model.finetune}")
        return run_test(cfg, info, model, test_set, names, weights, started, progress)

    if info.is_main:
        save_config(cfg, f"{cfg.output_dir}/config.yaml")
    train_set = build_dataset(cfg, "train", files["train"])
    val_set = build_dataset(cfg, "val", files["val"])
    train_loader, val_loader, train_sampler = build_loaders(cfg, info, train_set, val_set, collate_train, collate_eval)
    meta = {"label_names": names,
            "data": {"input_size": cfg.data.input_size, "num_frames": cfg.data.num_frames, "sampler": cfg.data.sampler,
                     "sampling_rate": cfg.data.get("sampling_rate", SAMPLING_RATE),
                     "short_side_size": cfg.data.get("short_side_size") or cfg.data.input_size,
                     "num_views": cfg.test.num_views, "num_crops": cfg.test.num_crops}}
    run = TrainingRun(cfg, info, model, train_loader, val_loader, train_sampler,
                      regression_loss if regression else build_loss(cfg),
                      evaluate_fn=partial(evaluate_multiview, regression=regression), progress=progress,
                      metric="mse" if regression else "acc1", higher_is_better=not regression,
                      epoch_stats_fn=lambda: {"unreadable_videos": train_set.failures.value + val_set.failures.value},
                      checkpoint_meta=meta)
    run.fit()
    best = Path(cfg.output_dir) / BEST
    if cfg.test.get("test_best", True) and best.is_file():
        return run_test(cfg, info, unwrap(run.model), test_set, names, str(best), started, progress)
    return run_test(cfg, info, unwrap(run.model), test_set, names, None, started, progress, label="last epoch")


if __name__ == "__main__":
    run_main(main, "video_sm.finetune", cpu_processes=True)
