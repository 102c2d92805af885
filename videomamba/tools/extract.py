"""Feature extraction: videos -> one safetensors file of features per video, plus an index of what was written.

    videomamba extract videos/ --checkpoint k400_tiny/ --out feats/ --features cls pooled --window 4s --stride 2s
    torchrun --nproc_per_node=4 -m videomamba.cli extract videos/ --checkpoint ... --out feats/   # split the list

Each video is cut into windows (``--window``/``--stride`` in frames, or seconds with an ``s`` suffix; without
``--window`` the whole video is one window). From a window ``[start, end)`` the model's ``T`` frames are
taken by sparse sampling (the centre of each of ``T`` equal segments: the validation sampler,
:func:`~videomamba.data.sampling.sparse_indices`), resized and centre-cropped as in validation, and run
through the backbone. Windows start every ``stride`` frames; when they do not reach the end of the video a
last window is aligned with its end, so every frame is covered and every window has the same length; a
video shorter than a window is one window over all of it.

Feature kinds, all from the final normalised tokens ``(1 + T'·N, D)`` (CLS first, ``T' = T / tubelet``):
``cls`` ``(D,)`` the CLS token (the head's input), ``pooled`` ``(D,)`` the mean of the patch tokens,
``frames`` ``(T', D)`` the mean per frame, ``tokens`` ``(1 + T'·N, D)`` every token, ``logits``
``(classes,)`` the head's output. The file holds one tensor per kind with a leading window axis, plus
``window_start_frame``/``window_end_frame`` (int64, end exclusive), ``window_start_sec``/``window_end_sec``
(float64, frame / average fps) and ``frame_indices`` ``(W, T)``; its metadata says video, checkpoint, fps,
frame count and settings.

Outputs mirror the inputs: ``OUT/<path relative to the input folder>.safetensors`` (``a.mp4`` ->
``a.mp4.safetensors``, so ``a.mp4`` and ``a.avi`` never collide). ``OUT/index.csv`` and ``OUT/index.json``
list every video with its status (``ok``/``failed``), output, window count, frames, fps, duration and, for a
failure, the reason. A rerun skips videos whose file exists (written atomically, so a file is whole) unless
the video changed since (size, mtime), and retries failures; a rerun with other settings, or with videos
outside the folder the first run's files mirror, stops with an error rather than mixing features or layouts
(``--overwrite`` re-extracts). Under torchrun/Slurm, rank ``r`` of ``N`` takes videos ``r, r+N, ...`` of
the sorted list; each rank leaves a marker when done and rank 0 merges the index (no collective at the end,
so ranks may finish hours apart).
"""
from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from ..utils.checkpoint_io import atomic_write
from ..data.decode import VIDEO_SUFFIXES, VideoDecodeError, find_videos, open_video
from ..data.sampling import sparse_indices
from ..data.video_transforms import VideoEvalTransform

__all__ = ["FEATURES", "ExtractError", "ExtractSettings", "parse_span", "window_bounds", "window_frames",
           "collect_videos", "output_path", "extract", "read_features", "read_index"]

FEATURES = ("cls", "pooled", "frames", "tokens", "logits")
INDEX_CSV, INDEX_JSON, SETTINGS_JSON = "index.csv", "index.json", "extract.json"
INDEX_FIELDS = ("video", "status", "output", "windows", "frames", "fps", "duration_s", "rank", "seconds", "error")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
AMP = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}   # autocast of the forward pass


class ExtractError(ValueError):
    """Bad options or inputs (not a bad video: those are listed in the index as failed), in one line."""


# ---------------------------------------------------------------------------- windows
def parse_span(text: str | int | float | None, what: str = "window") -> tuple[float, str] | None:
    """``"64"`` -> ``(64, "frames")``; ``"2.5s"`` -> ``(2.5, "s")``; None -> None."""
    if text is None:
        return None
    s = str(text).strip().lower()
    unit = "frames"
    if s.endswith("s"):
        s, unit = s[:-1], "s"
    try:
        v = float(s)
    except ValueError:
        raise ExtractError(f"--{what} {text!r}: expected a frame count (64) or seconds (2.5s)") from None
    if not (v > 0 and math.isfinite(v)) or (unit == "frames" and v != int(v)):
        raise ExtractError(f"--{what} {text!r}: must be a positive {'whole number of frames' if unit == 'frames' else 'duration'}")
    return v, unit


