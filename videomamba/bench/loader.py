"""``videomamba bench loader``: does the video training loader keep up with the GPU?

    videomamba bench loader [--gpu-speed FILE] [--videos-dir DIR] [--workers 0 2] [--repeats 5] [--out DIR]

1. Test videos (generated once, cached in ``--videos-dir``, default ``<tmp>/videomamba_bench_loader``):
   Kinetics-like clips of 10 s at 30 fps, H.264 (libx264 with all of x264's defaults: preset medium, CRF 23,
   keyint 250 with scene-cut detection, 3 B-frames with B-pyramid), 16:9 at short side 320 (568x320) and 256
   (456x256), ``--num-videos`` of each. Content: a textured background panning at a changing speed, textured
   shapes moving across it, slow flicker and per-frame sensor noise (so the encoder cannot skip the pixels);
   every second video has a hard scene cut, where x264 puts an extra keyframe, as in edited YouTube clips.
2. The loader measured is the one ``video_sm.finetune`` trains with, built by the same functions from the
   repository's K400 recipe (``configs/video_sm/k400/videomamba_{tiny,small,middle}_f{T}_res224.yaml``):
   ``videomamba.data.video_classification.clip_dataset(cfg, "train", file)`` (``VideoClipDataset``: the
   reader, sparse sampling, the recipe's ``VideoTrainTransform`` - RandAugment, random resized crop, flip, cube erasing - applied to
   ``num_sample`` = 2 copies of each decoded clip) and ``engine.loaders.build_loaders`` (the training
   ``DataLoader``: shuffling sampler, ``collate_train``, ``pin_memory`` from the config, ``drop_last``). Only
   ``data.backend``, ``data.batch_size`` (``--loader-batch`` videos) and ``data.num_workers`` are changed.
   Models whose recipes feed the loader the same way (VideoMamba-S and -M: RandAugment m7-n4; Ti: m5-n2) share
   one measurement.
3. Timing: with 0 workers (in the process, with one torch thread and one decoder thread, as in a
   ``DataLoader`` worker) the median of ``--repeats`` batches after one warm-up batch, in wall-clock time and
   in CPU time of the process (all its threads); clips per CPU-second is what one worker delivers on a core of
   its own, the figure the workers table uses (on an idle machine the two agree; on a shared one the wall
   clock also counts the time other programs held the cores - the load average is recorded). With N workers
   the ``--repeats`` batches after each worker's first batch, end to end, in wall-clock time. A clip is one
   model input (``(3, T, 224, 224)``, one augmented copy), the unit of the GPU's clips/s.
4. Workers per GPU = ceil(GPU training clips/s / clips/s of one worker), against the issue's bar of 8 (it
   assumes a core per worker). The GPU speeds come from ``--gpu-speed`` (a ``videomamba bench model`` JSON,
   whose ``train`` rows give clips/s per model and clip length, see :func:`load_gpu_speed`, or
   ``{"videomamba_tiny": {"8": clips/s, "16": ...}, ...}``); whatever it lacks comes from
   :data:`DEFAULT_GPU_SPEED`, placeholders explained there.

Writes ``loader.json``, ``loader.txt`` (first line: CPU and library versions) and ``loader.png`` into ``--out``.
``--measured loader.json`` recomputes the workers table for other GPU speeds without measuring again.
"""
from __future__ import annotations

import json
import math
import os
import platform
import statistics
import tempfile
import time
import warnings
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import numpy as np

from .common import cpu_name, format_table, host_isa, try_plot, write_json

MODELS = ("videomamba_tiny", "videomamba_small", "videomamba_middle")
SHORT = {"videomamba_tiny": "Ti", "videomamba_small": "S", "videomamba_middle": "M"}
TARGET_WORKERS = 8          # issue 21: enough clips/s with <= 8 workers per GPU ...
TARGET = ("videomamba_tiny", 8)   # ... for VideoMamba-Ti at 8x224
VIDEO_VERSION = 1           # bump when the generated content changes (part of the cached file names)

