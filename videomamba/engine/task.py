"""What every task entry point (image_sm, video_sm, ...) does the same way: seeding, building the model a
config describes (and initialising it from ``model.finetune``), and choosing the weights ``--eval`` uses.

Model keys: ``model.name``, ``model.num_classes``, ``model.drop_path_rate``, ``model.kwargs`` (any other
constructor argument), ``model.finetune`` (+ ``finetune_key``, ``inflate`` 'center'|'average',
``delete_head``), ``model.grad_checkpointing``.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from ..utils.dist import init_distributed, is_main
from .train_state import BEST


def log(msg: str):
    """A line on the main rank's stdout (every entry point's progress messages)."""
    if is_main():
        print(msg, flush=True)


def input_shape(cfg) -> dict:
    """The model's input shape from the ``data`` section, the one place that maps data keys to constructor
    arguments: a video config (``data.num_frames``) gives ``img_size`` (``data.input_size``), ``num_frames`` and
    the tubelet ``kernel_size`` (``data.tubelet_size``, default 1); an image config ``img_size``
    (``data.img_size``)."""
    d = cfg.data
    if d.get("num_frames") is not None:
        return {"img_size": d.input_size, "num_frames": d.num_frames, "kernel_size": d.get("tubelet_size") or 1}
    return {"img_size": d.img_size}


def start_task(doc: str, argv=None, eval_help: str = "only evaluate"):
    """The opening of every entry point's ``main()``: its command line (:func:`parse_task_args`), the config
    with the ``--opts`` overrides, and the process group. Returns ``(args, cfg, info)``."""
    from .config import load_config

    args = parse_task_args(doc, argv, eval_help)
    cfg = load_config(args.config, args.opts)
    return args, cfg, init_distributed()


def seed_everything(seed: int):
    random.seed(seed), np.random.seed(seed), torch.manual_seed(seed)


def model_kwargs(cfg, **shape) -> dict:
    """The ``create_model`` kwargs of ``cfg.model`` plus the task's input shape (``img_size``,
    ``num_frames``...). Saved in training checkpoints, so a checkpoint alone rebuilds its model."""
    m = cfg.model
    return {"name": m.name, "num_classes": m.num_classes, "drop_path_rate": m.drop_path_rate, **shape,
            **dict(m.get("kwargs") or {})}


def resolve_checkpoint(path: str) -> str:
    """A path as given, or a bare official file name (``videomamba_t16_in1k_res224.pth``) looked up in
    ``$VIDEOMAMBA_HOME`` (then the hub) by :func:`videomamba.factory.fetch_checkpoint`."""
    if Path(path).exists() or Path(path).parent != Path("."):
        return path
    from ..factory import fetch_checkpoint

    return str(fetch_checkpoint(path))


def build_model(cfg, load_finetune: bool = True, log=print, head_factors=None, **shape) -> torch.nn.Module:
    """Build ``cfg.model`` for inputs of ``shape`` and load ``model.finetune`` through the checkpoint
    loader (2D->3D inflation, position-embedding resizing, a head of another label set dropped).
    ``model.delete_head: true`` keeps the new head at its initialisation even when the shapes match.
    ``head_factors`` (factor name -> each class's label): the head, once loaded, becomes a
    :class:`~videomamba.modules.factored_head.FactoredHead` over them (a training-time parameterisation that
    checkpoint loading folds back into a plain head)."""
    from ..checkpoint import load_checkpoint
    from ..factory import create_model

    m = cfg.model
    kwargs = model_kwargs(cfg, **shape)
    model = create_model(kwargs.pop("name"), **kwargs)
    if m.get("finetune") and load_finetune:
        head = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("head.")}
        report = load_checkpoint(model, resolve_checkpoint(m.finetune), model_key=m.get("finetune_key"),
                                            inflate=m.get("inflate", "center"))
        if m.get("delete_head") and head:
            model.load_state_dict(head, strict=False)
            report.notes.append("head kept at its initialisation (model.delete_head)")
        log(f"finetune from {m.finetune}:\n{report}")
    if head_factors:
        from ..modules.factored_head import FactoredHead

        model.head = FactoredHead(model.head, head_factors)
        log("head: factored over " + ", ".join(f"{k} ({max(v) + 1} labels)" for k, v in head_factors.items()))
    if m.get("grad_checkpointing"):
        model.set_grad_checkpointing(True)
    return model


def eval_weights(cfg, checkpoint: str | None, log=print) -> str | None:
    """What ``--eval`` evaluates: ``--checkpoint``, else this run's best, else ``model.finetune`` (already
    loaded by :func:`build_model`, so None is returned for it)."""
    if checkpoint:
        return checkpoint
    best = Path(cfg.output_dir) / BEST
    if best.is_file():
        return str(best)
    if cfg.model.get("finetune"):
        log(f"evaluating model.finetune={cfg.model.finetune} ({best} not found)")
        return None
    raise FileNotFoundError(f"--eval: nothing to evaluate: {best} not found; train first or pass --checkpoint PATH")


def parse_task_args(doc: str, argv=None, eval_help: str = "only evaluate"):
    """The command line every task entry point shares: ``--config``, ``--opts``, ``--eval``,
    ``--checkpoint``, ``--no-progress``."""
    import argparse

    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--opts", nargs="*", default=[], help="dotted overrides, e.g. train.lr=1e-3")
    ap.add_argument("--eval", action="store_true",
                    help=f"{eval_help}: --checkpoint, else the run's checkpoint-best.pth, else model.finetune")
    ap.add_argument("--checkpoint", help="with --eval: the weights to use (any format load_checkpoint reads)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars (for log files)")
    return ap.parse_args(argv)


def cpu_plan(argv: list[str]):
    """The :class:`~videomamba.engine.cpu_launch.CpuPlan` of a training command line (its config's batch)."""
    from .config import load_config
    from .cpu_launch import plan_cpu_processes, usable_cores

    args = parse_task_args(" ", argv)
    cfg = load_config(args.config, args.opts)
    deepspeed = bool(((cfg.get("train") or {}).get("deepspeed") or {}).get("enabled"))
    return plan_cpu_processes(int(cfg.data.batch_size), usable_cores(), cuda=torch.cuda.is_available(),
                              deepspeed=deepspeed)


def run_main(main, prog: str, cpu_processes: bool = False):
    """Run an entry point's ``main()`` as a command (``prog`` is its module): bad user input (a checkpoint,
    data or config problem, a missing file) ends with one line on stderr and exit status 1 instead of a
    traceback; the process group, if any, is destroyed on the way out. ``cpu_processes``: on a CPU, run as one
    process per core (:mod:`videomamba.engine.cpu_launch`) unless the plan says one."""
    import sys

    from ..utils.checkpoint_io import CheckpointError
    from ..data.errors import DataError
    from .config import ConfigError
    from ..utils.dist import cleanup

    try:
        # training only: --eval stays one process (its test protocol is short, and its errors one line)
        if cpu_processes and not {"-h", "--help", "--eval"} & set(sys.argv[1:]):
            plan = cpu_plan(sys.argv[1:])
            if plan.processes > 1:
                from .cpu_launch import spawn_cpu_processes
                sys.exit(spawn_cpu_processes(prog, sys.argv[1:], plan, log=log))
        main()
    except (CheckpointError, DataError, ConfigError, FileNotFoundError) as err:
        print(f"{prog}: {str(err).splitlines()[0] if str(err) else type(err).__name__}", file=sys.stderr)
        sys.exit(1)
    finally:
        # End the process group before the interpreter does: a gloo group torn down at exit can abort a
        # rank ("terminate called without an active exception") after all the work is done.
        cleanup()