def _to_frames(span: tuple[float, str], fps: float, what: str, video: str) -> int:
    v, unit = span
    if unit == "frames":
        return int(v)
    if fps <= 0:
        raise VideoDecodeError(f"{video}: no frame rate in the file, so a --{what} in seconds cannot be used")
    return max(1, int(round(v * fps)))


def window_bounds(num_frames: int, window: int | None, stride: int | None = None) -> list[tuple[int, int]]:
    """Windows ``[(start, end), ...]`` (end exclusive) over ``num_frames`` frames: ``window`` frames every
    ``stride`` (default ``window``: no overlap); a last window aligned with the end when the stride does not
    land there; a single ``(0, num_frames)`` for ``window=None`` or a video no longer than a window."""
    if num_frames < 1:
        raise ValueError("a video without frames has no windows")
    if window is None or num_frames <= window:
        return [(0, num_frames)]
    stride = stride or window
    starts = list(range(0, num_frames - window + 1, stride))
    if starts[-1] + window < num_frames:
        starts.append(num_frames - window)
    return [(s, s + window) for s in starts]


def window_frames(start: int, end: int, num_frames: int) -> list[int]:
    """The ``num_frames`` frames the model sees of window ``[start, end)``: sparse validation sampling."""
    return [start + i for i in sparse_indices(end - start, num_frames, 0, 1)]


# ---------------------------------------------------------------------------- inputs and outputs
def collect_videos(inputs: Sequence[str | os.PathLike], list_file: str | os.PathLike | None = None
                   ) -> tuple[list[Path], Path]:
    """The sorted, de-duplicated videos of ``inputs`` (files, or folders searched recursively for video
    suffixes) and of ``list_file`` (one path per line, relative to the list's folder, ``#`` comment lines; or a
    ``.csv`` whose first column is the path), with
    the folder outputs are laid out relative to (the input folder, else the videos' common parent)."""
    videos: list[Path] = []
    roots: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = find_videos(p)
            if not found:
                raise ExtractError(f"{p}: no video files in the folder ({', '.join(VIDEO_SUFFIXES)})")
            videos += found
            roots.append(p)
        elif p.exists() or p.suffix.lower() in VIDEO_SUFFIXES:
            videos.append(p)   # a missing video file is listed as failed, not a reason to stop
            roots.append(p.parent)
        else:
            raise ExtractError(f"{p}: no such file or folder")
    if list_file is not None:
        lf = Path(list_file)
        try:
            lines = lf.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise ExtractError(f"{lf}: cannot read the list ({err})") from None
        if lf.suffix.lower() == ".csv":   # a csv (quoting honoured): the first column; a header row is skipped
            entries = [row[0].strip() for row in csv.reader(lines) if row and row[0].strip()]
            if entries and not Path(entries[0]).suffix:
                entries = entries[1:]
        else:   # one path per line, taken whole ('#' starts a comment line only: names may hold '#' or ',')
            entries = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        for entry in entries:
            q = Path(entry)
            q = q if q.is_absolute() else lf.parent / q
            videos.append(q)
            roots.append(q.parent)
    if not videos:
        raise ExtractError("no videos given")
    # absolute paths, symlinks kept: two links to one file are two videos (each gets its own output)
    videos = sorted({_absolute(v) for v in videos})
    root = Path(os.path.commonpath([_absolute(r) for r in roots])) if roots else Path.cwd()
    return videos, root


def _absolute(p: Path) -> Path:
    return Path(os.path.normpath(os.path.abspath(p)))


def output_path(out_dir: Path, video: Path, root: Path) -> Path:
    """``out_dir/<video relative to root>.safetensors`` (a video outside ``root``: by its name alone)."""
    try:
        rel = _absolute(video).relative_to(_absolute(root))
    except ValueError:
        rel = Path(video.name)
    return out_dir / rel.parent / (rel.name + ".safetensors")


