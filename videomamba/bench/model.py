"""``videomamba bench model``: VideoMamba-Ti against TimeSformer-Ti (the paper's Fig. 1), 224², T frames.

Baselines: TimeSformer-Ti with naive attention (the ``(L, L)`` matrix, as in the paper) and with PyTorch's
fused ``scaled_dot_product_attention``; at 1 frame also timm's DeiT-Ti (fused attention), against the
VideoMamba-Ti image model. Two modes: inference (clips/s) and a training step (forward + backward + AdamW).

Every measurement runs in a fresh subprocess. Peak memory is the growth over the level with the model and
its input built, warm-up included: on CUDA ``torch.cuda.max_memory_allocated`` (bf16 autocast, as the
official speed test); on CPU the resident-set high-water mark (``VmHWM``, reset through
``/proc/self/clear_refs``) of the same run as the speed, with the default allocator and no ``MALLOC_*``
variables: what a user's process holds, including the freed blocks glibc keeps (issue 24; until then a second
run set ``MALLOC_MMAP_THRESHOLD_`` so that the resident set followed the live tensors, which a user does not
get). The address space is capped (``--mem-limit-gb``) so an
out-of-memory case is reported as OOM instead of taking the machine down. On CPU, VideoMamba runs once per
kernel build in ``archs`` (``-march`` levels); the baselines do not use those kernels and run once, so every
ratio compares figures from one run.

On CUDA (issue 21) the grid also spans: batch sizes (``batch``: ints and ``"official"``, the per-GPU training
batch of each model's official config, :func:`official_batch`), VideoMamba-Ti/S/M, the scan backend of
VideoMamba (``scan_backends``: each VideoMamba point once per backend, e.g. ``triton`` and ``mamba_ssm``,
through ``$VIDEOMAMBA_SCAN_BACKEND`` in its process), autocast (``amp``: bf16 by default on CUDA) and
``torch.compile`` (``compile_modes``: off / default / reduce-overhead, for inference; for training too with
``compile_train``). The issue's bars are drawn by :func:`gpu_target_checks`.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import torch

from .common import (Report, format_table, last_line, machine_description, median_time, run_one_in_subprocess,
                     target_line, temporary_env, try_plot, write_json)

from . import MODELS  # noqa: E402

IMAGE_ONLY = ("deit_tiny_sdpa",)      # measured at 1 frame only
VIDEOMAMBA = ("videomamba_tiny", "videomamba_small", "videomamba_middle")


def is_videomamba(name: str) -> bool:
    return name.startswith("videomamba_")


# The official per-GPU training batch: the clips one GPU runs through forward + backward per step, i.e.
# ``data.batch_size x data.num_sample`` (repeated augmentation: every loaded video gives num_sample clips) of
# the model's Kinetics-400 8-frame fine-tuning config for clips, of its ImageNet-1K config at 1 frame:
#   videomamba_tiny    configs/video_sm/k400/videomamba_tiny_f8_res224.yaml:23    batch_size 64 x num_sample 2 = 128
#                      configs/image_sm/videomamba_tiny_in1k_224.yaml:7           batch_size 512 (8 GPUs)
#   videomamba_small   configs/video_sm/k400/videomamba_small_f8_res224.yaml:23   batch_size 64 x num_sample 2 = 128
#                      configs/image_sm/videomamba_small_in1k_224.yaml:6          batch_size 512 (8 GPUs)
#   videomamba_middle  configs/video_sm/k400/videomamba_middle_f8_res224.yaml:23  batch_size 32 x num_sample 2 = 64
#                      configs/image_sm/videomamba_middle_in1k_224_distill.yaml:9 batch_size 128 (16 GPUs)
# (num_sample 2: configs/video_sm/_base_video.yaml:49, inherited through _base_k400.yaml; the image configs
# have none, i.e. 1.) The K400 masked pretraining of M (video_sm/k400/videomamba_middle_mask_pt_f8_res224.yaml,
# from _base_pretrain.yaml:54-55) runs 64 x 1 per GPU on a different model (the masked student + CLIP
# teacher); it is not benchmarked here. The baselines (TimeSformer-Ti, DeiT-Ti) have no official config of
# ours and take VideoMamba-Ti's. Read from the files when the repository's configs/ is there, else these.
OFFICIAL_CONFIGS = {
    "videomamba_tiny": {"video": "video_sm/k400/videomamba_tiny_f8_res224.yaml",
                        "image": "image_sm/videomamba_tiny_in1k_224.yaml"},
    "videomamba_small": {"video": "video_sm/k400/videomamba_small_f8_res224.yaml",
                         "image": "image_sm/videomamba_small_in1k_224.yaml"},
    "videomamba_middle": {"video": "video_sm/k400/videomamba_middle_f8_res224.yaml",
                          "image": "image_sm/videomamba_middle_in1k_224_distill.yaml"},
}
OFFICIAL_BATCH = {"videomamba_tiny": {"video": 128, "image": 512}, "videomamba_small": {"video": 128, "image": 512},
                  "videomamba_middle": {"video": 64, "image": 128}}
CONFIG_ROOT = Path(__file__).resolve().parents[2] / "configs"


def official_batch(name: str, frames: int = 8, config_root: str | Path | None = CONFIG_ROOT) -> int:
    """The per-GPU training batch of ``name``'s official config (see :data:`OFFICIAL_CONFIGS`): the video
    config for ``frames > 1``, the image one at 1 frame; baselines take VideoMamba-Ti's."""
    vm = name if name in OFFICIAL_CONFIGS else "videomamba_tiny"
    kind = "image" if frames == 1 else "video"
    path = Path(config_root) / OFFICIAL_CONFIGS[vm][kind] if config_root else None
    if path is not None and path.is_file():
        from ..engine.config import load_config

        data = load_config(path).data
        return int(data.batch_size) * int(data.get("num_sample") or 1)
    return OFFICIAL_BATCH[vm][kind]


