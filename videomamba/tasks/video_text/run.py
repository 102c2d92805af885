"""Video-text pretraining and retrieval as runs of the engine: training (every epoch zero-shot retrieval on the
test sets picks ``checkpoint-best.pth``; the final weights' results go to ``results.json``) and evaluation of a
checkpoint. Shared by ``video_mm.pretrain`` and ``video_mm.retrieval``."""
from __future__ import annotations

from functools import partial
from pathlib import Path

from ...checkpoint.video_text import load_video_text_checkpoint
from ...data.video_text_corpora import moving_digits_captions, test_sets, train_sets
from ...engine import save_config
from ...engine.runner import TrainingRun
from ...engine.task import log, resolve_checkpoint, seed_everything
from ...engine.train_state import BEST
from ...utils.checkpoint_io import read_checkpoint
from .evaluate import evaluate_sets
from .loaders import test_loader, train_loader
from .loss import VideoTextLoss
from .recipe import adopt_checkpoint_options, build


def prepare(cfg, info):
    """Data paths, model, tokenizer, test sets and their loaders for ``cfg``."""
    if cfg.data.get("name") == "moving_digits":
        moving_digits_captions(cfg.data)
    sets = test_sets(cfg)
    loaders = {name: test_loader(cfg, info, s["corpus"]) for name, s in sets.items()}
    return sets, loaders


def write_results(run: TrainingRun, cfg, res: dict, weights: str | None):
    """``results.json``: the weights, the config and each test set's nested retrieval results."""
    path = run.write_results({"weights": weights, "config": str(cfg.get("_config_path", "")), **res["results"]})
    if path is not None:
        log(f"results: {path}")


def _evaluation(cfg, sets: dict, tokenizer):
    return partial(evaluate_sets, sets=sets, tokenizer=tokenizer, cfg=cfg, select=(cfg.get("eval") or {}).get("select"))


def train(cfg, info, progress: bool = True):
    """The training run of a config (shared with ``video_mm.retrieval``'s fine-tuning)."""
    seed_everything(cfg.seed)   # the same initial weights on every rank ...
    sets, test_loaders = prepare(cfg, info)
    model, tokenizer, meta = build(cfg, log=log)
    seed_everything(cfg.seed + info.rank)   # ... and different augmentation / mask draws per rank
    corpora = train_sets(cfg)
    loader = train_loader(cfg, info, corpora, tokenizer)
    log("training pairs: " + ", ".join(f"{m} {len(ds)}" for m, ds in corpora.items())
        + f"; {len(loader)} steps per epoch")
    if info.is_main:
        save_config(cfg, f"{cfg.output_dir}/config.yaml")
    run = TrainingRun(cfg, info, model, loader, test_loaders if sets else None, loader, VideoTextLoss(cfg.loss),
                      evaluate_fn=_evaluation(cfg, sets, tokenizer) if sets else None, progress=progress,
                      metric="r_mean", checkpoint_meta={"video_text_model": meta},
                      epoch_stats_fn=lambda: {"unreadable_media": sum(d.failures_count for d in corpora.values())})
    stats = run.fit()
    if sets:   # the final weights' retrieval (measured after the last epoch, unless nothing was left to train)
        res = stats["eval"] if stats.get("eval") else run.evaluate(run.model)
        write_results(run, cfg, res, str(Path(cfg.output_dir) / "checkpoint-latest.pth"))
    return stats


def evaluate_checkpoint(cfg, info, weights: str | None, progress: bool = True, random_init: bool = False) -> dict:
    """Retrieval of ``weights`` (a video-text checkpoint; None: the config's own ``model.pretrained``) on the
    config's test sets; writes ``results.json``. Options that change the outputs without parameters of their
    own (``fusion_tokens``, the poolings) come from the checkpoint's saved description where it has one
    (:func:`~.recipe.adopt_checkpoint_options`). ``random_init``: the model as built, every weight random
    (the chance baseline)."""
    sets, loaders = prepare(cfg, info)
    if not sets:
        raise ValueError("no test set to evaluate: data.test is empty")
    checkpoint = None
    if weights is not None and not random_init:
        checkpoint = read_checkpoint(weights)
        meta = (checkpoint.get("extra") or {}).get("video_text_model") if isinstance(checkpoint, dict) else None
        cfg = adopt_checkpoint_options(cfg, meta, weights, log)
    seed_everything(cfg.seed)
    model, tokenizer, _ = build(cfg, losses=("vtc", "vtm"), load_weights=weights is None and not random_init,
                                log=log, text_pretrained=False)
    if random_init:
        weights = None
        log("evaluating a randomly initialised model (no weights loaded)")
    if checkpoint is not None:
        report = load_video_text_checkpoint(model, checkpoint, strict=False, log=None, source=str(weights))
        log(f"weights {weights}:\n{report}")
    run = TrainingRun(cfg, info, model, None, loaders, evaluate_fn=_evaluation(cfg, sets, tokenizer), metric="r_mean",
                      progress=progress)
    res = run.evaluate_only()
    write_results(run, cfg, res, "random init" if random_init else weights)
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
