"""Text-video retrieval: ``python -m video_mm.retrieval --config CONFIG --zero-shot [--checkpoint FILE]``
evaluates a pretrained video-text checkpoint (official ``videomamba_m16_{5M,17M,25M}_f8_res224.pth`` or one of
ours) on the config's test sets (``data.test``): ITC top-``eval.k_test`` re-ranked by ITM, R@1/5/10 in both
directions, mean recall, MdR and MnR, written to ``<output_dir>/results.json``. ``--eval`` does the same for a
fine-tuned checkpoint (default: the run's ``checkpoint-best.pth``). Without either, the config's
``data.train`` corpora fine-tune the model (``model.pretrained``) with the config's losses (the official
retrieval fine-tuning uses VTC + VTM) through the same training run as ``video_mm.pretrain``.
Works on one process, ``torchrun --nproc_per_node=N`` and Slurm (the videos and re-ranking rows are split
across ranks; the numbers equal a single process's).
"""
from __future__ import annotations

import argparse

from videomamba.engine import init_distributed, load_config
from videomamba.engine.task import run_main
from videomamba.tasks.video_text.run import evaluate_checkpoint, train, weights_to_evaluate


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--opts", nargs="*", default=[], help="dotted overrides, e.g. data.anno_root=/data/anno")
    ap.add_argument("--zero-shot", action="store_true", help="evaluate a pretrained checkpoint, no training")
    ap.add_argument("--eval", action="store_true", help="evaluate a fine-tuned checkpoint, no training")
    ap.add_argument("--checkpoint", help="the weights to evaluate (any video-text checkpoint; a bare official file "
                                         "name is looked up in $VIDEOMAMBA_HOME)")
    ap.add_argument("--random-init", action="store_true",
                    help="with --zero-shot: evaluate the model at a random initialisation (the chance baseline)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars (for log files)")
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.opts)
    info = init_distributed()
    if args.random_init:
        return evaluate_checkpoint(cfg, info, None, not args.no_progress, random_init=True)
    if args.zero_shot or args.eval:
        return evaluate_checkpoint(cfg, info, weights_to_evaluate(cfg, args.checkpoint, prefer_best=args.eval),
                                   not args.no_progress)
    return train(cfg, info, not args.no_progress)


if __name__ == "__main__":
    run_main(main, "video_mm.retrieval")