def models_at(frames: int, models=MODELS):
    return [m for m in models if frames == 1 or m not in IMAGE_ONLY]


def build(name: str, frames: int, img_size: int = 224, vm_kwargs: dict | None = None,
          baseline_kwargs: dict | None = None):
    """The model and the shape of its input clip; at 1 frame VideoMamba and DeiT are the image models.
    ``vm_kwargs``: extra VideoMamba constructor options (e.g. ``inference_memory``, ``recompute``);
    ``baseline_kwargs``: extra TimeSformer-Ti options (e.g. ``depth`` for smoke tests)."""
    image = (3, img_size, img_size)
    if is_videomamba(name):
        from ..factory import create_model

        kw = dict(vm_kwargs or {})
        if frames == 1:
            return create_model(name, img_size=img_size, num_classes=400, **kw), image
        return create_model(name, num_frames=frames, img_size=img_size, num_classes=400, **kw), \
            (3, frames, img_size, img_size)
    if name == "deit_tiny_sdpa":
        import timm

        return timm.create_model("deit_tiny_patch16_224", pretrained=False, img_size=img_size, num_classes=400), \
            image
    from .timesformer import TimeSformerTiny

    return TimeSformerTiny(img_size=img_size, num_frames=frames, num_classes=400,
                           attention=name.rsplit("_", 1)[1], **(baseline_kwargs or {})), (3, frames, img_size, img_size)


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


def scan_backend_env(backend: str | None):
    """``$VIDEOMAMBA_SCAN_BACKEND=backend`` inside the block (None: as is): every scan of the model uses it."""
    from ..ops.selective_scan import ENV_VAR

    return temporary_env(ENV_VAR, backend)


def measure_one(cfg: dict) -> dict:
    """Run one configuration in this process and return its figures."""
    with scan_backend_env(cfg.get("scan_backend")):
        return _measure_one(cfg)


def _measure_one(cfg: dict) -> dict:
    device = torch.device(cfg["device"])
    if device.type == "cpu":   # as the training engine does: subnormals would dominate training steps
        from ..ops import flush_denormals

        flush_denormals(True)
    torch.manual_seed(0)
    model, shape = build(cfg["model"], cfg["frames"], cfg["img_size"], cfg.get("vm_kwargs"), cfg.get("baseline_kwargs"))
    model = model.to(device)
    x = torch.randn(cfg["batch"], *shape, device=device)
    amp_name = cfg.get("amp") or ("bf16" if device.type == "cuda" else "fp32")
    amp = (torch.autocast(device.type, dtype=torch.bfloat16) if amp_name == "bf16"
           else torch.autocast(device.type, enabled=False))
    warmup = cfg["warmup"]
    compile_mode = cfg.get("compile") or "off"
    net = model
    if compile_mode != "off" and (cfg["mode"] == "infer" or cfg.get("compile_train")):
        net = torch.compile(model, mode=None if compile_mode == "default" else compile_mode)
        warmup = max(warmup, 3)      # compilation, then (reduce-overhead) CUDA-graph recording
    graphs = net is not model and compile_mode in ("reduce-overhead", "max-autotune") and device.type == "cuda"

    def forward():
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()
        return net(x)

    if cfg["mode"] == "infer":
        model.eval()

        def step():
            with torch.inference_mode(), amp:
                forward()
    else:
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step():
            with amp:
                loss = forward().float().logsumexp(-1).mean()
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
    seconds = median_time(step, device, warmup=warmup, repeats=cfg["repeats"], max_seconds=cfg["max_seconds"])
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = _peak_rss_bytes() - base
    return dict(cfg, seconds=seconds, clips_per_s=cfg["batch"] / seconds, peak_mem_mb=peak / 2 ** 20, status="ok")