# ---------------------------------------------------------------------------- settings
@dataclass
class ExtractSettings:
    features: tuple[str, ...] = ("cls",)
    window: tuple[float, str] | None = None
    stride: tuple[float, str] | None = None
    dtype: str = "float32"
    batch_size: int = 16
    amp: str = "none"

    def check(self, num_classes: int) -> None:
        bad = [f for f in self.features if f not in FEATURES]
        if bad or not self.features:
            raise ExtractError(f"--features {' '.join(bad) or '(none)'}: choose from {', '.join(FEATURES)}")
        if "logits" in self.features and not num_classes:
            raise ExtractError("--features logits: the model has no classification head")
        if self.stride is not None and self.window is None:
            raise ExtractError("--stride needs --window")
        if self.dtype not in DTYPES:
            raise ExtractError(f"--dtype {self.dtype!r}: choose from {', '.join(DTYPES)}")
        if self.batch_size < 1:
            raise ExtractError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.amp not in AMP:
            raise ExtractError(f"--amp {self.amp!r}: choose from {', '.join(AMP)}")

    def describe_span(self, span) -> str | None:
        return None if span is None else (f"{span[0]:g}s" if span[1] == "s" else f"{int(span[0])}")


def _fingerprint(settings: ExtractSettings, checkpoint: str, pre) -> dict[str, Any]:
    """What the features depend on: a rerun with any of it changed must not skip old files."""
    ck = Path(checkpoint)
    stat = ck / "model.safetensors" if ck.is_dir() else ck
    return {"checkpoint": str(ck.resolve()),
            "checkpoint_size": stat.stat().st_size if stat.exists() else None,
            "checkpoint_mtime_ns": stat.stat().st_mtime_ns if stat.exists() else None,
            "features": list(settings.features), "window": settings.describe_span(settings.window),
            "stride": settings.describe_span(settings.stride), "dtype": settings.dtype, "amp": settings.amp,
            "num_frames": pre.num_frames, "input_size": pre.input_size, "short_side_size": pre.short_side_size,
            "mean": list(pre.mean), "std": list(pre.std)}


# settings added after the first release: an older extract.json without them had these values
SETTING_DEFAULTS = {"amp": "none"}


def _same_setting(key: str, old: Any, new: Any) -> bool:
    """Whether an earlier run's setting equals this run's: the feature kinds as a set (``cls pooled`` and
    ``pooled cls`` write the same tensors), everything else as it is."""
    if key == "features" and isinstance(old, list) and isinstance(new, list):
        return set(old) == set(new)
    return old == new


def _previous_run(out_dir: Path, fingerprint: dict, videos: list[Path], root: Path,
                  overwrite: bool) -> tuple[str | None, Path]:
    """``(problem, root)``: why ``out_dir`` cannot take this run (other settings, or videos outside the folder
    its files mirror), or None; and the root to lay outputs out by (an earlier run's, so that adding a video
    never moves the files already written)."""
    path = out_dir / SETTINGS_JSON
    if overwrite or not path.is_file():
        return None, root
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        old = None
    if not isinstance(old, dict):
        old = {}
    changed = sorted(k for k in fingerprint
                     if not _same_setting(k, old.get(k, SETTING_DEFAULTS.get(k)), fingerprint[k]))
    if changed:
        return (f"{out_dir}: written with other settings (changed: {', '.join(changed)}); "
                "use another --out, or --overwrite to extract everything again"), root
    if old.get("root"):
        old_root = Path(old["root"])
        outside = [v for v in videos if not _absolute(v).is_relative_to(old_root)]
        if outside:
            return (f"{out_dir}: its files mirror {old_root}, and {outside[0]}"
                    + (f" (and {len(outside) - 1} more)" if len(outside) > 1 else "")
                    + " is outside it; use another --out, or --overwrite to lay the folder out again"), root
        root = old_root
    return None, root


# ---------------------------------------------------------------------------- decoding (in workers)
class _VideoWindows(torch.utils.data.Dataset):
    """Item ``i``: video ``i`` decoded into its windows' frames, resized and cropped (uint8), or the reason
    it could not be read. Runs in DataLoader workers so decoding overlaps the model."""

    def __init__(self, videos: list[Path], settings: ExtractSettings, num_frames: int, transform: VideoEvalTransform,
                 backend: str | None):
        self.videos, self.settings, self.num_frames = videos, settings, num_frames
        self.transform, self.backend = transform, backend

    def __len__(self):
        return len(self.videos)

    def __getitem__(self, i: int) -> dict[str, Any]:
        path = str(self.videos[i])
        item: dict[str, Any] = {"index": i, "video": path, "stamp": _video_stamp(path)}
        t0 = time.perf_counter()
        try:
            with open_video(path, self.backend) as reader:
                n, fps = len(reader), float(reader.fps or 0.0)
                if n == 0:
                    raise VideoDecodeError(f"{path}: the video has no decodable frames")
                window = _to_frames(self.settings.window, fps, "window", path) if self.settings.window else None
                stride = _to_frames(self.settings.stride, fps, "stride", path) if self.settings.stride else None
                bounds = window_bounds(n, window, stride)
                per_window = [window_frames(s, e, self.num_frames) for s, e in bounds]
                wanted = sorted({f for idx in per_window for f in idx})
                frames = reader.get_frames(wanted)   # every needed frame once, in one pass
        except VideoDecodeError as err:
            item["error"] = str(err)
            return item
        except ImportError as err:
            raise ExtractError(str(err)) from None
        row = {f: r for r, f in enumerate(wanted)}
        item.update(frames=self.transform.crop(frames), rows=torch.tensor([[row[f] for f in idx] for idx in per_window]),
                    bounds=torch.tensor(bounds, dtype=torch.int64), indices=torch.tensor(per_window, dtype=torch.int64),
                    num_video_frames=n, fps=fps, decode_s=time.perf_counter() - t0)
        return item


