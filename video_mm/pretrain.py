"""Video-text pretraining (UMT recipe with the VideoMamba vision encoder, official.md §4):
``python -m video_mm.pretrain --config CONFIG [--opts k=v ...] [--eval [--checkpoint P]]``.

Each step takes a batch of one media type (videos or images, in an order drawn on rank 0) and optimises the
weighted sum of VTC (contrastive over every rank's batch), VTM (matching with hard negatives), MLM (masked
words predicted from text + vision) and UTA (visible tokens regress the CLIP teacher's features; attention
masks). The run is ``videomamba.engine.TrainingRun`` as for every task (resume, DDP, Slurm, DeepSpeed, bf16):
every epoch the test sets (``data.test``) are evaluated as zero-shot retrieval and ``eval.select``'s mean
recall (ITM re-ranked) picks ``checkpoint-best.pth``. At the end the last model's retrieval results go to
``results.json``. ``--eval`` only evaluates (``--checkpoint``, else the run's best).
"""
from __future__ import annotations

import json
from pathlib import Path

from videomamba.checkpoint.io import atomic_write
from videomamba.checkpoint.video_text import load_video_text_checkpoint
from videomamba.engine import init_distributed, load_config, save_config
from videomamba.engine.dist import is_main
from videomamba.engine.retrieval_eval import evaluate_retrieval, summary_line
from videomamba.engine.runner import TrainingRun
from videomamba.engine.task import parse_task_args, resolve_checkpoint, run_main, seed_everything
from videomamba.engine.train_state import BEST

from . import data as mm_data
from .model import build


def log(msg: str):
    if is_main():
        print(msg, flush=True)


class VideoTextStep:
    """``loss_fn(model, x, y)`` for the engine: the model's losses (one forward) weighted by ``loss.*``."""

    def __init__(self, weights: dict):
        self.weights = {k: float(v) for k, v in weights.items() if float(v or 0) > 0}

    def __call__(self, model, x, idx):
        losses = model(x["media"], x["input_ids"], x["attention_mask"], idx)
        total = sum(self.weights[k] * v for k, v in losses.items())
        return total, {f"loss_{k}": v.detach() for k, v in losses.items()}


class LastEvaluation:
    """``evaluate_sets`` for the engine that remembers its last result: the engine always evaluates after the
    final epoch, so ``results.json`` can be written from it instead of evaluating the same weights again."""

    def __init__(self, **kwargs):
        self.kwargs, self.last = kwargs, None

    def __call__(self, model, loaders, device, amp: str = "none", progress: bool = True) -> dict:
        self.last = evaluate_sets(model, loaders, device, amp, progress, **self.kwargs)
        return self.last


def evaluate_sets(model, loaders, device, amp: str = "none", progress: bool = True, *, sets: dict, tokenizer,
                  cfg, select: str | None = None) -> dict:
    """Retrieval on every test set; flat scalars ``{set}_{itm|itc}_{metric}`` plus ``r_mean`` of the
    selected set's re-ranked results (what picks the best checkpoint). ``results`` holds the nested dicts."""
    e = cfg.get("eval") or {}
    out, results = {}, {}
    for name, s in sets.items():
        res = evaluate_retrieval(model, loaders[name], s["corpus"], tokenizer, device, s["max_len"],
                                 int(e.get("k_test", 128)), amp, int(e.get("itm_batch", 32)),
                                 int(cfg.data.get("text_batch_size", 256)), progress=progress)
        results[name] = res
        log(summary_line(name, res))
        for kind in ("itm", "itc"):
            out.update({f"{name}_{kind}_{k}": v for k, v in res[kind].items()})
    select = select or next(iter(sets))
    out["r_mean"] = results[select]["itm"]["r_mean"]
    out["results"] = results
    return out


def prepare(cfg, info):
    """Data paths, model, tokenizer, test sets and their loaders for ``cfg``."""
    if cfg.data.get("name") == "moving_digits":
        mm_data.moving_digits_paths(cfg.data)
    sets = mm_data.test_sets(cfg)
    loaders = {name: mm_data.test_loader(cfg, info, s["corpus"]) for name, s in sets.items()}
    return sets, loaders


def write_results(cfg, res: dict, weights: str | None):
    if is_main():
        path = Path(cfg.output_dir) / "results.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        body = {"weights": weights, "config": str(cfg.get("_config_path", "")), **res["results"]}
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(body, indent=1)))
        log(f"results: {path}")