def _run_subprocess(cfg: dict, timeout: int, mem_limit_gb: float) -> dict:
    # no MALLOC_* tuning: the memory figure is what a plain process gets (the same run as the speed)
    env = {"VIDEOMAMBA_CPU_ARCH": cfg["arch"]} if cfg.get("arch") else {}
    res, why = run_one_in_subprocess("videomamba.bench.model", cfg, ["--mem-limit-gb", str(mem_limit_gb)], env, timeout)
    if res is not None:
        return res
    if why == "timeout":
        return dict(cfg, status="timeout")
    oom = any(k in why for k in ("out of memory", "OutOfMemory", "can't allocate", "Cannot allocate",
                                 "std::bad_alloc", "MemoryError")) or why.startswith(("exit status -9\n", "exit status 137\n"))
    return dict(cfg, status="OOM" if oom else f"error: {last_line(why, 120)}")


def _failure_status(why: str) -> str:
    oom = any(k in why for k in ("out of memory", "OutOfMemory", "can't allocate", "Cannot allocate",
                                 "std::bad_alloc", "MemoryError"))
    return "OOM" if oom else f"error: {last_line(why, 120)}"


def measure(cfg: dict, timeout: int, mem_limit_gb: float, in_process: bool = False) -> dict:
    """Speed and peak memory from one run in a fresh subprocess with the default allocator.
    ``in_process``: in this process instead (smoke tests; the CPU memory figure is then rough)."""
    if in_process:
        try:
            return measure_one(cfg)
        except Exception as err:   # noqa: BLE001 - reported like a failed subprocess
            if torch.device(cfg["device"]).type == "cuda":
                torch.cuda.empty_cache()
            return dict(cfg, status=_failure_status(f"{type(err).__name__}: {err}"))
    return _run_subprocess(cfg, timeout, mem_limit_gb)


def batch_specs(batch) -> list:
    """``1`` / ``"official"`` / ``[1, "official", 32]`` -> a list of ints and ``"official"``."""
    items = batch if isinstance(batch, (list, tuple)) else [batch]
    return [b if b == "official" else int(b) for b in items]


def unavailable_backend(backend: str | None, device: str) -> str | None:
    """Why a VideoMamba scan backend cannot run on ``device`` here (None: it can)."""
    if backend in (None, "auto"):
        return None
    from ..ops.selective_scan import _mamba_ssm_importable, backend_available

    dev = torch.device(device).type
    if backend_available(backend, dev):
        return None
    if backend == "mamba_ssm" and not _mamba_ssm_importable():
        return "mamba_ssm not importable"
    return f"{backend} backend not available on {dev}"


def point(model: str, frames: int, mode: str, batch=1, device: str = "cpu", img_size: int = 224, warmup: int = 1,
          repeats: int = 3, max_seconds=None, arch=None, vm_kwargs=None, amp=None, scan_backend=None,
          compile="off", compile_train=False, baseline_kwargs=None) -> dict:
    """One measurement's config. ``batch`` may be ``"official"`` (resolved here; ``batch_spec`` keeps it)."""
    vm = is_videomamba(model)
    kw = dict(vm_kwargs or {}) if vm else None
    return dict(model=model, frames=frames, batch=official_batch(model, frames) if batch == "official" else int(batch),
                batch_spec=batch, mode=mode, device=device, img_size=img_size, warmup=warmup, repeats=repeats,
                max_seconds=max_seconds, arch=arch if vm else None, vm_kwargs=kw or None,
                amp=amp, scan_backend=scan_backend if vm else None, compile=compile, compile_train=compile_train,
                **({"baseline_kwargs": baseline_kwargs} if baseline_kwargs and model.startswith("timesformer") else {}))