# Placeholder GPU training speeds, clips/s on one GPU (training step, 224x224): NOT measured here. Derived as
# R / (forward GMACs of the model at that clip length, `videomamba bench flops`, full count) with
# R = 195 img/s x 5.6 GMACs = 1.09e12 MAC/s: the training throughput of Vanilla-VMamba-T on one A100
# (batch 128, mixed precision; VMamba's assets/performance.md, "Train TP."), the published vision model
# closest to the official VideoMamba's kernels (mamba_ssm's selective scan). VMamba v2's own faster kernel
# trains 2.6x faster per MAC (VMamba-T[s1l8]: 571 img/s x 4.9 GMACs), which would multiply every figure
# and every worker count by 2.6. Replace with a measurement: --gpu-speed.
_FULL_GMACS = {("videomamba_tiny", 8): 14.569, ("videomamba_tiny", 16): 29.130,
               ("videomamba_small", 8): 47.185, ("videomamba_small", 16): 94.340,
               ("videomamba_middle", 8): 130.229, ("videomamba_middle", 16): 260.376}
_PLACEHOLDER_RATE = 195 * 5.6e9
DEFAULT_GPU_SPEED = {k: round(_PLACEHOLDER_RATE / (g * 1e9), 1) for k, g in _FULL_GMACS.items()}
DEFAULT_GPU_SOURCE = "placeholder"
PLACEHOLDER_NOTE = ("placeholder GPU speeds (not measured): A100-class estimate = 1.09e12 MAC/s (Vanilla-VMamba-T "
                    "training throughput, VMamba's assets/performance.md) / the model's full forward GMACs at that clip "
                    "length (videomamba bench flops); VMamba v2's faster kernel would make them 2.6x higher. "
                    "Measure with videomamba bench model --device cuda and pass --gpu-speed.")


# ----------------------------------------------------------------------------------------------- videos
def frame_size(short_side: int, aspect: float = 16 / 9) -> tuple[int, int]:
    """``(width, height)`` of a landscape frame with that short side, both even (yuv420p)."""
    return int(round(short_side * aspect / 2)) * 2, short_side


