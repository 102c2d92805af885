"""The prepared GPU check runs its logic on CPU: the correctness script in Triton's interpreter at tiny
shapes (every comparison it makes on a GPU, against the same fp64 references), and the shell driver parses
and refuses cleanly without a GPU."""
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_check_gpu_script_smoke_on_cpu():
    r = subprocess.run([sys.executable, "scripts/check_gpu.py", "--smoke"], cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith(("ok", "FAIL"))]
    assert len(lines) >= 15 and all(ln.startswith("ok") for ln in lines), r.stdout
    assert "all checks passed" in r.stdout


def test_check_gpu_script_reports_a_missing_mamba_ssm():
    r = subprocess.run([sys.executable, "scripts/check_gpu.py", "--smoke", "--part", "mamba_ssm"], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 1 and "FAIL mamba_ssm imports" in r.stdout, r.stdout + r.stderr


def test_check_gpu_sh_parses_and_needs_a_gpu():
    assert subprocess.run(["bash", "-n", "scripts/check_gpu.sh"], cwd=ROOT).returncode == 0
    if torch.cuda.is_available():
        return
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run(["bash", "scripts/check_gpu.sh", str(ROOT / "build" / "unused")], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no CUDA device" in r.stderr, r.stdout + r.stderr
