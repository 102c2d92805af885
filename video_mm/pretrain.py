"""Video-text pretraining (UMT recipe with the VideoMamba vision encoder, docs/design.md §4):
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

from videomamba.engine.task import parse_task_args, run_main, start_task
from videomamba.tasks.video_text import VideoTextLoss, evaluate_sets
from videomamba.tasks.video_text.run import evaluate_checkpoint, prepare, train, weights_to_evaluate, write_results

VideoTextStep = VideoTextLoss   # its old name

__all__ = ["VideoTextStep", "evaluate_sets", "prepare", "train", "evaluate_checkpoint", "weights_to_evaluate",
           "write_results", "main", "parse_task_args"]


def main(argv=None):
    args, cfg, info = start_task(__doc__, argv, "only evaluate retrieval on data.test")
    if args.eval:
        return evaluate_checkpoint(cfg, info, weights_to_evaluate(cfg, args.checkpoint), not args.no_progress)
    return train(cfg, info, not args.no_progress)


if __name__ == "__main__":
    run_main(main, "video_mm.pretrain", cpu_processes=True)
