"""Timing, memory and output helpers shared by the benchmarks.

Timing: warm-up, then repeated runs with a device synchronise before every clock read; medians.
Memory: on CUDA the peak allocated bytes (``torch.cuda.max_memory_allocated``) above the level after
warm-up; on CPU the peak resident set size of a fresh subprocess above its level after warm-up
(``getrusage``), so allocator caches of earlier measurements never leak into a number.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
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


def event_time(fn, device="cpu", warmup: int = 1, repeats: int = 5, max_seconds: float | None = None) -> float:
    """Median time of ``fn()`` in seconds; on CUDA from CUDA events around each call (after a synchronise,
    so every call starts on an idle device), elsewhere :func:`median_time`."""
    if torch.device(device).type != "cuda":
        return median_time(fn, device, warmup=warmup, repeats=repeats, max_seconds=max_seconds)
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    start = time.perf_counter()
    for _ in range(repeats):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(begin.elapsed_time(end) / 1e3)
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            break
    return statistics.median(times)


class PeakMemory:
    """Peak CUDA memory of a block above the level at its start (``torch.cuda.max_memory_allocated`` after
    a reset): ``with PeakMemory(device) as m: ...; m.mb``. None on other devices."""

    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda"
        self.mb: float | None = None

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        return self

    def __exit__(self, *exc):
        if self.cuda and exc[0] is None:
            torch.cuda.synchronize()
            self.mb = (torch.cuda.max_memory_allocated() - self.base) / 2 ** 20
        return False


class Report:
    """Print lines and keep them for the ``.txt`` file beside the JSON."""

    def __init__(self):
        self.lines: list[str] = []

    def __call__(self, text: str = ""):
        print(text, flush=True)
        self.lines.append(text)

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(self.lines) + "\n")
        return path


def target_line(t: dict) -> str:
    """``ok      what: value`` / ``MISSED  what: value`` for a ``{what, value, ok}`` check."""
    return f"{'ok    ' if t['ok'] else 'MISSED'}  {t['what']}: {t['value']}"


def host_isa() -> str:
    """The widest vector extension this CPU reports (what -march=native builds for)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine()
    flags = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags = set(line.split(":", 1)[1].split())
            break
    if "avx512f" in flags:
        return "AVX-512"
    if {"avx2", "fma"} <= flags:
        return "AVX2+FMA"
    if "asimd" in flags:
        return "NEON"
    return "SSE" if "sse2" in flags else platform.machine()


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def kernel_build() -> str:
    """``-march=x86-64-v3 (scan AVX2+FMA, 8 lanes; conv AVX2+FMA, 8 lanes)``: the native kernels in use."""
    from ..ops import causal_conv1d, selective_scan_cpu
    from ..ops._build import cpu_arch

    parts = []
    if selective_scan_cpu.available():
        parts.append(f"scan {selective_scan_cpu.target()}")
    if causal_conv1d.native_available():
        parts.append(f"conv {causal_conv1d.native_target()}")
    return f"-march={cpu_arch()} ({'; '.join(parts) or 'not built: PyTorch reference'})"


def machine_description(device="cpu") -> str:
    if torch.device(device).type == "cuda":
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__})"
    import os

    return (f"{platform.machine()} CPU ({cpu_name()}, {host_isa()}), {os.cpu_count()} cores, "
            f"{torch.get_num_threads()} torch threads (torch {torch.__version__}); kernels {kernel_build()}")


def write_json(path: str | Path, payload: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1))
    return path


def format_table(headers: list[str], rows: list[list], title: str | None = None) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [title] if title else []
    for j, r in enumerate(cells):
        lines.append("  ".join(c.rjust(w) for c, w in zip(r, widths)))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def print_table(headers: list[str], rows: list[list], title: str | None = None):
    print(format_table(headers, rows, title))


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


def run_one_in_subprocess(module: str, cfg: dict, extra_args=(), env: dict | None = None,
                          timeout: int = 1800) -> tuple[dict | None, str]:
    """Run ``python -m module --one JSON [extra_args]`` in a fresh process (so that one measurement's kernel
    build, caches or allocator state never helps another) with ``os.environ`` updated by ``env``.
    Returns ``(result, why)``: the last JSON line it printed and ``""``, or None and ``"timeout"`` or
    ``"exit status N"`` followed by its whole stderr (:func:`last_line` gives the error's last line)."""
    cmd = [sys.executable, "-m", module, "--one", json.dumps(cfg), *extra_args]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        return None, "timeout"
    for line in reversed(r.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line), ""
    return None, f"exit status {r.returncode}\n{r.stderr or ''}"


def last_line(text: str, limit: int = 160) -> str:
    lines = (text or "").strip().splitlines()
    return lines[-1][:limit] if lines else ""


@contextlib.contextmanager
def temporary_env(name: str, value: str | None):
    """``$name=value`` inside the block (None: leave the environment as it is), restored after."""
    if value is None:
        yield
        return
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old