def plan(device="cpu", frames=(1, 8, 16, 32, 64, 128), modes=("infer", "train"), batch=1, repeats=3, img_size=224,
         models=MODELS, archs=None, infer_extra_frames=(256,), vm_kwargs=None, amp=None, scan_backends=None,
         compile_modes=("off",), compile_train=False, warmup=1, max_seconds=None) -> list[dict]:
    """The grid of measurements: mode x frames x model x batch x compile mode x (VideoMamba) kernel build
    x scan backend."""
    archs = list(archs) if archs else [None]
    backends = list(scan_backends) if scan_backends else [None]
    points = []
    for mode in modes:
        lengths = sorted(set(frames) | (set(infer_extra_frames) if mode == "infer" else set()))
        for T in lengths:
            for name in models_at(T, models):
                vm = is_videomamba(name)
                for spec in batch_specs(batch):
                    for comp in (compile_modes if (mode == "infer" or compile_train) else ["off"]):
                        for arch in (archs if vm else [None]):
                            for sb in (backends if vm else [None]):
                                points.append(point(name, T, mode, spec, device, img_size, warmup, repeats,
                                                    max_seconds, arch, vm_kwargs, amp, sb, comp, compile_train))
    return points


def label(r: dict) -> str:
    """``videomamba_tiny [native] [mamba_ssm] [compile reduce-overhead]``."""
    parts = [r["model"]]
    for key, fmt in (("arch", "[{}]"), ("scan_backend", "[{}]"), ("compile", "[compile {}]")):
        v = r.get(key)
        if v and v != "off":
            parts.append(fmt.format(v))
    return " ".join(parts)


