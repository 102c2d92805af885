"""``videomamba bench model``: VideoMamba-Ti against TimeSformer-Ti (the paper's Fig. 1), 224², T frames.

Every measurement runs in a fresh subprocess. Memory is the peak increase over the level after one
warm-up step, as the official speed test measures it: on CUDA with ``torch.cuda.max_memory_allocated``
(bf16 autocast, as the official speed test); on CPU with the kernel's resident-set high-water mark
(reset through ``/proc/self/clear_refs`` after warm-up; glibc is told to return large blocks to the
system at once, so freed activations do not inflate the baseline). The address space is capped
(``--mem-limit-gb``) so that an out-of-memory case is reported as OOM instead of taking the machine down. Two tables: inference (clips/s) and a training step
(forward + backward + AdamW step).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

from .common import machine_description, median_time, print_table, try_plot, write_json

MODELS = ("videomamba_tiny", "timesformer_tiny_naive", "timesformer_tiny_sdpa")


def build(name: str, frames: int, img_size: int = 224):
    if name == "videomamba_tiny":
        from .. import create_model

        return create_model("videomamba_tiny", num_frames=frames, img_size=img_size, num_classes=400)
    from .timesformer import TimeSformerTiny

    return TimeSformerTiny(img_size=img_size, num_frames=frames, num_classes=400, attention=name.rsplit("_", 1)[1])


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure_one(cfg: dict) -> dict:
    """Run one configuration in this process and return its figures."""
    device = torch.device(cfg["device"])
    if device.type == "cpu":   # as the training engine does: subnormals would dominate training steps
        from ..ops import flush_denormals

        flush_denormals(True)
    torch.manual_seed(0)
    model = build(cfg["model"], cfg["frames"], cfg["img_size"]).to(device)
    x = torch.randn(cfg["batch"], 3, cfg["frames"], cfg["img_size"], cfg["img_size"], device=device)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    if cfg["mode"] == "infer":
        model.eval()

        def step():
            with torch.inference_mode(), amp:
                model(x)
    else:
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step():
            with amp:
                loss = model(x).float().logsumexp(-1).mean()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    for _ in range(cfg["warmup"]):     # lazy library init and kernel builds happen here, not below
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_bytes()
        _reset_peak_rss()
    seconds = median_time(step, device, warmup=0, repeats=cfg["repeats"], max_seconds=cfg["max_seconds"])
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = _peak_rss_bytes() - base
    return dict(cfg, seconds=seconds, clips_per_s=cfg["batch"] / seconds, peak_mem_mb=peak / 2 ** 20, status="ok")


def _run_subprocess(cfg: dict, timeout: int, mem_limit_gb: float, for_memory: bool) -> dict:
    cmd = [sys.executable, "-m", "videomamba.bench.model", "--one", json.dumps(cfg), "--mem-limit-gb", str(mem_limit_gb)]
    env = dict(os.environ)
    if for_memory and cfg["device"] == "cpu":
        # A fixed mmap threshold makes glibc hand every large tensor back to the system when it is freed,
        # so the resident set follows the live tensors. It slows allocation, hence a separate run.
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return dict(cfg, status="timeout")
    for line in reversed(r.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    err = (r.stderr or "").strip().splitlines()
    oom = any(k in (r.stderr or "") for k in ("out of memory", "OutOfMemory", "can't allocate", "Cannot allocate",
                                              "std::bad_alloc", "MemoryError")) or r.returncode in (-9, 137)
    return dict(cfg, status="OOM" if oom else f"error: {err[-1][:120] if err else r.returncode}")


def measure(cfg: dict, timeout: int, mem_limit_gb: float) -> dict:
    """Speed from one run with the normal allocator, memory from a second run (one step) on CPU."""
    res = _run_subprocess(cfg, timeout, mem_limit_gb, for_memory=False)
    if res.get("status") == "ok" and cfg["device"] == "cpu":
        mem = _run_subprocess(dict(cfg, repeats=1), timeout, mem_limit_gb, for_memory=True)
        res["peak_mem_mb"] = mem.get("peak_mem_mb") if mem.get("status") == "ok" else None
        res["memory_status"] = mem.get("status")
    return res


def run(device: str = "cpu", frames=(8, 16, 32, 64), modes=("infer", "train"), batch: int = 1, repeats: int = 3,
        out_dir: str = "bench_results", timeout: int = 900, mem_limit_gb: float = 20.0, img_size: int = 224,
        models=MODELS) -> dict:
    print(f"model benchmark on {machine_description(device)}; batch {batch}, {img_size}px, median of {repeats}")
    results = []
    for mode in modes:
        rows = []
        for T in frames:
            by_model = {}
            for name in models:
                cfg = dict(model=name, frames=T, batch=batch, mode=mode, device=device, img_size=img_size,
                           warmup=1, repeats=repeats, max_seconds=120)
                t0 = time.time()
                res = measure(cfg, timeout, mem_limit_gb)
                res["wall_s"] = time.time() - t0
                results.append(res)
                by_model[name] = res
                print(f"  {mode} T={T} {name}: {res['status']}"
                      + (f", {res['clips_per_s']:.3g} clips/s, {res['peak_mem_mb'] or float('nan'):.0f} MB"
                         if res["status"] == "ok" else ""),
                      flush=True)
            vm = by_model.get("videomamba_tiny", {})
            for other in models[1:]:
                o = by_model.get(other, {})
                ok = vm.get("status") == "ok" and o.get("status") == "ok"
                rows.append([T, other, vm.get("clips_per_s"), o.get("clips_per_s") if ok else o.get("status"),
                             vm["clips_per_s"] / o["clips_per_s"] if ok else None,
                             vm.get("peak_mem_mb"), o.get("peak_mem_mb") if ok else o.get("status"),
                             o["peak_mem_mb"] / max(vm["peak_mem_mb"], 1e-6)
                             if ok and o.get("peak_mem_mb") and vm.get("peak_mem_mb") else None])
        print_table(["frames", "vs", "VideoMamba-Ti clips/s", "other clips/s", "speed-up", "VideoMamba-Ti MB",
                     "other MB", "memory ratio"], rows, title=f"\n{mode}:")
    payload = dict(device=machine_description(device), batch=batch, img_size=img_size, results=results)
    path = write_json(f"{out_dir}/model.json", payload)
    png = try_plot(f"{out_dir}/model.png", lambda plt: _plot(plt, results, modes))
    print(f"wrote {path}" + (f" and {png}" if png else ""))
    return payload


def _plot(plt, results, modes):
    fig, axes = plt.subplots(len(modes), 2, figsize=(10, 3.6 * len(modes)), squeeze=False)
    for i, mode in enumerate(modes):
        for j, (key, label) in enumerate((("clips_per_s", "clips/s"), ("peak_mem_mb", "peak memory (MB)"))):
            ax = axes[i][j]
            for name in MODELS:
                pts = [(r["frames"], r[key]) for r in results
                       if r["model"] == name and r["mode"] == mode and r.get("status") == "ok" and r.get(key)]
                if pts:
                    ax.plot(*zip(*pts), marker="o", label=name)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("frames")
            ax.set_ylabel(label)
            ax.set_title(f"{mode}: {label}")
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", required=True, help="JSON config of one measurement (internal)")
    ap.add_argument("--mem-limit-gb", type=float, default=20.0)
    args = ap.parse_args()
    cfg = json.loads(args.one)
    if cfg["device"] == "cpu" and args.mem_limit_gb > 0:
        limit = int(args.mem_limit_gb * 2 ** 30) + _vm_size()
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    print(json.dumps(measure_one(cfg)), flush=True)


def _vm_size() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


if __name__ == "__main__":
    _main()
