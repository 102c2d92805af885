"""``videomamba bench model``: VideoMamba-Ti against TimeSformer-Ti (the paper's Fig. 1), 224², T frames.

Baselines: TimeSformer-Ti with naive attention (the ``(L, L)`` matrix, as in the paper) and with PyTorch's
fused ``scaled_dot_product_attention``; at 1 frame also timm's DeiT-Ti (fused attention), against the
VideoMamba-Ti image model. Two modes: inference (clips/s) and a training step (forward + backward + AdamW).

Every measurement runs in a fresh subprocess. Peak memory is the growth over the level with the model and
its input built, warm-up included: on CUDA ``torch.cuda.max_memory_allocated`` (bf16 autocast, as the
official speed test); on CPU the resident-set high-water mark (``VmHWM``, reset through
``/proc/self/clear_refs``) in a second run where glibc returns every large block to the system when it is
freed, so the resident set follows the live tensors. The address space is capped (``--mem-limit-gb``) so an
out-of-memory case is reported as OOM instead of taking the machine down. On CPU, VideoMamba runs once per
kernel build in ``archs`` (``-march`` levels); the baselines do not use those kernels and run once, so every
ratio compares figures from one run.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import time

import torch

from .common import (last_line, machine_description, median_time, print_table, run_one_in_subprocess, try_plot,
                     write_json)

from . import MODELS  # noqa: E402

IMAGE_ONLY = ("deit_tiny_sdpa",)      # measured at 1 frame only


def models_at(frames: int, models=MODELS):
    return [m for m in models if frames == 1 or m not in IMAGE_ONLY]


def build(name: str, frames: int, img_size: int = 224, vm_kwargs: dict | None = None):
    """The model and the shape of its input clip; at 1 frame VideoMamba and DeiT are the image models.
    ``vm_kwargs``: extra VideoMamba constructor options (e.g. ``inference_memory``, ``recompute``)."""
    image = (3, img_size, img_size)
    if name == "videomamba_tiny":
        from .. import create_model

        kw = dict(vm_kwargs or {})
        if frames == 1:
            return create_model("videomamba_tiny", img_size=img_size, num_classes=400, **kw), image
        return create_model("videomamba_tiny", num_frames=frames, img_size=img_size, num_classes=400, **kw), \
            (3, frames, img_size, img_size)
    if name == "deit_tiny_sdpa":
        import timm

        return timm.create_model("deit_tiny_patch16_224", pretrained=False, img_size=img_size, num_classes=400), \
            image
    from .timesformer import TimeSformerTiny

    return TimeSformerTiny(img_size=img_size, num_frames=frames, num_classes=400,
                           attention=name.rsplit("_", 1)[1]), (3, frames, img_size, img_size)


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
    model, shape = build(cfg["model"], cfg["frames"], cfg["img_size"], cfg.get("vm_kwargs"))
    model = model.to(device)
    x = torch.randn(cfg["batch"], *shape, device=device)
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

    if device.type == "cpu":   # build the kernels now: compiling them is not the model's memory
        from ..ops import causal_conv1d, selective_scan_cpu

        selective_scan_cpu.available(), causal_conv1d.native_available()
    # The baseline: the built model and its input; the warm-up's lazy allocations (optimizer state,
    # library workspaces) count, as they do for a user.
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_bytes()
        _reset_peak_rss()
    seconds = median_time(step, device, warmup=cfg["warmup"], repeats=cfg["repeats"], max_seconds=cfg["max_seconds"])
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = _peak_rss_bytes() - base
    return dict(cfg, seconds=seconds, clips_per_s=cfg["batch"] / seconds, peak_mem_mb=peak / 2 ** 20, status="ok")


def _run_subprocess(cfg: dict, timeout: int, mem_limit_gb: float, for_memory: bool) -> dict:
    env = {"VIDEOMAMBA_CPU_ARCH": cfg["arch"]} if cfg.get("arch") else {}
    if for_memory and cfg["device"] == "cpu":
        # A fixed mmap threshold makes glibc hand every large tensor back to the system when it is freed,
        # so the resident set follows the live tensors. It slows allocation, hence a separate run.
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    res, why = run_one_in_subprocess("videomamba.bench.model", cfg, ["--mem-limit-gb", str(mem_limit_gb)], env, timeout)
    if res is not None:
        return res
    if why == "timeout":
        return dict(cfg, status="timeout")
    oom = any(k in why for k in ("out of memory", "OutOfMemory", "can't allocate", "Cannot allocate",
                                 "std::bad_alloc", "MemoryError")) or why.startswith(("exit status -9\n", "exit status 137\n"))
    return dict(cfg, status="OOM" if oom else f"error: {last_line(why, 120)}")


def measure(cfg: dict, timeout: int, mem_limit_gb: float) -> dict:
    """Speed from one run with the normal allocator, memory from a second run (one step) on CPU."""
    res = _run_subprocess(cfg, timeout, mem_limit_gb, for_memory=False)
    if res.get("status") == "ok" and cfg["device"] == "cpu":
        mem = _run_subprocess(dict(cfg, repeats=1), timeout, mem_limit_gb, for_memory=True)
        res["peak_mem_mb"] = mem.get("peak_mem_mb") if mem.get("status") == "ok" else None
        res["memory_status"] = mem.get("status")
    return res


def run(device: str = "cpu", frames=(1, 8, 16, 32, 64, 128), modes=("infer", "train"), batch: int = 1,
        repeats: int = 3, out_dir: str = "bench_results", timeout: int = 1800, mem_limit_gb: float = 20.0,
        img_size: int = 224, models=MODELS, archs=None, infer_extra_frames=(256,), vm_kwargs=None) -> dict:
    """Measure every model at every clip length; VideoMamba once per kernel build in ``archs`` (CPU)."""
    cpu = torch.device(device).type == "cpu"
    archs = list(archs) if (archs and cpu) else [None]
    print(f"model benchmark on {machine_description(device)}; batch {batch}, {img_size}px, median of {repeats}"
          + (f"; VideoMamba kernel builds: {', '.join(archs)}" if archs != [None] else "")
          + (f"; VideoMamba options: {vm_kwargs}" if vm_kwargs else ""), flush=True)
    results = []
    for mode in modes:
        lengths = sorted(set(frames) | (set(infer_extra_frames) if mode == "infer" else set()))
        for T in lengths:
            for name in models_at(T, models):
                for arch in (archs if name == "videomamba_tiny" else [None]):
                    cfg = dict(model=name, frames=T, batch=batch, mode=mode, device=device, img_size=img_size,
                               warmup=1, repeats=repeats, max_seconds=None, arch=arch,
                               vm_kwargs=vm_kwargs if name == "videomamba_tiny" else None)
                    t0 = time.time()
                    res = measure(cfg, timeout, mem_limit_gb)
                    res["wall_s"] = time.time() - t0
                    results.append(res)
                    label = name + (f" [{arch}]" if arch else "")
                    print(f"  {mode} T={T} {label}: {res['status']}"
                          + (f", {res['clips_per_s']:.3g} clips/s, {res['peak_mem_mb'] or float('nan'):.0f} MB"
                             if res["status"] == "ok" else ""), flush=True)
    tables = {arch: comparison_rows(results, arch) for arch in archs}
    for arch, rows in tables.items():
        for mode in modes:
            print_table(["frames", "vs", "VideoMamba-Ti clips/s", "other clips/s", "speed-up", "VideoMamba-Ti MB",
                         "other MB", "memory ratio"], [r[1:] for r in rows if r[0] == mode],
                        title=f"\n{mode}" + (f", VideoMamba kernels -march={arch}" if arch else "") + ":")
    checks = {arch: target_checks(results, arch) for arch in archs}
    for arch, lines in checks.items():
        print("\nTARGETS (issue 10)" + (f", -march={arch}" if arch else "") + ":")
        for line in lines:
            print(f"  {'ok    ' if line['ok'] else 'MISSED'}  {line['what']}: {line['value']}")
    payload = dict(device=machine_description(device), batch=batch, img_size=img_size, archs=archs,
                   vm_kwargs=vm_kwargs or {}, results=results, targets=checks)
    path = write_json(f"{out_dir}/model.json", payload)
    png = try_plot(f"{out_dir}/model.png", lambda plt: _plot(plt, results, modes, archs))
    print(f"wrote {path}" + (f" and {png}" if png else ""))
    return payload


def _find(results, model, mode, frames, arch=None):
    for r in results:
        if (r["model"], r["mode"], r["frames"]) == (model, mode, frames) and (
                model != "videomamba_tiny" or r.get("arch") == arch):
            return r
    return {}


def comparison_rows(results, arch=None):
    """``[mode, frames, baseline, vm clips/s, its clips/s, speed-up, vm MB, its MB, its MB / vm MB]``."""
    rows = []
    for mode in dict.fromkeys(r["mode"] for r in results):
        for T in sorted({r["frames"] for r in results if r["mode"] == mode}):
            vm = _find(results, "videomamba_tiny", mode, T, arch)
            for other in [m for m in dict.fromkeys(r["model"] for r in results) if m != "videomamba_tiny"]:
                o = _find(results, other, mode, T)
                if not o:
                    continue
                ok = vm.get("status") == "ok" and o.get("status") == "ok"
                mems = ok and vm.get("peak_mem_mb") and o.get("peak_mem_mb")
                rows.append([mode, T, other, vm.get("clips_per_s") if vm.get("status") == "ok" else vm.get("status"),
                             o.get("clips_per_s") if o.get("status") == "ok" else o.get("status"),
                             vm["clips_per_s"] / o["clips_per_s"] if ok else None,
                             vm.get("peak_mem_mb"), o.get("peak_mem_mb") if o.get("status") == "ok" else o.get("status"),
                             o["peak_mem_mb"] / vm["peak_mem_mb"] if mems else None])
    return rows


def target_checks(results, arch=None) -> list[dict]:
    """The issue's bars, each as ``{what, value, ok}`` (a missing measurement is not ok)."""
    def pair(mode, T, other):
        vm, o = _find(results, "videomamba_tiny", mode, T, arch), _find(results, other, mode, T)
        if vm.get("status") != "ok" or o.get("status") != "ok":
            return None
        return vm, o

    out = []

    def check(what, p, fn, fmt):
        if p is None:
            out.append(dict(what=what, value="not measured", ok=False))
            return
        v = fn(*p)
        ok = v[1] if isinstance(v, tuple) else bool(v)
        out.append(dict(what=what, value=fmt(*p), ok=ok))

    sdpa = "timesformer_tiny_sdpa"
    speed = lambda vm, o: vm["clips_per_s"] / o["clips_per_s"]          # noqa: E731
    mem = lambda vm, o: vm["peak_mem_mb"] / o["peak_mem_mb"] if vm.get("peak_mem_mb") and o.get("peak_mem_mb") else float("inf")  # noqa: E731,E501
    check("64 frames inference: >= 3x TimeSformer-Ti SDPA clips/s", pair("infer", 64, sdpa),
          lambda vm, o: speed(vm, o) >= 3, lambda vm, o: f"{speed(vm, o):.2f}x")
    check("64 frames inference: <= 1/3 of its peak memory", pair("infer", 64, sdpa),
          lambda vm, o: mem(vm, o) <= 1 / 3, lambda vm, o: f"{mem(vm, o):.3f}x ({vm['peak_mem_mb']:.0f} vs {o['peak_mem_mb']:.0f} MB)")
    check("64 frames training step: >= 3x its clips/s", pair("train", 64, sdpa),
          lambda vm, o: speed(vm, o) >= 3, lambda vm, o: f"{speed(vm, o):.2f}x")
    check("64 frames training step: <= 1.0x its peak memory", pair("train", 64, sdpa),
          lambda vm, o: mem(vm, o) <= 1.0, lambda vm, o: f"{mem(vm, o):.3f}x ({vm['peak_mem_mb']:.0f} vs {o['peak_mem_mb']:.0f} MB)")
    check("8 frames inference: >= 1.0x its clips/s", pair("infer", 8, sdpa),
          lambda vm, o: speed(vm, o) >= 1, lambda vm, o: f"{speed(vm, o):.2f}x")
    check("1 frame inference (image model): >= 1.0x DeiT-Ti SDPA clips/s", pair("infer", 1, "deit_tiny_sdpa"),
          lambda vm, o: speed(vm, o) >= 1, lambda vm, o: f"{speed(vm, o):.2f}x")
    vm256, o64 = _find(results, "videomamba_tiny", "infer", 256, arch), _find(results, sdpa, "infer", 64)
    p = (vm256, o64) if vm256.get("status") == "ok" and o64.get("status") == "ok" else None
    check("256-frame inference memory < TimeSformer-Ti SDPA's at 64 frames", p,
          lambda vm, o: (vm.get("peak_mem_mb") or float("inf")) < (o.get("peak_mem_mb") or 0),
          lambda vm, o: f"{vm.get('peak_mem_mb') or float('nan'):.0f} vs {o.get('peak_mem_mb') or float('nan'):.0f} MB")
    return out


def _plot(plt, results, modes, archs=(None,)):
    fig, axes = plt.subplots(len(modes), 2, figsize=(11, 3.8 * len(modes)), squeeze=False)
    for i, mode in enumerate(modes):
        for j, (key, label) in enumerate((("clips_per_s", "clips/s"), ("peak_mem_mb", "peak memory (MB)"))):
            ax = axes[i][j]
            for name in MODELS:
                for arch in (archs if name == "videomamba_tiny" else [None]):
                    pts = [(r["frames"], r[key]) for r in results
                           if r["model"] == name and r["mode"] == mode and r.get("status") == "ok" and r.get(key)
                           and (name != "videomamba_tiny" or r.get("arch") == arch)]
                    if pts:
                        ax.plot(*zip(*sorted(pts)), marker="o" if len(pts) > 1 else "s",
                                label=name + (f" ({arch})" if arch else ""))
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