def run(device: str = "cpu", frames=(1, 8, 16, 32, 64, 128), modes=("infer", "train"), batch=1,
        repeats: int = 3, out_dir: str = "bench_results", timeout: int = 1800, mem_limit_gb: float = 20.0,
        img_size: int = 224, models=MODELS, archs=None, infer_extra_frames=(256,), vm_kwargs=None, amp=None,
        scan_backends=None, compile_modes=("off",), compile_train=False, points=None, name: str = "model",
        targets: str = "auto", in_process: bool = False, budget_s: float | None = None,
        gpu_target_frames=None, memory_limits_mb=None, rounds: int = 1) -> dict:
    """Measure every model at every clip length; VideoMamba once per kernel build in ``archs`` (CPU) and per
    scan backend in ``scan_backends``. ``points``: an explicit list of :func:`point` configs instead of the
    grid. ``targets``: "cpu" (issue 24's bars), "gpu" (issue 21's) or "auto" (by device). ``budget_s``:
    points not started within it are skipped. ``rounds``: every point measured that many times, each time in a
    fresh process, the points taken in turn (all once, then all again): a shared machine whose speed drifts for
    seconds at a time then slows every point alike rather than one of a pair; the speed is the median of the
    rounds, the memory their largest. Writes ``name``.json/.txt/.png into ``out_dir``."""
    if rounds < 1:
        raise ValueError(f"bench model: rounds must be >= 1, got {rounds}")
    cpu = torch.device(device).type == "cpu"
    archs = list(archs) if (archs and cpu) else [None]
    if points is None:
        points = plan(device, frames, modes, batch, repeats, img_size, models, archs, infer_extra_frames, vm_kwargs,
                      amp, scan_backends, compile_modes, compile_train)
    modes = list(dict.fromkeys(p["mode"] for p in points))
    specs = list(dict.fromkeys(p["batch_spec"] for p in points))
    say = Report()
    official = {p["model"]: p["batch"] for p in points if p["batch_spec"] == "official" and p["frames"] > 1}
    amp_used = amp or ("bf16" if not cpu else None)
    say(f"model benchmark on {machine_description(device)}; batch {', '.join(map(str, specs))}"
        + (f" (official per-GPU training batch of clips: {', '.join(f'{m} {b}' for m, b in official.items())})"
           if official else "")
        + f", {points[0]['img_size'] if points else img_size}px, median of {repeats}"
        + (f" steps per process, median of {rounds} processes per point taken in turn" if rounds > 1 else "")
        + (f"; VideoMamba kernel builds: {', '.join(archs)}" if archs != [None] else "")
        + (f"; VideoMamba options: {vm_kwargs}" if vm_kwargs else "")
        + (f"; autocast {amp_used}" if amp_used and not cpu else (f"; autocast {amp}" if amp else "")))
    start = time.time()
    measured = [[] for _ in points]
    for rnd in range(rounds):
        for i, cfg in enumerate(points):
            t0 = time.time()
            over_budget = budget_s is not None and t0 - start > budget_s
            if rnd > 0 and (measured[i][0]["status"] != "ok" or over_budget):
                continue   # (a point that failed once is not measured again; a late round may stop early)
            why = unavailable_backend(cfg.get("scan_backend"), cfg["device"])
            if why:
                res = dict(cfg, status=f"skipped: {why}")
            elif over_budget:
                res = dict(cfg, status="skipped: time budget")
            else:
                res = measure(cfg, timeout, mem_limit_gb, in_process)
            res["wall_s"] = time.time() - t0
            measured[i].append(res)
            say(f"  {cfg['mode']} T={cfg['frames']}" + (f" B={cfg['batch']}" if cfg["batch"] != 1 else "")
                + f" {label(cfg)}" + (f" (round {rnd + 1}/{rounds})" if rounds > 1 else "") + f": {res['status']}"
                + (f", {res['clips_per_s']:.3g} clips/s, {res['peak_mem_mb'] or float('nan'):.0f} MB"
                   if res["status"] == "ok" else ""))
    results = [combine_rounds(runs) for runs in measured]
    for variant in vm_variants(results):
        arch, sb, comp, b = variant
        rows = comparison_rows(results, arch, scan_backend=sb, compile=comp, batch=b)
        plain = sb is None and comp == "off" and b == 1
        for mode in modes:
            mode_rows = [r[1:] for r in rows if r[0] == mode]
            if mode_rows or plain:
                say(format_table(["frames", "vs", "VideoMamba-Ti clips/s", "other clips/s", "speed-up",
                                  "VideoMamba-Ti MB", "other MB", "memory ratio"], mode_rows,
                                 title=f"\n{mode}" + (f", VideoMamba kernels -march={arch}" if arch else "")
                                 + (f", batch {b}" if b != 1 else "") + (f", scan backend {sb}" if sb else "")
                                 + (f", torch.compile {comp}" if comp != "off" else "") + ":"))
    backend_table = backend_rows(results)
    if backend_table:
        headers, rows = backend_table
        say(format_table(headers, rows, title="\nVideoMamba by scan backend (same run):"))
    gpu = targets == "gpu" or (targets == "auto" and not cpu)
    if gpu:
        checks = {"issue 21": gpu_target_checks(results, frames=gpu_target_frames, memory_limits_mb=memory_limits_mb,
                                                ours=("triton", None) if not cpu else ("cpu", None))}
        say("\nTARGETS (issue 21, model):")
        for line in checks["issue 21"]:
            say("  " + target_line(line))
        for line in compile_lines(results):
            say("  " + line)
    else:
        checks = {arch: target_checks(results, arch) for arch in archs}
        for arch, lines in checks.items():
            say("\nTARGETS (issue 24)" + (f", -march={arch}" if arch else "") + ":")
            for line in lines:
                say("  " + target_line(line))
    payload = dict(device=machine_description(device), batch=specs[0] if len(specs) == 1 else specs,
                   img_size=points[0]["img_size"] if points else img_size, archs=archs, vm_kwargs=vm_kwargs or {},
                   official_batch=official or None, amp=amp_used, results=results, targets=checks)
    path = write_json(f"{out_dir}/{name}.json", payload)
    say.write(path.parent / f"{name}.txt")
    png = try_plot(f"{out_dir}/{name}.png", lambda plt: _plot(plt, results, modes))
    print(f"wrote {path}, {name}.txt" + (f" and {png}" if png else ""))
    return payload


def combine_rounds(runs: list[dict]) -> dict:
    """One point's result from its rounds: the median speed (of an odd count the middle round, else the mean of
    the two middle ones) and the largest memory; the first failure if any round failed."""
    failed = [r for r in runs if r["status"] != "ok"]
    if failed or len(runs) == 1:
        return failed[0] if failed else runs[0]
    seconds = sorted(r["seconds"] for r in runs)
    mid = len(seconds) // 2
    median = seconds[mid] if len(seconds) % 2 else 0.5 * (seconds[mid - 1] + seconds[mid])
    peaks = [r["peak_mem_mb"] for r in runs if r.get("peak_mem_mb") is not None]
    return dict(runs[0], seconds=median, clips_per_s=runs[0]["batch"] / median,
                peak_mem_mb=max(peaks) if peaks else None, wall_s=sum(r["wall_s"] for r in runs),
                round_seconds=[r["seconds"] for r in runs])


