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

import json
import time
from functools import partial
from pathlib import Path

import torch.nn.functional as F

import videomamba
from videomamba.checkpoint.io import atomic_write
from videomamba.data.video_dataset import collate_eval, collate_train
from videomamba.engine import init_distributed, load_config, save_config
from videomamba.engine.dist import is_main
from videomamba.engine.loaders import build_eval_loader, build_loaders
from videomamba.engine.losses import build_criterion
from videomamba.engine.multiview import confusion_matrix, evaluate_multiview
from videomamba.engine.plots import plot_confusion
from videomamba.engine.runner import TrainingRun
from videomamba.engine.task import parse_task_args, run_main, build_model, eval_weights, model_kwargs, seed_everything
from videomamba.engine.train_state import BEST, unwrap

from .data import build_dataset, resolve_files


def log(msg: str):
    if is_main():
        print(msg, flush=True)


def model_shape(cfg) -> dict:
    d = cfg.data
    return {"img_size": d.input_size, "num_frames": d.num_frames, "kernel_size": d.get("tubelet_size", 1)}


def regression_loss(model, x, y):
    """LVU regression: MSE on the single output (the official ``model(x)[:, 0]``)."""
    return F.mse_loss(model(x)[:, 0].float(), y.float())


def run_test(cfg, info, model, test_set, names, weights: str, started: float, progress: bool = True) -> dict:
    """The multi-view test protocol on every rank; rank 0 writes results.json and confusion.png and prints
    a summary."""
    regression = bool(cfg.model.get("regression"))
    loader = build_eval_loader(cfg, info, test_set, collate_eval)
    t0 = time.time()
    res = evaluate_multiview(model.to(info.device), loader, info.device, cfg.train.amp, progress, regression)
    out = Path(cfg.output_dir)
    labels = [r.label for r in test_set.records]
    results = {k: v for k, v in res.items() if k != "pred"}
    results.update(weights=weights, split=cfg.test.get("split", "test"), views=[cfg.test.num_views, cfg.test.num_crops],
                   eval_seconds=round(time.time() - t0, 1), wall_seconds=round(time.time() - started, 1))
    paper = cfg.test.get("paper")
    if paper:
        results["paper"] = dict(paper)
    if not regression and cfg.data.name.startswith("moving_digits"):
        from videomamba.data.moving_digits import reversal_pair_accuracy

        results["reversal_pair_acc"] = reversal_pair_accuracy(labels, res["pred"])
    if not is_main():
        return results
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "results.json", lambda tmp: Path(tmp).write_text(json.dumps(results, indent=2) + "\n"))
    if not regression:
        n = cfg.model.num_classes
        cm = confusion_matrix(labels, res["pred"], n)
        results_names = names or [str(i) for i in range(n)]
        plot_confusion(cm, results_names, out / "confusion.png",
                       title=f"{cfg.test.get('split', 'test')}: top-1 {res['acc1']:.1f}%")
        line = f"top-1 {res['acc1']:.2f}  top-5 {res['acc5']:.2f}"
    else:
        line = f"MSE {res['mse']:.4f}"
    print(f"test ({cfg.test.num_views} temporal views x {cfg.test.num_crops} crops, {res['num_videos']} videos, "
          f"{res['num_views']} views, {len(res['skipped'])} skipped): {line}", flush=True)
    if "reversal_pair_acc" in results:
        pairs = ", ".join("-" if p is None else f"{p:.0f}%" for p in results["reversal_pair_acc"])
        print(f"accuracy within each time-reversed class pair (50% = blind to time order): {pairs}", flush=True)
    if paper:
        key = "mse" if regression else "acc1"
        if key in paper:
            print(f"paper: {paper[key]}  measured: {res[key]:.2f}", flush=True)
    for s in res["skipped"][:10]:
        print(f"skipped: {s['path']}: {s['error']}", flush=True)
    print(f"results in {out / 'results.json'}" + ("" if regression else f", confusion matrix in {out / 'confusion.png'}"),
          flush=True)
    return results


def main(argv=None):
    args = parse_task_args(__doc__, argv, "only run the test protocol")
    started = time.time()

    cfg = load_config(args.config, args.opts)
    info = init_distributed()
    progress = not args.no_progress
    regression = bool(cfg.model.get("regression"))
    seed_everything(cfg.seed)            # the same initial weights on every rank ...
    files, names = resolve_files(cfg)
    weights = eval_weights(cfg, args.checkpoint, log) if args.eval else None
    model = build_model(cfg, load_finetune=weights is None, log=log, **model_shape(cfg))
    seed_everything(cfg.seed + info.rank)   # ... and different augmentation / drop-path draws per rank
    test_split = cfg.test.get("split", "test")
    test_set = build_dataset(cfg, test_split, files[test_split], test_views=True)

    if args.eval:
        if weights is not None:
            videomamba.load_checkpoint(model, weights, strict=True)
        log(f"evaluating {weights or cfg.model.finetune}")
        return run_test(cfg, info, model, test_set, names, weights or cfg.model.finetune, started, progress)

    if info.is_main:
        save_config(cfg, f"{cfg.output_dir}/config.yaml")
    train_set = build_dataset(cfg, "train", files["train"])
    val_set = build_dataset(cfg, "val", files["val"])
    train_loader, val_loader, train_sampler = build_loaders(cfg, info, train_set, val_set, collate_train, collate_eval)
    if regression:
        loss_fn, mixup_fn = regression_loss, None
    else:
        criterion, mixup_fn = build_criterion(cfg)
        loss_fn = lambda m, x, y: criterion(m(x), y)   # noqa: E731
    meta = {"model_config": model_kwargs(cfg, **model_shape(cfg)), "label_names": names,
            "data": {"input_size": cfg.data.input_size, "num_frames": cfg.data.num_frames, "sampler": cfg.data.sampler,
                     "sampling_rate": cfg.data.get("sampling_rate", 4),
                     "short_side_size": cfg.data.get("short_side_size") or cfg.data.input_size,
                     "num_views": cfg.test.num_views, "num_crops": cfg.test.num_crops}}
    run = TrainingRun(cfg, info, model, train_loader, val_loader, train_sampler, loss_fn, mixup_fn,
                      evaluate_fn=partial(evaluate_multiview, regression=regression), progress=progress,
                      metric="mse" if regression else "acc1", higher_is_better=not regression,
                      epoch_stats_fn=lambda: {"unreadable_videos": train_set.failures.value + val_set.failures.value},
                      checkpoint_meta=meta)
    run.fit()
    weights = "last epoch"
    best = Path(cfg.output_dir) / BEST
    if cfg.test.get("test_best", True) and best.is_file():
        videomamba.load_checkpoint(unwrap(run.model), str(best), strict=True, verbose=False)
        weights = str(best)
    return run_test(cfg, info, unwrap(run.model), test_set, names, weights, started, progress)


if __name__ == "__main__":
    run_main(main, "video_sm.finetune")
