"""The video test protocol: ``test.num_views`` temporal views x ``test.num_crops`` crops of every test video,
merged per video (:mod:`.multiview`), through the engine's evaluation-only run; ``results.json``,
``confusion.png`` and a summary on the main rank. Used after training and by ``--eval``."""
from __future__ import annotations

import time
from functools import partial
from pathlib import Path

from ...data.video_dataset import collate_eval
from ...engine.loaders import build_eval_loader
from ...engine.plots import plot_confusion
from ...engine.runner import TrainingRun
from ...engine.task import log
from .multiview import confusion_matrix, evaluate_multiview


def run_test(cfg, info, model, test_set, names, weights: str | None, started: float, progress: bool = True,
             label: str | None = None) -> dict:
    """Evaluate ``model`` (after loading ``weights`` strictly, when given) on ``test_set`` with the multi-view
    protocol on every rank; the main rank writes ``results.json`` (and, for classification, ``confusion.png``)
    and prints a summary. ``names``: the class names (or None); ``started``: the run's start time; ``label``:
    what ``results.json`` names as the weights (default: ``weights``, else ``model.finetune``)."""
    regression = bool(cfg.model.get("regression"))
    loader = build_eval_loader(cfg, info, test_set, collate_eval)
    run = TrainingRun(cfg, info, model, None, loader, evaluate_fn=partial(evaluate_multiview, regression=regression),
                      metric="mse" if regression else "acc1", higher_is_better=not regression, progress=progress)
    t0 = time.time()
    res = run.evaluate_only(weights)
    labels = [r.label for r in test_set.records]
    split = cfg.test.get("split", "test")
    results = {k: v for k, v in res.items() if k != "pred"}
    results.update(weights=label or weights or cfg.model.get("finetune"), split=split,
                   views=[cfg.test.num_views, cfg.test.num_crops], eval_seconds=round(time.time() - t0, 1),
                   wall_seconds=round(time.time() - started, 1))
    paper = cfg.test.get("paper")
    if paper:
        results["paper"] = dict(paper)
    if not regression and cfg.data.name.startswith("moving_digits"):
        from ...data.moving_digits import reversal_pair_accuracy

        results["reversal_pair_acc"] = reversal_pair_accuracy(labels, res["pred"])
    if not info.is_main:
        return results
    path = run.write_results(results)
    out = Path(cfg.output_dir)
    if not regression:
        n = cfg.model.num_classes
        plot_confusion(confusion_matrix(labels, res["pred"], n), names or [str(i) for i in range(n)],
                       out / "confusion.png", title=f"{split}: top-1 {res['acc1']:.1f}%")
        line = f"top-1 {res['acc1']:.2f}  top-5 {res['acc5']:.2f}"
    else:
        line = f"MSE {res['mse']:.4f}"
    log(f"test ({_count(cfg.test.num_views, 'temporal view')} x {_count(cfg.test.num_crops, 'crop')}, "
        f"{_count(res['num_videos'], 'video')}, {_count(res['num_views'], 'view')}, {len(res['skipped'])} skipped): "
        f"{line}")
    if "reversal_pair_acc" in results:
        pairs = ", ".join("-" if p is None else f"{p:.0f}%" for p in results["reversal_pair_acc"])
        log(f"accuracy within each time-reversed class pair (50% = blind to time order): {pairs}")
    if paper:
        key = "mse" if regression else "acc1"
        if key in paper:
            log(f"paper: {paper[key]}  measured: {res[key]:.2f}")
    for s in res["skipped"][:10]:
        # a decoding error names the path already: say it once
        log(f"skipped: {s['error']}" if s["path"] in s["error"] else f"skipped: {s['path']}: {s['error']}")
    log(f"results in {path}" + ("" if regression else f", confusion matrix in {out / 'confusion.png'}"))
    return results


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")
