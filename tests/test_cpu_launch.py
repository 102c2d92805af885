"""One process per core on a CPU (videomamba.engine.cpu_launch): when a plain command starts ranks itself, with
how many threads and which per-process batch, and an end-to-end run that starts two ranks with the config's
global batch."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from videomamba.engine.config import ConfigError
from videomamba.engine.cpu_launch import ENV_PROCESSES, plan_cpu_processes, with_batch_size

ROOT = Path(__file__).parents[1]


def test_two_cores_give_two_single_thread_processes_with_half_the_batch():
    plan = plan_cpu_processes(16, cores=2, env={})
    assert (plan.processes, plan.threads, plan.batch_size) == (2, 1, 8)


@pytest.mark.parametrize("env, cuda, deepspeed, why", [
    ({"OMP_NUM_THREADS": "1"}, False, False, "OMP_NUM_THREADS"),
    ({"RANK": "0", "WORLD_SIZE": "2"}, False, False, "torchrun"),
    ({"SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_ID": "0"}, False, False, "Slurm"),
    ({}, True, False, "GPU"),
    ({}, False, True, "DeepSpeed"),
])
def test_one_process_when_the_user_or_a_launcher_decides(env, cuda, deepspeed, why):
    plan = plan_cpu_processes(16, cores=4, env=env, cuda=cuda, deepspeed=deepspeed)
    assert plan.processes == 1 and plan.batch_size == 16 and plan.threads == 0 and why in plan.reason


def test_the_variable_overrides_omp_and_the_count_divides_the_batch():
    env = {ENV_PROCESSES: "3", "OMP_NUM_THREADS": "4"}
    plan = plan_cpu_processes(16, cores=6, env=env)
    # 3 does not divide 16: the largest divisor below it
    assert (plan.processes, plan.threads, plan.batch_size) == (2, 3, 8) and "lowered to 2" in plan.reason
    assert plan_cpu_processes(16, cores=2, env={ENV_PROCESSES: "1"}).processes == 1
    assert plan_cpu_processes(7, cores=2, env={}).processes == 1          # a prime batch stays in one process


def test_many_cores_are_capped_and_share_threads():
    plan = plan_cpu_processes(16, cores=64, env={})
    assert (plan.processes, plan.threads, plan.batch_size) == (8, 8, 2)


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_a_bad_process_count_names_the_variable(value):
    with pytest.raises(ConfigError, match=f"{ENV_PROCESSES}='{value}'.*whole number"):
        plan_cpu_processes(16, cores=2, env={ENV_PROCESSES: value})


@pytest.mark.parametrize("argv, expected", [
    (["--config", "c.yaml"], ["--config", "c.yaml", "--opts", "data.batch_size=8"]),
    (["--config", "c.yaml", "--opts", "a=1", "b=2", "--no-progress"],
     ["--config", "c.yaml", "--opts", "a=1", "b=2", "data.batch_size=8", "--no-progress"]),
    (["--config", "c.yaml", "--opts=a=1"], ["--config", "c.yaml", "--opts", "a=1", "data.batch_size=8"]),
    (["--opts", "data.batch_size=4", "--eval", "--opts", "x=1"],        # argparse keeps the last --opts
     ["--opts", "data.batch_size=4", "--eval", "--opts", "x=1", "data.batch_size=8"]),
])
def test_the_batch_goes_last_among_the_overrides(argv, expected):
    assert with_batch_size(argv, 8) == expected


def test_a_plain_command_starts_two_ranks_with_the_configs_global_batch(tmp_path):
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "image_sm.train", "--config", "configs/image_sm/moving_digits_tiny.yaml",
                        "--no-progress", "--opts", f"output_dir={run}", f"data.root={tmp_path / 'data'}",
                        "model.kwargs.depth=1", "model.kwargs.embed_dim=32", "train.epochs=1", "data.batch_size=24"],
                       capture_output=True, text=True, cwd=ROOT, env=_plain_env(), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 processes of 1 thread(s)" in r.stdout and "data.batch_size 12 each" in r.stdout
    # the global batch is the one the command line gave one process: 24 images per step
    assert "global batch 24," in r.stdout and "2 process(es) on cpu" in r.stdout
    steps = [json.loads(line) for line in (run / "train_steps.jsonl").read_text().splitlines()]
    images = len(list((tmp_path / "data").rglob("train/*/*.png")))
    assert images > 0 and len(steps) == images // 24        # one epoch of full global batches


def _plain_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "RANK", "WORLD_SIZE")}
    env.update({"PYTHONPATH": str(ROOT), ENV_PROCESSES: "2", **extra})
    return env


def test_an_input_error_in_every_rank_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "image_sm.train", "--config", "configs/image_sm/moving_digits_tiny.yaml",
                        "--no-progress", "--opts", f"output_dir={tmp_path / 'run'}", f"data.root={tmp_path / 'data'}",
                        f"model.finetune={tmp_path / 'missing.pth'}"],
                       capture_output=True, text=True, cwd=ROOT, env=_plain_env(), timeout=600)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert "missing.pth" in lines[0] and "Traceback" not in r.stderr


def test_a_failure_of_another_rank_alone_shows_its_last_line(tmp_path):
    (tmp_path / "rank_fails.py").write_text(
        "import os, sys\n"
        "if os.environ['RANK'] == '1':\n"
        "    print('something noisy first', file=sys.stderr)\n"
        "    sys.exit('rank one could not read clip_7.mp4')\n")
    code = ("import sys; from videomamba.engine.cpu_launch import CpuPlan, spawn_cpu_processes; "
            "sys.exit(spawn_cpu_processes('rank_fails', [], CpuPlan(2, 1, 4, 'test'), log=lambda m: None))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                       env=_plain_env(PYTHONPATH=f"{ROOT}{os.pathsep}{tmp_path}"))
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 1 and lines == ["rank_fails [rank 1]: rank one could not read clip_7.mp4"], r.stderr
