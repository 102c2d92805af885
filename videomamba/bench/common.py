"""Timing, memory and output helpers shared by the benchmarks.

Timing: warm-up, then repeated runs with a device synchronise before every clock read; medians.
Memory: on CUDA the peak allocated bytes (``torch.cuda.max_memory_allocated``) above the level after
warm-up; on CPU the peak resident set size of a fresh subprocess above its level after warm-up
(``getrusage``), so allocator caches of earlier measurements never leak into a number.
"""
from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

import torch


def sync(device: torch.device | str):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def median_time(fn, device="cpu", warmup: int = 1, repeats: int = 5, max_seconds: float | None = None) -> float:
    """Median wall time of ``fn()`` in seconds."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    start = time.perf_counter()
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
        if max_seconds is not None and time.perf_counter() - start > max_seconds and len(times) >= 1:
            break
    return statistics.median(times)


def machine_description(device="cpu") -> str:
    if torch.device(device).type == "cuda":
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__})"
    import os

    return (f"{platform.machine()} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads "
            f"(torch {torch.__version__})")


def write_json(path: str | Path, payload: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1))
    return path


def print_table(headers: list[str], rows: list[list], title: str | None = None):
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    if title:
        print(title)
    for j, r in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
        if j == 0:
            print("  ".join("-" * w for w in widths))


def _fmt(c) -> str:
    if isinstance(c, float):
        return f"{c:.3g}" if abs(c) < 1000 else f"{c:,.0f}"
    return "-" if c is None else str(c)


def try_plot(path: str | Path, draw) -> Path | None:
    """Run ``draw(plt)`` and save a PNG; returns None (with a note) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no PNG; pip install 'videomamba[bench]')")
        return None
    fig = draw(plt)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
