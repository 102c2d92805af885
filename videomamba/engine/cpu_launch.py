"""One process per core for training on a CPU: a plain ``python -m video_sm.finetune ...`` on a machine without
a GPU starts its own data-parallel ranks (gloo, one intra-op thread each), as ``torchrun --nproc_per_node=N``
would, with the same global batch.

Why: a small model's ops are too small to share between threads (every op forks and joins its OpenMP team),
and video decoding and augmentation run serially beside them. Measured on the video main job (2 cores): 121
samples/s in one process with 2 threads, 170 as two processes of one thread (docs/design.md, design decision
D11). Training only: ``--eval`` stays one process.

When it applies (:func:`plan_cpu_processes`): no GPU, not already launched by torchrun or Slurm, and the user
has not set ``OMP_NUM_THREADS`` (then the thread count is theirs, e.g. the video-text pipeline's two lanes of one
thread). ``VIDEOMAMBA_CPU_PROCESSES=N`` asks for N processes (``1``: one process, the old behaviour). The
processes divide ``data.batch_size`` (per process, as under torchrun), so the global batch, the learning rate and
the number of steps stay those of the config; N is lowered to a divisor of the batch when needed.
"""
from __future__ import annotations

import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..utils.dist import detect
from .config import ConfigError

ENV_PROCESSES = "VIDEOMAMBA_CPU_PROCESSES"
MAX_AUTO_PROCESSES = 8     # beyond this, processes of several threads each (model copies cost memory)


@dataclass(frozen=True)
class CpuPlan:
    processes: int
    threads: int            # intra-op threads per process
    batch_size: int         # data.batch_size of each process
    reason: str             # why this many, for the log line


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # not on Linux
        return os.cpu_count() or 1


def plan_cpu_processes(batch_size: int, cores: int, env=os.environ, cuda: bool = False,
                       deepspeed: bool = False) -> CpuPlan:
    """How many processes a CPU run of per-process batch ``batch_size`` should use on ``cores`` cores."""
    one = lambda why: CpuPlan(1, 0, batch_size, why)   # threads 0: leave torch's default alone
    if cuda:
        return one("a GPU is present")
    if deepspeed:
        return one("DeepSpeed runs its own launcher")
    if detect(env)[3] != "single":
        return one("launched by torchrun or Slurm")
    asked = env.get(ENV_PROCESSES, "").strip()
    if asked:
        try:
            wanted = int(asked)
            if wanted < 1:
                raise ValueError
        except ValueError:
            raise ConfigError(f"{ENV_PROCESSES}={asked!r}: expected a whole number of processes >= 1") from None
        reason = f"{ENV_PROCESSES}={wanted}"
    elif env.get("OMP_NUM_THREADS"):
        return one("OMP_NUM_THREADS is set")
    else:
        wanted = min(cores, MAX_AUTO_PROCESSES)
        reason = f"{cores} cores"
    n = max(d for d in range(1, min(wanted, batch_size) + 1) if batch_size % d == 0)
    if n < wanted:
        reason += f", lowered to {n} to divide the batch of {batch_size}"
    if n == 1:
        return one(reason)
    return CpuPlan(n, max(1, cores // n), batch_size // n, reason)


def with_batch_size(argv: list[str], batch_size: int) -> list[str]:
    """``argv`` with ``data.batch_size=B`` as the last ``--opts`` override (later overrides win)."""
    argv = list(argv)
    opt = f"data.batch_size={batch_size}"
    for i, a in enumerate(argv):
        if a.startswith("--opts="):
            argv[i:i + 1] = ["--opts", a.split("=", 1)[1]]
    if "--opts" not in argv:
        return argv + ["--opts", opt]
    start = len(argv) - 1 - argv[::-1].index("--opts") + 1     # argparse keeps the last --opts
    end = next((j for j in range(start, len(argv)) if argv[j].startswith("--")), len(argv))
    return argv[:end] + [opt] + argv[end:]


def spawn_cpu_processes(module: str, argv: list[str], plan: CpuPlan, log=print) -> int:
    """Run ``python -m module argv`` as ``plan.processes`` ranks on this machine (torch's elastic launcher,
    what torchrun uses); returns the exit status (0, or 1 when a rank failed).

    The console shows rank 0 only (the others' output goes to a temporary folder), so a bad input gives one
    line, not one per rank; when only another rank failed, the last line of its stderr is shown instead."""
    import logging
    import tempfile

    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    os.environ["OMP_NUM_THREADS"] = str(plan.threads)    # inherited by the ranks
    log(f"{module}: {plan.processes} processes of {plan.threads} thread(s) on this CPU ({plan.reason}), "
        f"data.batch_size {plan.batch_size} each; {ENV_PROCESSES}=1 runs one process")
    # the agent's own warnings and errors (closing signals, "failed (exitcode: 1)") repeat what the rank printed
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="videomamba_ranks_") as logs:
        quiet = {r: Std.ALL for r in range(1, plan.processes)}
        config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=plan.processes, run_id=str(uuid.uuid4()),
                              rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
                              monitor_interval=0.5, logs_specs=DefaultLogsSpecs(log_dir=logs, redirects=quiet))
        try:
            elastic_launch(config, sys.executable)("-m", module, *with_batch_size(argv, plan.batch_size))
        except ChildFailedError as err:
            if 0 not in err.failures:
                rank = min(err.failures)
                print(f"{module} [rank {rank}]: {_last_line(logs, rank)}", file=sys.stderr)
            return 1
    return 0


def _last_line(log_dir: str, rank: int) -> str:
    for f in Path(log_dir).rglob(f"{rank}/stderr.log"):
        lines = [ln for ln in f.read_text(errors="replace").splitlines() if ln.strip()]
        if lines:
            return lines[-1]
    return "failed without a message"