def train(cfg, info, progress: bool = True):
    """The training run of a config (shared with ``video_mm.retrieval``'s fine-tuning)."""
    seed_everything(cfg.seed)   # the same initial weights on every rank ...
    sets, test_loaders = prepare(cfg, info)
    model, tokenizer, meta = build(cfg, log=log)
    seed_everything(cfg.seed + info.rank)   # ... and different augmentation / mask draws per rank
    train_sets = mm_data.train_sets(cfg)
    loader = mm_data.train_loader(cfg, info, train_sets, tokenizer)
    log("training pairs: " + ", ".join(f"{m} {len(ds)}" for m, ds in train_sets.items())
        + f"; {len(loader)} steps per epoch")
    if info.is_main:
        save_config(cfg, f"{cfg.output_dir}/config.yaml")
    evaluate_fn = (LastEvaluation(sets=sets, tokenizer=tokenizer, cfg=cfg, select=(cfg.get("eval") or {}).get("select"))
                   if sets else None)
    run = TrainingRun(cfg, info, model, loader, test_loaders if sets else None, loader, VideoTextStep(cfg.loss),
                      evaluate_fn=evaluate_fn, progress=progress, metric="r_mean",
                      checkpoint_meta={"video_text_model": meta},
                      epoch_stats_fn=lambda: {"unreadable_media": sum(d.failures_count for d in train_sets.values())})
    stats = run.fit()
    if sets:   # the final weights' retrieval (already measured after the last epoch, unless nothing was left to train)
        # (with an EMA the engine's last call evaluated the EMA weights: measure the model itself again)
        res = (evaluate_fn.last if evaluate_fn.last and not cfg.train.get("ema_decay")
               else evaluate_fn(run.model, test_loaders, info.device, cfg.train.amp, progress))
        write_results(cfg, res, str(Path(cfg.output_dir) / "checkpoint-latest.pth"))
    return stats


def evaluate_checkpoint(cfg, info, weights: str | None, progress: bool = True, random_init: bool = False) -> dict:
    """Retrieval of ``weights`` (a video-text checkpoint; None: the config's own ``model.pretrained``) on the
    config's test sets; writes ``results.json``. ``random_init``: the model as built, every weight random
    (the chance baseline)."""
    sets, loaders = prepare(cfg, info)
    if not sets:
        raise ValueError("no test set to evaluate: data.test is empty")
    seed_everything(cfg.seed)
    model, tokenizer, _ = build(cfg, losses=("vtc", "vtm"), load_weights=weights is None and not random_init,
                                log=log, text_pretrained=False)
    if random_init:
        weights = None
        log("evaluating a randomly initialised model (no weights loaded)")
    if weights is not None and not random_init:
        report = load_video_text_checkpoint(model, weights, strict=False, log=None)
        log(f"weights {weights}:\n{report}")
    model.to(info.device)
    res = evaluate_sets(model, loaders, info.device, cfg.train.amp, progress, sets=sets, tokenizer=tokenizer, cfg=cfg,
                        select=(cfg.get("eval") or {}).get("select"))
    write_results(cfg, res, "random init" if random_init else weights)
    return res


def weights_to_evaluate(cfg, checkpoint: str | None, prefer_best: bool = True) -> str | None:
    """``checkpoint``; else the run's best (``prefer_best``); else the config's ``model.pretrained`` (None:
    :func:`build` loads it)."""
    if checkpoint:
        return resolve_checkpoint(checkpoint)
    best = Path(cfg.output_dir) / BEST
    if prefer_best and best.is_file():
        return str(best)
    if cfg.model.get("pretrained"):
        log(f"evaluating model.pretrained={cfg.model.pretrained}")
        return None
    raise FileNotFoundError(f"nothing to evaluate: {best} not found; pass --checkpoint FILE (or set model.pretrained)")


def main(argv=None):
    args = parse_task_args(__doc__, argv, "only evaluate retrieval on data.test")
    cfg = load_config(args.config, args.opts)
    info = init_distributed()
    if args.eval:
        return evaluate_checkpoint(cfg, info, weights_to_evaluate(cfg, args.checkpoint), not args.no_progress)
    return train(cfg, info, not args.no_progress)


if __name__ == "__main__":
    run_main(main, "video_mm.pretrain")