_DEFAULTS = dict(arch=None, scan_backend=None, compile="off", batch_spec=None, vm_kwargs=None)


def _matches(r: dict, key: str, want) -> bool:
    have = r.get(key, _DEFAULTS.get(key)) if key != "batch_spec" else r.get("batch_spec", r.get("batch"))
    if key == "compile":
        have = have or "off"
    return have in want if isinstance(want, tuple) else have == want


def _find(results, model, mode, frames, arch=None, **match):
    """The first result of ``model`` in ``mode`` at ``frames`` whose fields equal ``match`` (a tuple: one of);
    VideoMamba results also match on ``arch`` (and, unless given, on no scan backend override and no compile)."""
    vm = is_videomamba(model)
    if vm:
        match = {"arch": arch, "scan_backend": None, **match}
    match.setdefault("compile", "off")
    for r in results:
        if (r["model"], r["mode"], r["frames"]) == (model, mode, frames) and all(
                _matches(r, k, v) for k, v in match.items()):
            return r
    return {}


def vm_variants(results) -> list[tuple]:
    """The distinct ``(arch, scan_backend, compile, batch)`` of the VideoMamba-Ti results, in order."""
    return list(dict.fromkeys((r.get("arch"), r.get("scan_backend"), r.get("compile") or "off", r["batch"])
                              for r in results if r["model"] == "videomamba_tiny"))


def comparison_rows(results, arch=None, **match):
    """``[mode, frames, baseline, vm clips/s, its clips/s, speed-up, vm MB, its MB, its MB / vm MB]``;
    ``match`` (scan_backend, compile, batch) picks the VideoMamba-Ti results, the baselines share its compile
    mode and batch."""
    base_match = {k: v for k, v in match.items() if k in ("compile", "batch")}
    rows = []
    for mode in dict.fromkeys(r["mode"] for r in results):
        for T in sorted({r["frames"] for r in results if r["mode"] == mode}):
            vm = _find(results, "videomamba_tiny", mode, T, arch, **match)
            if not vm:
                continue
            for other in [m for m in dict.fromkeys(r["model"] for r in results) if not is_videomamba(m)]:
                o = _find(results, other, mode, T, **base_match)
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