def _texture(rng, h, w, cell):
    """Random colour texture: coarse blobs plus finer detail (smooth, unlike white noise)."""
    def layer(c):
        small = rng.random((h // c + 2, w // c + 2, 3), dtype=np.float32)
        return np.repeat(np.repeat(small, c, 0), c, 1)[:h, :w]
    big = layer(cell * 4)
    return (0.55 * big + 0.3 * layer(cell) + 0.15 * layer(max(cell // 4, 1))) * 255


def _render(path: Path, w: int, h: int, seconds: float, fps: int, seed: int, cut: bool):
    """Encode one synthetic clip with libx264 at its defaults (see the module doc)."""
    import av

    rng = np.random.default_rng(seed)
    n = int(round(seconds * fps))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    scenes = []
    for _ in range(2 if cut else 1):   # a scene: background texture (twice the frame, to pan over) and shapes
        bg = _texture(rng, 2 * h, 2 * w, max(h // 20, 2)) * rng.uniform(0.6, 1.1, 3).astype(np.float32)
        shapes = [dict(x=rng.uniform(0, w), y=rng.uniform(0, h), vx=rng.uniform(-4, 4), vy=rng.uniform(-3, 3),
                       rx=rng.uniform(0.05, 0.2) * h, ry=rng.uniform(0.05, 0.2) * h,
                       tex=_texture(rng, h, w, max(h // 40, 1)) * rng.uniform(0.3, 1.0, 3).astype(np.float32))
                  for _ in range(int(rng.integers(3, 8)))]
        scenes.append((bg, shapes, rng.uniform(0.5, 2.0), rng.uniform(0.2, 1.0)))
    cut_at = int(rng.integers(n // 3, 2 * n // 3)) if cut else n
    tmp = path.with_name(path.name + ".part")
    with av.open(str(tmp), "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"   # no options: x264's defaults
        for i in range(n):
            bg, shapes, speed, drift = scenes[i >= cut_at]
            t = i - (cut_at if i >= cut_at else 0)
            ox = int(t * speed * (1 + 0.5 * math.sin(t / 40))) % w       # pan with a changing speed
            oy = int(t * drift) % h
            img = bg[oy:oy + h, ox:ox + w].copy()
            for sh in shapes:
                cx, cy = (sh["x"] + sh["vx"] * t) % w, (sh["y"] + sh["vy"] * t) % h
                m = ((xx - cx) / sh["rx"]) ** 2 + ((yy - cy) / sh["ry"]) ** 2 < 1
                img[m] = sh["tex"][m]
            img *= 1 + 0.04 * math.sin(i / 7)                            # flicker
            img += rng.normal(0, 3, img.shape).astype(np.float32)        # sensor noise
            frame = av.VideoFrame.from_ndarray(np.clip(img, 0, 255).astype(np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    os.replace(tmp, path)


_PICT = {1: "I", 2: "P", 3: "B", 4: "S", 5: "SI", 6: "SP", 7: "BI"}   # FFmpeg's AVPictureType


def _describe(path: Path) -> dict:
    """Frame count, picture types, keyframes and bit rate of an encoded clip."""
    import av

    types, keys = {}, []
    with av.open(str(path)) as c:
        st = c.streams.video[0]
        for i, f in enumerate(c.decode(st)):
            name = _PICT.get(int(f.pict_type), str(f.pict_type)) if isinstance(f.pict_type, int) else f.pict_type.name
            types[name] = types.get(name, 0) + 1
            if f.key_frame:
                keys.append(i)
        duration = float(st.duration * st.time_base) if st.duration else sum(types.values()) / float(st.average_rate)
        w, h = st.codec_context.width, st.codec_context.height
    return dict(file=path.name, width=w, height=h, frames=sum(types.values()), picture_types=types, keyframes=keys,
                kbit_per_s=round(path.stat().st_size * 8 / duration / 1000))


def make_videos(folder: str | os.PathLike, short_sides=(320, 256), num_videos: int = 8, seconds: float = 10,
                fps: int = 30, log=print) -> dict[int, list[dict]]:
    """The test videos per short side (generated once; reused when already in ``folder``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for short in short_sides:
        w, h = frame_size(short)
        out[short] = []
        for k in range(num_videos):
            path = folder / f"k400like_v{VIDEO_VERSION}_{w}x{h}_{seconds:g}s_{fps}fps_{k}.mp4"
            info_path = path.with_suffix(".json")
            if not (path.is_file() and info_path.is_file()):
                t0 = time.perf_counter()
                _render(path, w, h, seconds, fps, seed=1000 * short + k, cut=k % 2 == 1)
                info_path.write_text(json.dumps(_describe(path)))
                log(f"  generated {path.name} in {time.perf_counter() - t0:.1f} s")
            out[short].append(dict(json.loads(info_path.read_text()), path=str(path)))
    return out


# ----------------------------------------------------------------------------------------------- loader
def repo_root() -> Path:
    """The checkout holding ``video_sm/`` and ``configs/`` (the loader measured is video_sm's)."""
    root = Path(__file__).resolve().parents[2]
    if not ((root / "video_sm" / "data.py").is_file() and (root / "configs" / "video_sm" / "k400").is_dir()):
        raise RuntimeError("videomamba bench loader measures video_sm's training loader with the K400 recipes: "
                           "run it from a checkout of the repository (video_sm/ and configs/ beside videomamba/)")
    return root


def recipe(model: str, frames: int, overrides=()):
    """The K400 fine-tuning config of ``model`` at ``frames`` x 224 (the f8 file with ``data.num_frames``
    changed when the repository has none for that length)."""
    from ..engine.config import load_config

    k400 = repo_root() / "configs" / "video_sm" / "k400"
    path = k400 / f"{model}_f{frames}_res224.yaml"
    extra = []
    if not path.is_file():
        path, extra = k400 / f"{model}_f8_res224.yaml", [f"data.num_frames={frames}"]
    return load_config(path, [*extra, *overrides])


def loader_signature(cfg) -> str:
    """What makes two recipes load differently (everything the train dataset and its loader read)."""
    d, a = cfg.data, cfg.aug
    keys = dict(num_frames=d.num_frames, input_size=d.input_size, sampler=d.sampler, num_sample=d.get("num_sample"),
                sampling_rate=d.get("sampling_rate"), time_control=d.get("time_control"),
                aug={k: a.get(k) for k in ("auto_augment", "scale", "ratio", "hflip", "reprob", "remode",
                                            "train_interpolation", "repeated_aug")})
    return json.dumps(keys, sort_keys=True, default=list)


@contextmanager
def _as_worker(active: bool = True):
    """Threads as in a DataLoader worker: one torch thread, one FFmpeg decoder thread (decode.py)."""
    import torch

    from ..data.decode import _PyAVReader

    old, old_dec = torch.get_num_threads(), getattr(_PyAVReader, "THREADS", None)
    if active:
        torch.set_num_threads(1)
        _PyAVReader.THREADS = 1
    try:
        yield
    finally:
        torch.set_num_threads(old)
        _PyAVReader.THREADS = old_dec


def build_train_loader(model: str, frames: int, videos: list[str], reader: str, batch: int, workers: int,
                       min_batches: int, work: Path):
    """video_sm's training DataLoader for the K400 recipe of ``model``, over ``videos`` (listed as often as
    needed for ``min_batches`` batches)."""
    from ..data.video_classification import clip_dataset
    from ..data.video_dataset import collate_train
    from ..utils.dist import DistInfo
    from ..engine.loaders import build_loaders

    copies = math.ceil(min_batches * batch / len(videos))
    csv = work / f"train_{len(videos)}x{copies}.csv"
    work.mkdir(parents=True, exist_ok=True)
    csv.write_text("".join(f"{v},{i % 400}\n" for _ in range(copies) for i, v in enumerate(videos)))
    cfg = recipe(model, frames, [f"data.backend={reader}", f"data.batch_size={batch}", f"data.num_workers={workers}",
                                 "data.check_files=false"])
    train_set = clip_dataset(cfg, "train", csv)
    loader, _, sampler = build_loaders(cfg, DistInfo(), train_set, None, collate_train)
    sampler.set_epoch(0)
    return cfg, loader


def measure(model: str, frames: int, videos: list[str], reader: str, workers: int, batch: int = 4,
            repeats: int = 5, work: Path | None = None) -> dict:
    """Clips/s of the training loader; see the module doc for the timing rules."""
    import torch

    warm = max(1, workers)
    if work is None:
        with tempfile.TemporaryDirectory(prefix="vm_bench_loader_") as tmp:
            return measure(model, frames, videos, reader, workers, batch, repeats, Path(tmp))
    torch.manual_seed(0)
    cfg, loader = build_train_loader(model, frames, videos, reader, batch, workers, warm + repeats, Path(work))
    dataset, decode_cpu = loader.dataset, [0.0]
    if workers == 0:   # in this process: also count the CPU time spent reading clips (decode + sampling)
        read_clip = dataset.read_clip

        def timed_read_clip(*a, **k):
            c0 = time.process_time()
            try:
                return read_clip(*a, **k)
            finally:
                decode_cpu[0] += time.process_time() - c0
        dataset.read_clip = timed_read_clip
    clips_per_batch = batch * int(cfg.data.get("num_sample") or 1)
    times, cpu, stamps = [], [], []
    load = os.getloadavg()[0]
    with warnings.catch_warnings(), _as_worker(workers == 0):
        warnings.filterwarnings("ignore", message=".*pin_memory.*")
        it = iter(loader)
        t_start = time.perf_counter()
        for k in range(warm + repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            x, y = next(it)
            t1, c1 = time.perf_counter(), time.process_time()
            if k == 0:
                first = t1 - t_start
            if k == warm - 1:
                decode_cpu[0] = 0.0
            if k >= warm:
                times.append(t1 - t0)
                cpu.append(c1 - c0)
            stamps.append(t1)
            if x.shape[0] != clips_per_batch or tuple(x.shape[2:]) != (frames, cfg.data.input_size, cfg.data.input_size):
                raise RuntimeError(f"unexpected batch shape {tuple(x.shape)}")
        del it
    if workers == 0:
        clips_per_s = clips_per_batch / statistics.median(times)
        # one worker on a core of its own: clips per CPU-second of this process (the decoder's threads included)
        per_worker = clips_per_batch / statistics.median(cpu)
    else:
        clips_per_s = clips_per_batch * repeats / (stamps[-1] - stamps[warm - 1])
        per_worker = clips_per_s / workers
    return dict(model=model, frames=frames, size=int(cfg.data.input_size), reader=reader, workers=workers,
                batch_videos=batch, num_sample=int(cfg.data.get("num_sample") or 1), clips_per_batch=clips_per_batch,
                auto_augment=cfg.aug.get("auto_augment"), pin_memory=bool(cfg.data.get("pin_memory")),
                batch_seconds=[round(t, 6) for t in times],
                batch_cpu_seconds=[round(t, 6) for t in cpu] if workers == 0 else None, first_batch_s=round(first, 3),
                clips_per_s=clips_per_s, videos_per_s=clips_per_s / int(cfg.data.get("num_sample") or 1),
                per_worker_clips_per_s=per_worker, load_average=round(load, 2),
                decode_share=decode_cpu[0] / sum(cpu) if workers == 0 and sum(cpu) > 0 else None)


# ----------------------------------------------------------------------------------------------- GPU speeds
def load_gpu_speed(path: str | os.PathLike | None) -> tuple[dict, dict, str]:
    """``(speeds, sources, device)``: training clips/s per (model, frames).

    ``path``: a ``videomamba bench model`` JSON - its ``train`` rows at 224 that finished; per model and clip
    length the rows at the official per-GPU batch (``batch_spec: "official"``), else at the largest batch, and
    of those the fastest (scan backend, compile mode): what a training run would use - or a plain
    ``{model: {frames: clips/s}}`` (optional ``"device"`` key). What it lacks comes from
    :data:`DEFAULT_GPU_SPEED`."""
    speeds, sources = dict(DEFAULT_GPU_SPEED), {k: DEFAULT_GPU_SOURCE for k in DEFAULT_GPU_SPEED}
    device = "placeholder (no --gpu-speed)"
    if path is None:
        return speeds, sources, device
    data = json.loads(Path(path).read_text())
    device = str(data.get("device") or Path(path).name)
    found = {}
    if isinstance(data.get("results"), list):   # videomamba bench model
        rows = {}
        for r in data["results"]:
            if (r.get("mode") == "train" and r.get("status", "ok") == "ok" and r.get("clips_per_s")
                    and r.get("img_size", 224) == 224 and r.get("model") in MODELS):
                rows.setdefault((r["model"], int(r["frames"])), []).append(r)
        for key, rs in rows.items():
            pick = [r for r in rs if r.get("batch_spec") == "official"] or rs
            top = max(int(r.get("batch", 1)) for r in pick)
            best = max((r for r in pick if int(r.get("batch", 1)) == top), key=lambda r: r["clips_per_s"])
            how = ", ".join(f"{k} {best[k]}" for k in ("scan_backend", "compile", "amp") if best.get(k))
            found[key] = (float(best["clips_per_s"]), f"measured, batch {top}" + (f", {how}" if how else ""))
    else:
        for model, per in data.items():
            if model in MODELS and isinstance(per, dict):
                for frames, v in per.items():
                    found[(model, int(frames))] = (float(v), f"given ({Path(path).name})")
    if not found:
        raise ValueError(f"{path}: no training clips/s for {', '.join(MODELS)} at 224 found")
    for key, (v, label) in found.items():
        speeds[key], sources[key] = v, label
    return speeds, sources, device


def workers_table(results: list[dict], speeds: dict, sources: dict, models=MODELS, frames_list=(8, 16)) -> list[dict]:
    """One row per (model, frames, reader, short side): GPU clips/s, one worker's clips/s, workers needed."""
    per_worker = {}
    for r in sorted(results, key=lambda r: r["workers"]):   # fewest workers first: the in-process figure
        per_worker.setdefault((r["model"], r["frames"], r["reader"], r["short_side"]), r["per_worker_clips_per_s"])
    rows = []
    for model in models:
        for frames in frames_list:
            for (m, f, reader, short), pw in per_worker.items():
                if (m, f) != (model, frames) or (model, frames) not in speeds:
                    continue
                gpu = speeds[(model, frames)]
                need = math.ceil(gpu / pw - 1e-9)
                rows.append(dict(model=model, frames=frames, reader=reader, short_side=short, gpu_clips_per_s=gpu,
                                 gpu_source=sources[(model, frames)], per_worker_clips_per_s=pw, workers_needed=need,
                                 ok=need <= TARGET_WORKERS))
    return rows


# ----------------------------------------------------------------------------------------------- reporting
def library_versions() -> str:
    import torch
    import torchvision

    parts = [f"Python {platform.python_version()}", f"torch {torch.__version__}", f"torchvision {torchvision.__version__}",
             f"numpy {np.__version__}"]
    try:
        import av

        parts.append(f"PyAV {av.__version__} (FFmpeg {getattr(av, 'ffmpeg_version_info', '?')})")
    except ImportError:
        parts.append("PyAV missing")
    try:
        import decord

        parts.append(f"decord {decord.__version__}")
    except ImportError:
        parts.append("decord missing")
    return ", ".join(parts)


def machine_line() -> str:
    return (f"{platform.machine()} CPU ({cpu_name()}, {host_isa()}), {os.cpu_count()} cores; "
            f"{library_versions()}")


def _report(payload: dict) -> str:
    lines = [payload["machine"], ""]
    vids = payload["videos"]
    for short, vs in vids.items():
        v0 = vs[0]
        kbps = [v["kbit_per_s"] for v in vs]
        types = {}
        for v in vs:
            for t, c in v["picture_types"].items():
                types[t] = types.get(t, 0) + c
        total = sum(types.values())
        lines.append(f"videos short side {short}: {len(vs)} x {v0['width']}x{v0['height']}, {v0['frames']} frames, "
                     f"H.264 (x264 defaults), {min(kbps)}-{max(kbps)} kbit/s, keyframes per video "
                     f"{'/'.join(str(len(v['keyframes'])) for v in vs)}, picture types "
                     + " ".join(f"{t} {100 * c / total:.0f}%" for t, c in sorted(types.items())))
    s = payload["settings"]
    lines.append(f"loader: video_sm build_dataset + engine build_loaders, K400 recipes; batch {s['batch_videos']} "
                 f"videos x num_sample copies; 0 workers: median of {s['repeats']} batches after 1 warm-up "
                 f"(1 torch thread, 1 decoder thread, as in a worker); N workers: {s['repeats']} batches after each worker's first")
    lines.append("")
    rows = [[r["reader"], r["short_side"], f"{r['frames']}x{r['size']}", r["recipe"], r["workers"],
             f"{r['clips_per_s']:.2f}", f"{r['videos_per_s']:.2f}", f"{r['per_worker_clips_per_s']:.2f}",
             f"{r['first_batch_s']:.2f}", f"{r.get('load_average', float('nan')):.1f}",
             f"{100 * r['decode_share']:.0f}%" if r.get("decode_share") is not None else None]
            for r in payload["results"]]
    lines.append(format_table(["reader", "short side", "clip", "recipe (RandAugment)", "workers", "clips/s",
                               "videos/s", "clips/s per worker", "first batch s", "load avg", "decoding"], rows,
                              title="training loader throughput (a clip = one augmented (3, T, 224, 224) input); "
                                    "clips/s: wall clock; per worker: 0 workers = clips per CPU-second of the "
                                    "process (one worker on a core of its own), N workers = clips/s / N; "
                                    "decoding: share of that CPU time spent reading the clips"))
    lines.append("")
    if payload.get("recomputed_from"):
        lines.append(f"workers table recomputed from the measurements in {payload['recomputed_from']}")
    lines.append(f"GPU speeds: {payload['gpu_device']}")
    if any(r["gpu_source"] == DEFAULT_GPU_SOURCE for r in payload["workers"]):
        lines.append(PLACEHOLDER_NOTE)
    rows = [[f"VideoMamba-{SHORT[r['model']]}", f"{r['frames']}x224", r["reader"], r["short_side"],
             f"{r['gpu_clips_per_s']:.3g}", f"{r['per_worker_clips_per_s']:.2f}", r["workers_needed"],
             "ok" if r["ok"] else "MISSED", r["gpu_source"]] for r in payload["workers"]]
    lines.append(format_table(["model", "clip", "reader", "short side", "GPU clips/s", "clips/s per worker",
                               "workers per GPU", f"<= {TARGET_WORKERS}", "GPU speed from"], rows,
                              title="workers per GPU = ceil(GPU training clips/s / one worker's clips/s)"))
    lines.append("")
    lines.append("TARGET (issue 21): enough clips/s with <= 8 workers per GPU for VideoMamba-Ti at 8x224")
    for t in payload["target"]:
        lines.append(f"  {'ok    ' if t['ok'] else 'MISSED'}  {t['reader']}, short side {t['short_side']}: "
                     f"{t['workers_needed']} workers ({t['gpu_clips_per_s']:.3g} GPU clips/s / "
                     f"{t['per_worker_clips_per_s']:.2f} per worker)")
    return "\n".join(lines) + "\n"


def _plot(plt, results):
    base = [r for r in results if r["workers"] == min(x["workers"] for x in results)]
    groups = list(dict.fromkeys((r["reader"], r["short_side"]) for r in base))   # in the order measured
    series = sorted({(r["frames"], r["recipe"]) for r in base})
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(groups) * max(len(series), 1) / 2), 4))
    width = 0.8 / max(len(series), 1)
    for j, (frames, rec) in enumerate(series):
        ys = []
        for g in groups:
            hit = [r for r in base if (r["reader"], r["short_side"], r["frames"], r["recipe"]) == (*g, frames, rec)]
            ys.append(hit[0]["per_worker_clips_per_s"] if hit else 0)
        ax.bar([i + (j - (len(series) - 1) / 2) * width for i in range(len(groups))], ys, width,
               label=f"{frames}x224, {rec}")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([f"{rd}\nshort side {s}" for rd, s in groups])
    ax.set_ylabel("clips/s per worker (per CPU-second)")
    ax.set_title("video_sm training loader, one worker (decode + sampling + train augmentation + collate)",
                 fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


def _finish(payload: dict, out_dir: str, name: str = "loader") -> dict:
    payload["target"] = [r for r in payload["workers"] if (r["model"], r["frames"]) == TARGET]
    text = _report(payload)
    print(text, end="")
    out = Path(out_dir)
    write_json(out / f"{name}.json", payload)
    (out / f"{name}.txt").write_text(text)
    png = try_plot(out / f"{name}.png", lambda plt: _plot(plt, payload["results"]))
    print(f"wrote {out / (name + '.json')}, {out / (name + '.txt')}" + (f", {png}" if png else ""))
    return payload


def _expand(results: list[dict]) -> list[dict]:
    """Every model gets the measurement of its group (models whose recipes load the same way)."""
    return [dict(r, model=m) for r in results for m in r.get("models", [r["model"]])]


def run(gpu_speed: str | None = None, videos_dir: str | None = None, readers=("pyav", "decord"), frames=(8, 16),
        short_sides=(320, 256), workers=(0, 2), models=MODELS, num_videos: int = 8, seconds: float = 10,
        fps: int = 30, batch: int = 4, repeats: int = 5, out_dir: str = "bench_results", measured: str | None = None,
        name: str = "loader") -> dict:
    speeds, sources, device = load_gpu_speed(gpu_speed)
    if measured:   # recompute the table for other GPU speeds
        payload = json.loads(Path(measured).read_text())
        payload["workers"] = workers_table(_expand(payload["results"]), speeds, sources,
                                           payload["settings"]["models"], payload["settings"]["frames"])
        payload["gpu_device"], payload["recomputed_from"] = device, str(measured)
        return _finish(payload, out_dir, name)
    repo_root()
    videos_dir = videos_dir or os.path.join(tempfile.gettempdir(), "videomamba_bench_loader")
    print(f"test videos in {videos_dir} (generated once)")
    vids = make_videos(videos_dir, short_sides, num_videos, seconds, fps)
    # one measurement per distinct loader recipe: models that load the same way share it
    groups: dict[tuple[int, str], list[str]] = {}
    for f in frames:
        for m in models:
            groups.setdefault((f, loader_signature(recipe(m, f))), []).append(m)
    results = []
    print(machine_line())
    with tempfile.TemporaryDirectory(prefix="vm_bench_loader_") as tmp:
        for (f, _sig), members in groups.items():
            label = "+".join(SHORT[m] for m in members)
            for reader in readers:
                for short in short_sides:
                    paths = [v["path"] for v in vids[short]]
                    for w in workers:
                        if w > (os.cpu_count() or 1):
                            print(f"  skip {w} workers: {os.cpu_count()} cores")
                            continue
                        r = measure(members[0], f, paths, reader, w, batch, repeats, Path(tmp))
                        r.update(recipe=f"{label} ({r['auto_augment']})", models=members, short_side=short)
                        print(f"  {reader} {short}p {f}x{r['size']} {label} workers={w}: {r['clips_per_s']:.2f} "
                              f"clips/s ({r['per_worker_clips_per_s']:.2f} per worker)", flush=True)
                        results.append(r)
    payload = dict(machine=machine_line(), gpu_device=device,
                   settings=dict(batch_videos=batch, repeats=repeats, readers=list(readers), frames=list(frames),
                                 short_sides=list(short_sides), workers=list(workers), models=list(models),
                                 num_videos=num_videos, seconds=seconds, fps=fps),
                   videos={str(k): v for k, v in vids.items()}, results=results,
                   workers=workers_table(_expand(results), speeds, sources, models, frames),
                   default_gpu_speed={f"{m} {f}": v for (m, f), v in DEFAULT_GPU_SPEED.items()})
    return _finish(payload, out_dir, name)
