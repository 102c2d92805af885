"""Masked video pretraining with a CLIP teacher (unmasked-token alignment, official.md §3.4):
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

import videomamba
from videomamba.data.image_dataset import DataError
from videomamba.data.video_dataset import VideoClipDataset, collate_eval, collate_train, read_video_annotations
from videomamba.data.video_transforms import VideoEvalTransform, VideoPretrainTransform
from videomamba.engine import init_distributed, load_config, save_config
from videomamba.engine.dist import is_main, main_process_first
from videomamba.engine.loaders import build_eval_loader, build_loaders
from videomamba.engine.runner import TrainingRun
from videomamba.engine.task import build_model, eval_weights, model_kwargs, parse_task_args, run_main, seed_everything
from videomamba.models.clip_teacher import load_clip_teacher
from videomamba.pretrain import MaskedAlignmentStep, evaluate_alignment


def log(msg: str):
    if is_main():
        print(msg, flush=True)


def annotation_files(cfg) -> dict[str, Path | None]:
    """``train`` (required) and ``val`` (optional) annotation files: the generated Moving Digits csv files,
    or ``data.train_file`` / ``data.val_file`` (``data.data_path/{train,val}.csv`` by default). The labels
    in them are read but not used."""
    d = cfg.data
    if d.name == "moving_digits":
        from videomamba.data.moving_digits import make_video_variant

        with main_process_first():
            root = make_video_variant(d.get("root"))
        d.prefix = d.get("prefix") or str(root)
        return {"train": root / "train.csv", "val": root / "val.csv" if d.get("val", True) else None}
    if d.name != "csv":
        raise ValueError(f"data.name must be 'moving_digits' or 'csv', got {d.name!r}")
    base = Path(d.data_path) if d.get("data_path") else None
    train = d.get("train_file") or (base / "train.csv" if base is not None else None)
    if train is None:
        raise ValueError("data.name=csv needs data.train_file or data.data_path (with train.csv)")
    val = d.get("val_file") or (base / "val.csv" if base is not None and d.get("val", False) else None)
    return {"train": Path(train), "val": Path(val) if val else None}


def build_sets(cfg, files):
    d, a = cfg.data, cfg.aug
    common = dict(num_frames=d.num_frames, sampler=d.get("sampler", "sparse"), sampling_rate=d.get("sampling_rate", 4),
                  backend=d.get("backend"))
    records = {s: read_video_annotations(f, d.get("prefix") or "", d.get("delimiter", " "))
               for s, f in files.items() if f is not None}
    if d.get("limit_videos"):
        records = {s: r[:int(d.limit_videos)] for s, r in records.items()}
    train = VideoClipDataset(records["train"], "train", source=str(files["train"]),
                             transform=VideoPretrainTransform(d.input_size, tuple(a.scales), a.hflip), **common)
    val = None
    if "val" in records:
        val = VideoClipDataset(records["val"], "eval", source=str(files["val"]),
                               transform=VideoEvalTransform(d.input_size, d.get("short_side_size") or d.input_size),
                               **common)
    return train, val


def build_step(cfg, model, device) -> MaskedAlignmentStep:
    """The teacher of ``cfg`` (checked against the student ``model``) and the alignment step."""
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
    return MaskedAlignmentStep(teacher, cfg.mask.type, cfg.mask.ratio, len(model.return_index),
                               t.get("return_interval", 1), cfg.get("loss", {}).get("ratio", 1.0))


def model_shape(cfg) -> dict:
    return {"img_size": cfg.data.input_size, "num_frames": cfg.data.num_frames}


def main(argv=None):
    args = parse_task_args(__doc__, argv, "only measure the alignment loss on the validation split")
    cfg = load_config(args.config, args.opts)
    info = init_distributed()
    progress = not args.no_progress
    seed_everything(cfg.seed)            # the same initial weights on every rank ...
    files = annotation_files(cfg)
    weights = eval_weights(cfg, args.checkpoint, log) if args.eval else None
    model = build_model(cfg, load_finetune=weights is None, log=log, **model_shape(cfg))
    seed_everything(cfg.seed + info.rank)   # ... and different augmentation / mask draws per rank
    step = build_step(cfg, model, info.device)
    train_set, val_set = build_sets(cfg, files)
    evaluate_fn = partial(evaluate_alignment, step=step, seed=cfg.seed)

    if args.eval:
        if val_set is None:
            raise DataError("--eval needs a validation split (data.val / data.val_file)")
        if weights is not None:
            videomamba.load_checkpoint(model, weights, strict=True)
        res = evaluate_fn(model.to(info.device), build_eval_loader(cfg, info, val_set, collate_eval), info.device,
                          cfg.train.amp, progress)
        log(f"alignment on {res['n']} validation clips: loss {res['loss']:.4f}, mean cosine {res['cos']:.4f}")
        return res

    if info.is_main:
        save_config(cfg, f"{cfg.output_dir}/config.yaml")
    train_loader, val_loader, sampler = build_loaders(cfg, info, train_set, val_set, collate_train, collate_eval)
    meta = {"model_config": model_kwargs(cfg, **model_shape(cfg)), "teacher": str(cfg.teacher.path),
            "mask": {"type": cfg.mask.type, "ratio": cfg.mask.ratio}}
    run = TrainingRun(cfg, info, model, train_loader, val_loader, sampler, step,
                      evaluate_fn=evaluate_fn if val_loader is not None else None, progress=progress,
                      metric="loss", higher_is_better=False, checkpoint_meta=meta,
                      epoch_stats_fn=lambda: {"unreadable_videos": train_set.failures.value})
    return run.fit()


if __name__ == "__main__":
    run_main(main, "video_sm.pretrain")
