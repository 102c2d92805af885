"""The scan backends and whether each can run in this process (a C++ compiler, triton, mamba-ssm, the
device). Below :mod:`.selective_scan` (the dispatch) and :mod:`.scan_op` (the custom op): both ask it."""
from __future__ import annotations

import functools
import importlib.util
import os

import torch

BACKENDS = ("auto", "cpu", "triton", "mamba_ssm", "reference")
ENV_VAR = "VIDEOMAMBA_SCAN_BACKEND"


@functools.lru_cache(maxsize=None)
def _triton_importable() -> bool:
    return importlib.util.find_spec("triton") is not None


@functools.lru_cache(maxsize=None)
def _mamba_ssm_importable() -> bool:
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn  # noqa: F401
        return True
    except Exception:
        return False


@torch.compiler.assume_constant_result   # torch.compile evaluates it once instead of tracing the build
def backend_available(name: str, device_type: str = "cpu") -> bool:
    """Whether ``name`` can run on tensors of ``device_type`` in this process."""
    if name == "reference":
        return True
    if name == "cpu":
        from . import selective_scan_cpu

        return device_type == "cpu" and selective_scan_cpu.available()
    if name == "triton":
        if not _triton_importable():
            return False
        return device_type == "cuda" or (device_type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1")
    if name == "mamba_ssm":
        return device_type == "cuda" and _mamba_ssm_importable()
    raise ValueError(f"unknown scan backend {name!r}; choose from {BACKENDS}")