def backend_rows(results):
    """``(headers, rows)`` comparing VideoMamba's scan backends point by point, or None with fewer than two."""
    backends = list(dict.fromkeys(r.get("scan_backend") for r in results if is_videomamba(r["model"])))
    if len(backends) < 2:
        return None
    keys = list(dict.fromkeys((r["model"], r["mode"], r["frames"], r["batch"], r.get("compile") or "off", r.get("arch"))
                              for r in results if is_videomamba(r["model"])))
    rows = []
    for model, mode, T, b, comp, arch in keys:
        got = [_find(results, model, mode, T, arch, scan_backend=sb, compile=comp, batch=b) for sb in backends]
        speed = [g.get("clips_per_s") if g.get("status") == "ok" else (g.get("status") or "-").replace("skipped: ", "")
                 for g in got]
        mem = [g.get("peak_mem_mb") if g.get("status") == "ok" else None for g in got]
        ratios = [speed[0] / s if isinstance(speed[0], float) and isinstance(s, float) else None for s in speed[1:]]
        rows.append([model, mode, T, b, comp, *speed, *mem, *ratios])
    names = [sb or "auto" for sb in backends]
    headers = (["model", "mode", "frames", "batch", "compile"] + [f"{n} clips/s" for n in names]
               + [f"{n} MB" for n in names] + [f"{names[0]} / {n}" for n in names[1:]])
    return headers, rows


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
    # issue 24's bars (memory: peak RSS growth of a plain process, the same run as the speed)
    check("8 frames inference: >= 1.0x TimeSformer-Ti SDPA clips/s", pair("infer", 8, sdpa),
          lambda vm, o: speed(vm, o) >= 1, lambda vm, o: f"{speed(vm, o):.2f}x")
    check("16 frames inference: >= 1.5x its clips/s", pair("infer", 16, sdpa),
          lambda vm, o: speed(vm, o) >= 1.5, lambda vm, o: f"{speed(vm, o):.2f}x")
    check("64 frames inference: >= 3x its clips/s", pair("infer", 64, sdpa),
          lambda vm, o: speed(vm, o) >= 3, lambda vm, o: f"{speed(vm, o):.2f}x")
    check("64 frames inference: <= 1/3 of its peak memory", pair("infer", 64, sdpa),
          lambda vm, o: mem(vm, o) <= 1 / 3, lambda vm, o: f"{mem(vm, o):.3f}x ({vm['peak_mem_mb']:.0f} vs {o['peak_mem_mb']:.0f} MB)")
    check("64 frames training step: >= 3x its clips/s", pair("train", 64, sdpa),
          lambda vm, o: speed(vm, o) >= 3, lambda vm, o: f"{speed(vm, o):.2f}x")
    check("64 frames training step: <= 0.5x its peak memory", pair("train", 64, sdpa),
          lambda vm, o: mem(vm, o) <= 0.5, lambda vm, o: f"{mem(vm, o):.3f}x ({vm['peak_mem_mb']:.0f} vs {o['peak_mem_mb']:.0f} MB)")
    check("1 frame inference (image model): >= 0.6x DeiT-Ti SDPA clips/s", pair("infer", 1, "deit_tiny_sdpa"),
          lambda vm, o: speed(vm, o) >= 0.6, lambda vm, o: f"{speed(vm, o):.2f}x")
    vm256, o64 = _find(results, "videomamba_tiny", "infer", 256, arch), _find(results, sdpa, "infer", 64)
    p = (vm256, o64) if vm256.get("status") == "ok" and o64.get("status") == "ok" else None
    check("256-frame inference memory < TimeSformer-Ti SDPA's at 64 frames", p,
          lambda vm, o: (vm.get("peak_mem_mb") or float("inf")) < (o.get("peak_mem_mb") or 0),
          lambda vm, o: f"{vm.get('peak_mem_mb') or float('nan'):.0f} vs {o.get('peak_mem_mb') or float('nan'):.0f} MB")
    return out


# Issue 21's bars (one H100, bf16 autocast). Memory: VideoMamba-Ti's peaks in the same benchmark on the lean
# paths before issue 21 (docs/benchmarks/h100/bench_gpu.txt: inference 68 MB at 64 frames, 152 MB at 256;
# bench_gpu_train.txt: training step 697 MB at 64 frames; batch 1, 224px, 2026-11-25), not to get worse.
H100_LEAN_MB = {("infer", 64): 68.0, ("infer", 256): 152.0, ("train", 64): 697.0}
GPU_TARGET_FRAMES = {"train_vs_backend": 8, "infer": 64, "infer_long": 256, "train": 64}


def _status_of(r: dict) -> str:
    return (r.get("status") or "not measured").replace("skipped: ", "") if r else "not measured"