# ---------------------------------------------------------------------------- features
def features_from_tokens(model, tokens: torch.Tensor, kinds: Iterable[str]) -> dict[str, torch.Tensor]:
    """The requested kinds from final normalised tokens ``(B, 1 + T'N, D)`` (see the module doc)."""
    out = {}
    patches = tokens[:, 1:]
    for kind in kinds:
        if kind == "cls":
            out[kind] = tokens[:, 0]
        elif kind == "pooled":
            out[kind] = patches.mean(1)
        elif kind == "frames":
            t = max(1, patches.shape[1] // model.patch_embed.num_patches)
            out[kind] = patches.reshape(patches.shape[0], t, -1, patches.shape[-1]).mean(2)
        elif kind == "tokens":
            out[kind] = tokens
        elif kind == "logits":
            out[kind] = model.forward_head(tokens)
    return out


@dataclass
class _Pending:
    """A decoded video whose windows are (partly) through the model."""

    item: dict[str, Any]
    output: Path
    parts: list[dict[str, torch.Tensor]] = field(default_factory=list)
    done: int = 0

    @property
    def windows(self) -> int:
        return len(self.item["bounds"])


def _write_features(p: _Pending, meta: dict[str, Any], dtype: torch.dtype) -> None:
    from safetensors.torch import save_file

    item = p.item
    keys = p.parts[0].keys()
    tensors = {k: torch.cat([part[k] for part in p.parts]).to(dtype).contiguous() for k in keys}
    bounds = item["bounds"]
    fps = item["fps"]
    tensors["window_start_frame"] = bounds[:, 0].contiguous()
    tensors["window_end_frame"] = bounds[:, 1].contiguous()
    to_sec = (lambda f: f.double() / fps) if fps > 0 else (lambda f: torch.full(f.shape, float("nan"), dtype=torch.float64))
    tensors["window_start_sec"] = to_sec(bounds[:, 0]).contiguous()
    tensors["window_end_sec"] = to_sec(bounds[:, 1]).contiguous()
    tensors["frame_indices"] = item["indices"]
    header = {**{k: json.dumps(v) if not isinstance(v, str) else v for k, v in meta.items()},
              "video": item["video"], "fps": json.dumps(fps), "num_video_frames": json.dumps(item["num_video_frames"]),
              "video_stamp": json.dumps(item["stamp"])}
    p.output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(p.output, lambda tmp: save_file(tensors, tmp, metadata=header))


def read_features(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(tensors, metadata)`` of a features file (metadata JSON values decoded)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        raw = f.metadata() or {}
    meta = {}
    for k, v in raw.items():
        try:
            meta[k] = json.loads(v)
        except json.JSONDecodeError:
            meta[k] = v
    return tensors, meta


def _video_stamp(path: str | os.PathLike) -> list[int] | None:
    """``[size, mtime_ns]`` of a video: a rerun extracts a video again when it changed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _row_from_file(video: Path, output: Path, out_dir: Path, rank: int) -> dict[str, Any] | None:
    """The index row of a file an earlier run wrote; None (extract again) if it cannot be read or the video
    changed since."""
    from safetensors import safe_open

    try:
        with safe_open(str(output), "pt") as f:
            meta = f.metadata() or {}
            windows = f.get_slice("window_start_frame").get_shape()[0]
        fps, n = json.loads(meta["fps"]), json.loads(meta["num_video_frames"])
        if json.loads(meta["video_stamp"]) != _video_stamp(video):
            return None
    except Exception:   # noqa: BLE001 - any unreadable file is simply extracted again
        return None
    return {"video": str(video), "status": "ok", "output": str(output.relative_to(out_dir)), "windows": windows,
            "frames": n, "fps": round(fps, 4), "duration_s": round(n / fps, 3) if fps else None, "rank": rank,
            "seconds": 0.0, "error": ""}


# ---------------------------------------------------------------------------- index
def _shard(out_dir: Path, rank: int) -> Path:
    return out_dir / f".index.rank{rank}.jsonl"


def _merge_index(out_dir: Path) -> list[dict[str, Any]]:
    """Earlier index + this run's shards -> ``index.json``/``index.csv`` (the latest row per video)."""
    rows: dict[str, dict] = {}
    old = out_dir / INDEX_JSON
    if old.is_file():
        try:
            for r in json.loads(old.read_text()).get("videos", []):
                rows[r["video"]] = r
        except (OSError, json.JSONDecodeError, AttributeError, KeyError, TypeError):
            pass   # a damaged index is rebuilt from this run's rows
    shards = sorted(out_dir.glob(".index.rank*.jsonl"))
    for shard in shards:
        for line in shard.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                rows[r["video"]] = r
    ordered = [rows[k] for k in sorted(rows)]
    summary = {"ok": sum(r["status"] == "ok" for r in ordered), "failed": sum(r["status"] == "failed" for r in ordered)}
    doc = json.dumps({"summary": summary, "videos": ordered}, indent=1) + "\n"
    atomic_write(out_dir / INDEX_JSON, lambda tmp: Path(tmp).write_text(doc))

    def write_csv(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=INDEX_FIELDS, extrasaction="ignore")
            w.writeheader()
            w.writerows(ordered)

    atomic_write(out_dir / INDEX_CSV, write_csv)
    for shard in shards:
        shard.unlink()
    return ordered


def read_index(out_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of ``OUT/index.json``."""
    return json.loads((Path(out_dir) / INDEX_JSON).read_text())["videos"]


# ---------------------------------------------------------------------------- the run
class _Progress:
    """A tqdm bar (videos, videos/s) on a terminal; otherwise a line every ``every`` videos and at the end."""

    def __init__(self, total: int, enabled: bool, every: int, log):
        from tqdm import tqdm

        self.total, self.every, self.log, self.count, self.failed = total, every, log, 0, 0
        self.t0 = time.perf_counter()
        self.enabled = enabled
        self.bar = tqdm(total=total, unit="video", desc="extract", dynamic_ncols=True) \
            if enabled and sys.stderr.isatty() else None

    def update(self, failed: bool = False) -> None:
        self.count += 1
        self.failed += failed
        if self.bar is not None:
            self.bar.update(1)
            if failed:
                self.bar.set_postfix(failed=self.failed)
        elif self.enabled and (self.count % self.every == 0 or self.count == self.total):
            rate = self.count / max(time.perf_counter() - self.t0, 1e-9)
            self.log(f"extract: {self.count}/{self.total} videos, {rate:.2f} videos/s, {self.failed} failed")

    def close(self):
        if self.bar is not None:
            self.bar.close()


def default_workers(device: torch.device) -> int:
    """Decoding processes when not given: 2 beside a GPU or on a CPU with more than 4 cores; none on a small
    CPU, where they would only take cores from the model (measured: 0.83x videos/s with 2 on 2 cores)."""
    return 2 if device.type == "cuda" or (os.cpu_count() or 1) > 4 else 0


def extract(inputs: Sequence[str | os.PathLike], checkpoint: str | os.PathLike, out_dir: str | os.PathLike,
            features: Sequence[str] = ("cls",), window: str | int | None = None, stride: str | int | None = None,
            list_file: str | os.PathLike | None = None, batch_size: int = 16, workers: int | None = None,
            dtype: str = "float32", amp: str = "none", device: str | torch.device | None = None,
            backend: str | None = None, compile: str | bool | None = None,
            overwrite: bool = False, progress: bool = True, log_every: int = 50, log=print) -> dict[str, Any]:
    """Extract features of every video of ``inputs`` into ``out_dir`` (see the module doc); returns a
    summary: counts (``ok``, ``failed``, ``skipped``, ``windows``) and timings (``seconds``,
    ``videos_per_s``, ``windows_per_s``, ``model_s``, ``wait_s``: time the model waited for decoding).
    Under torchrun/Slurm each rank extracts its share and the summary is rank 0's plus the merged index.
    ``workers``: decoding processes (default :func:`default_workers`); ``amp``: ``"bf16"``/``"fp16"`` runs the
    forward pass under autocast (the scan keeps fp32 math), ``dtype`` is the dtype the features are saved in;
    ``compile``: a :data:`videomamba.predict.COMPILE_MODES` entry (True: "default") runs the backbone under
    ``torch.compile`` (features equal to eager up to float rounding, so reruns with or without it share files;
    "reduce-overhead" replays CUDA graphs on a GPU)."""
    from ..utils import dist as vdist
    from .model_source import load_model
    from .predict import COMPILE_MODES, compile_forward

    compile = "default" if compile is True else (compile or None)
    if compile is not None and compile not in COMPILE_MODES:
        raise ExtractError(f"--compile {compile!r}: choose from {', '.join(COMPILE_MODES)}")
    settings = ExtractSettings(tuple(features), parse_span(window, "window"), parse_span(stride, "stride"),
                               dtype, int(batch_size), amp)
    if device is not None and torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ExtractError(f"--device {device}: no CUDA device here (torch {torch.__version__})")
    info = vdist.init_distributed(str(device) if device is not None else None)
    dev = torch.device(device) if device is not None else info.device
    loaded = load_model(checkpoint, device=dev)
    model, pre = loaded.model, loaded.preprocessing
    if pre.num_frames is None:
        raise ExtractError(f"{checkpoint}: an image model; extract reads videos with a video model")
    settings.check(loaded.num_classes)
    videos, root = collect_videos(inputs, list_file)
    out_dir = Path(out_dir)
    fingerprint = _fingerprint(settings, os.fspath(checkpoint), pre)
    problem, root = _previous_run(out_dir, fingerprint, videos, root, overwrite)   # every rank stops, none waits
    vdist.barrier()
    if problem:
        raise ExtractError(problem)
    if info.rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        text = json.dumps({**fingerprint, "root": str(root)}, indent=2) + "\n"
        atomic_write(out_dir / SETTINGS_JSON, lambda tmp: Path(tmp).write_text(text))
        # an interrupted run's rows and markers (its files are reused)
        for stale in [*out_dir.glob(".index.rank*.jsonl"), *out_dir.glob(".done.rank*")]:
            stale.unlink()
    vdist.barrier()
    reuse = not overwrite
    mine = videos[info.rank::info.world_size]
    outputs = {v: output_path(out_dir, v, root) for v in mine}
    shard = open(_shard(out_dir, info.rank), "a")

    def record(row: dict[str, Any]) -> None:
        shard.write(json.dumps(row) + "\n")
        shard.flush()

    todo, skipped = [], 0
    for v in mine:
        row = _row_from_file(v, outputs[v], out_dir, info.rank) if reuse and outputs[v].is_file() else None
        if row is None:
            todo.append(v)
        else:
            record(row)
            skipped += 1
    meta = {"checkpoint": os.fspath(checkpoint), "architecture": loaded.architecture,
            "num_frames": pre.num_frames, "input_size": pre.input_size, "features": list(settings.features),
            "window": settings.describe_span(settings.window), "stride": settings.describe_span(settings.stride),
            "sampling": "sparse (segment centres) within each window; centre crop", "producer": "videomamba extract"}
    if info.rank == 0:
        log(f"extract: {len(videos)} videos ({skipped} done before, {len(todo)} to do"
            + (f" on this rank of {info.world_size}" if info.world_size > 1 else "")
            + f"); {loaded.architecture} {pre.num_frames}x{pre.input_size}px on {dev}; features "
            f"{', '.join(settings.features)}; window {meta['window'] or 'whole video'}"
            + (f", stride {meta['stride']}" if meta["stride"] else "")
            + (f"; compiled ({compile})" if compile else "") + f" -> {out_dir}")

    workers = default_workers(dev) if workers is None else int(workers)
    transform = VideoEvalTransform(pre.input_size, pre.short_side_size, 1, pre.mean, pre.std)
    dataset = _VideoWindows(todo, settings, pre.num_frames, transform, backend)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers,
                                         prefetch_factor=2 if workers else None, persistent_workers=False)
    bar = _Progress(len(todo), progress and info.rank == 0, log_every, log)
    out_dtype = DTYPES[settings.dtype]
    backbone = compile_forward(model.forward_features, compile)   # the head (logits) stays eager: one Linear
    stats = {"ok": 0, "failed": 0, "windows": 0, "model_s": 0.0, "wait_s": 0.0}
    clips: list[torch.Tensor] = []
    owners: list[_Pending] = []
    started: dict[int, float] = {}

    def finish(p: _Pending) -> None:
        _write_features(p, meta, out_dtype)
        it = p.item
        record({"video": it["video"], "status": "ok", "output": str(p.output.relative_to(out_dir)),
                "windows": p.windows, "frames": it["num_video_frames"], "fps": round(it["fps"], 4),
                "duration_s": round(it["num_video_frames"] / it["fps"], 3) if it["fps"] else None,
                "rank": info.rank, "seconds": round(time.perf_counter() - started[it["index"]], 3), "error": ""})
        stats["ok"] += 1
        stats["windows"] += p.windows
        bar.update()

    @torch.inference_mode()
    def run_batch() -> None:
        if not clips:
            return
        t0 = time.perf_counter()
        x = torch.stack(clips).to(dev, non_blocking=True)
        with torch.autocast(dev.type, dtype=AMP[settings.amp] or torch.float32, enabled=settings.amp != "none"):
            feats = features_from_tokens(model, backbone(x), settings.features)
        feats = {k: v.float().cpu() for k, v in feats.items()}
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        stats["model_s"] += time.perf_counter() - t0
        # windows of one video are consecutive in the batch: hand each video its slice
        start = 0
        while start < len(owners):
            p = owners[start]
            end = start
            while end < len(owners) and owners[end] is p:
                end += 1
            p.parts.append({k: v[start:end] for k, v in feats.items()})
            p.done += end - start
            if p.done == p.windows:
                finish(p)
            start = end
        clips.clear()
        owners.clear()

    t_run = time.perf_counter()
    t_wait = time.perf_counter()
    try:
        for item in loader:
            stats["wait_s"] += time.perf_counter() - t_wait
            started[item["index"]] = time.perf_counter() - item.get("decode_s", 0.0)
            video = todo[item["index"]]
            if "error" in item:
                record({"video": str(video), "status": "failed", "output": "", "windows": 0, "frames": None,
                        "fps": None, "duration_s": None, "rank": info.rank, "seconds": 0.0, "error": item["error"]})
                stats["failed"] += 1
                if bar.bar is None and bar.enabled:
                    log(f"extract: failed: {item['error']}")
                bar.update(failed=True)
                t_wait = time.perf_counter()
                continue
            p = _Pending(item, outputs[video])
            for w in range(p.windows):
                clips.append(transform.normalise(item["frames"][item["rows"][w]]))
                owners.append(p)
                if len(clips) == settings.batch_size:
                    run_batch()
            t_wait = time.perf_counter()
        run_batch()
    finally:
        shard.close()
        bar.close()
    stats["seconds"] = time.perf_counter() - t_run
    stats["skipped"] = skipped
    # Done: a marker file, not a collective. Ranks finish far apart on long lists (a barrier would time
    # out after the process group's 30 min); rank 0 waits for every marker, then merges the index.
    (out_dir / f".done.rank{info.rank}").touch()
    rows = None
    if info.rank == 0:
        markers = [out_dir / f".done.rank{r}" for r in range(info.world_size)]
        while not all(m.exists() for m in markers):
            time.sleep(0.5)
        rows = _merge_index(out_dir)
        for m in markers:
            m.unlink()
    done = stats["ok"] + stats["failed"]
    stats["videos_per_s"] = done / stats["seconds"] if stats["seconds"] > 0 else 0.0
    stats["windows_per_s"] = stats["windows"] / stats["seconds"] if stats["seconds"] > 0 else 0.0
    if info.rank == 0:
        total_ok = sum(r["status"] == "ok" for r in rows)
        total_failed = sum(r["status"] == "failed" for r in rows)
        log(f"extract: {stats['ok']} extracted, {skipped} skipped (done before), {stats['failed']} failed on rank 0 "
            f"in {stats['seconds']:.1f}s ({stats['videos_per_s']:.2f} videos/s, {stats['windows_per_s']:.2f} windows/s); "
            f"index: {total_ok} ok, {total_failed} failed -> {out_dir / INDEX_CSV}")
        stats["index"] = rows
    return stats
