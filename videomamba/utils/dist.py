"""Distributed setup from torchrun, Slurm or nothing, and collectives that work in every case.

``init_distributed()`` reads, in order: torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; Slurm's
``SLURM_PROCID``/``SLURM_NTASKS``/``SLURM_LOCALID`` (one task per GPU via ``srun``; the master address is
the first node of ``SLURM_JOB_NODELIST`` unless ``MASTER_ADDR`` is set); otherwise a single process.
The backend is NCCL for CUDA and gloo for CPU. Every helper here is a no-op (or the identity) when
torch.distributed is not initialised, so the same training code runs on one CPU core and on 64 GPUs.
"""
from __future__ import annotations

import contextlib
import os
import re
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    source: str = "single"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _first_slurm_host(nodelist: str) -> str:
    """``node[3-5,7],other`` -> ``node3`` (enough for MASTER_ADDR; scontrol is not needed)."""
    first = re.split(r",(?![^\[]*\])", nodelist)[0]
    m = re.match(r"^(.*?)\[(\d+)", first)
    return m.group(1) + m.group(2) if m else first


def detect(env=os.environ) -> tuple[int, int, int, str]:
    """(rank, world_size, local_rank, source) from the environment."""
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)), "torchrun"
    # Only inside an srun step: the sbatch shell itself also has SLURM_PROCID=0 and the job's SLURM_NTASKS,
    # and a plain `python ...` there must not wait for N-1 ranks that never start.
    step_tasks = int(env.get("SLURM_STEP_NUM_TASKS", "1"))
    in_step = env.get("SLURM_STEP_ID", env.get("SLURM_STEPID", "")) not in ("batch", "4294967294", "extern")
    if "SLURM_PROCID" in env and step_tasks > 1 and in_step:
        return int(env["SLURM_PROCID"]), step_tasks, int(env.get("SLURM_LOCALID", 0)), "slurm"
    return 0, 1, 0, "single"


def init_distributed(device: str | None = None, port: int = 29500) -> DistInfo:
    """Initialise torch.distributed when launched by torchrun or Slurm; pick the device."""
    rank, world, local_rank, source = detect()
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    # srun --gpus-per-task=1 shows each task one GPU (index 0) whatever its local rank
    dev = torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1)) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        if source == "slurm":
            os.environ.setdefault("MASTER_ADDR", _first_slurm_host(os.environ.get("SLURM_JOB_NODELIST", "127.0.0.1")))
            os.environ.setdefault("MASTER_PORT", str(port))
            os.environ["RANK"], os.environ["WORLD_SIZE"] = str(rank), str(world)
            os.environ["LOCAL_RANK"] = str(local_rank)
        dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world)
    return DistInfo(rank, world, local_rank, dev, source)


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return get_rank() == 0


def show_progress(progress: bool) -> bool:
    """Progress bars only where someone watches them: asked for, main rank, and stderr a terminal. A bar
    redrawn into a log file is noise; the engine's one-line epoch summary is what logs get instead."""
    import sys

    return bool(progress) and is_main() and sys.stderr.isatty()


def barrier():
    if is_dist():
        dist.barrier()


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean over ranks (a copy; the input is untouched)."""
    t = t.detach().clone()
    if is_dist():
        dist.all_reduce(t)
        t /= dist.get_world_size()
    return t


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().clone()
    if is_dist():
        dist.all_reduce(t)
    return t


def all_gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    """Every rank's ``t`` concatenated along dim 0, differentiable: the backward sums each rank's
    gradient for a slice onto the rank that owns it (torch.distributed.nn's all_gather), so a loss over
    the gathered batch (contrastive VTC) trains every rank's features. Identity without distribution."""
    if not is_dist():
        return t
    from torch.distributed.nn.functional import all_gather

    # torch 2.x calls it deprecated in favour of a private module (_functional_collectives); it works, and
    # the warning would print once per rank in every run
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*all_gather is deprecated", category=FutureWarning)
        return torch.cat(all_gather(t), dim=0)


def all_gather_object(obj) -> list:
    if not is_dist():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src: int = 0):
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


@contextlib.contextmanager
def main_process_first():
    """Run the body on rank 0 first, then on the others: data generation, downloads and caches that
    every rank would otherwise write at once."""
    if not is_main():
        barrier()
    try:
        yield
    finally:
        if is_main():
            barrier()


def cleanup():
    if is_dist():
        dist.destroy_process_group()