def gpu_target_checks(results, frames=None, memory_limits_mb=None, ours=("triton", None), base="mamba_ssm",
                      sdpa="timesformer_tiny_sdpa") -> list[dict]:
    """Issue 21's model bars as ``{what, value, ok, ratio}`` (a missing or failed measurement is MISSED with
    its status, e.g. "mamba_ssm not importable"). ``frames``: the clip lengths of the bars (default
    :data:`GPU_TARGET_FRAMES`), ``memory_limits_mb``: ``{(mode, frames): MB}`` (default :data:`H100_LEAN_MB`;
    ``{}``: no memory bars), ``ours``: the scan backend(s) counted as ours (None = the default one)."""
    f = {**GPU_TARGET_FRAMES, **(frames or {})}
    limits = H100_LEAN_MB if memory_limits_mb is None else memory_limits_mb
    out = []

    def ratio_check(what, mine, other, target):
        if mine.get("status") != "ok" or other.get("status") != "ok":
            bad = other if mine.get("status") == "ok" else mine
            out.append(dict(what=what, value=_status_of(bad), ok=False, ratio=None, target=target))
            return
        ratio = mine["clips_per_s"] / other["clips_per_s"]
        value = f"{ratio:.2f}x ({mine['clips_per_s']:.3g} vs {other['clips_per_s']:.3g} clips/s)"
        out.append(dict(what=what, value=value, ok=ratio >= target, ratio=ratio, target=target))

    T = f["train_vs_backend"]
    for model, name in (("videomamba_tiny", "VideoMamba-Ti"), ("videomamba_middle", "VideoMamba-M")):
        mine = _find(results, model, "train", T, scan_backend=ours, batch_spec="official")
        other = _find(results, model, "train", T, scan_backend=base, batch_spec="official")
        b = (mine or other).get("batch", "official")
        ratio_check(f"{name} training step {T}x{(mine or other).get('img_size', 224)}, official batch ({b}): "
                    f">= 1.0x the same model on the {base} backend", mine, other, 1.0)
    vm = lambda mode, T: _find(results, "videomamba_tiny", mode, T, scan_backend=ours, batch=1)  # noqa: E731
    ts = lambda mode, T: _find(results, sdpa, mode, T, batch=1)                                   # noqa: E731
    ratio_check(f"VideoMamba-Ti inference, batch 1, {f['infer']} frames: >= 1.0x TimeSformer-Ti SDPA clips/s",
                vm("infer", f["infer"]), ts("infer", f["infer"]), 1.0)
    ratio_check(f"VideoMamba-Ti inference, batch 1, {f['infer_long']} frames: >= 2x TimeSformer-Ti SDPA clips/s",
                vm("infer", f["infer_long"]), ts("infer", f["infer_long"]), 2.0)
    ratio_check(f"VideoMamba-Ti training step, batch 1, {f['train']} frames: >= 1.0x TimeSformer-Ti SDPA clips/s",
                vm("train", f["train"]), ts("train", f["train"]), 1.0)
    for (mode, T), limit in limits.items():
        r = vm(mode, T)
        what = (f"VideoMamba-Ti {'inference' if mode == 'infer' else 'training step'}, batch 1, {T} frames: "
                f"peak memory <= {limit:.0f} MB (before issue 21)")
        if r.get("status") != "ok" or r.get("peak_mem_mb") is None:
            out.append(dict(what=what, value=_status_of(r), ok=False, ratio=None, target=limit))
        else:
            out.append(dict(what=what, value=f"{r['peak_mem_mb']:.0f} MB", ok=r["peak_mem_mb"] <= limit,
                            ratio=r["peak_mem_mb"] / limit, target=limit))
    return out


def compile_lines(results) -> list[str]:
    """``info`` lines: each compiled inference point against the same point eager."""
    lines = []
    for r in results:
        comp = r.get("compile") or "off"
        if comp == "off" or r.get("status") != "ok":
            continue
        eager = _find(results, r["model"], r["mode"], r["frames"], r.get("arch"), scan_backend=r.get("scan_backend"),
                      compile="off", batch=r["batch"])
        rel = (f" = {r['clips_per_s'] / eager['clips_per_s']:.2f}x eager ({eager['clips_per_s']:.3g})"
               if eager.get("status") == "ok" else "")
        lines.append(f"info    {r['model']} {r['mode']} T={r['frames']} B={r['batch']} torch.compile {comp}: "
                     f"{r['clips_per_s']:.3g} clips/s{rel}, {r.get('peak_mem_mb') or float('nan'):.0f} MB")
    return lines


def _plot(plt, results, modes, archs=None):
    fig, axes = plt.subplots(len(modes), 2, figsize=(11, 3.8 * len(modes)), squeeze=False)
    series = list(dict.fromkeys((r["model"], r.get("arch"), r.get("scan_backend"), r.get("compile") or "off",
                                 r["batch"]) for r in results))
    for i, mode in enumerate(modes):
        for j, (key, ylabel) in enumerate((("clips_per_s", "clips/s"), ("peak_mem_mb", "peak memory (MB)"))):
            ax = axes[i][j]
            for model, arch, sb, comp, b in series:
                pts = [(r["frames"], r[key]) for r in results
                       if (r["model"], r.get("arch"), r.get("scan_backend"), r.get("compile") or "off", r["batch"])
                       == (model, arch, sb, comp, b) and r["mode"] == mode and r.get("status") == "ok" and r.get(key)]
                if pts:
                    name = model + (f" ({arch})" if arch else "") + (f" [{sb}]" if sb else "") + (
                        f" [compile {comp}]" if comp != "off" else "") + (f" B={b}" if b != 1 else "")
                    ax.plot(*zip(*sorted(pts)), marker="o" if len(pts) > 1 else "s", label=name)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("frames")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{mode}: {ylabel}")
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
