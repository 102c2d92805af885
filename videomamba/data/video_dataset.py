"""Video classification / regression data: annotation files, clips and views, bad-video handling.

Annotation files (the official formats): one video per line, ``path<sep>label`` (Kinetics: ``,``; SSv2:
`` ``) or ``path<sep>label<sep>duration_seconds`` (LVU, Breakfast, COIN), ``prefix`` joined before the
path. Every line is checked when the file is read; errors name the file and line.

A video that is missing, corrupt or has no frames never stops a run: it is logged with its path and
counted. In training another video replaces it (the next one in a fixed order, so resumed runs repeat
the same replacements); in evaluation its views are returned as skipped and reported.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import sampling
from .decode import VideoDecodeError, open_video
from .defaults import NUM_SAMPLE, SAMPLING_RATE, TIME_STRIDE, TRIMMED
from .errors import DataError

_log = logging.getLogger("videomamba")

SAMPLERS = sampling.SAMPLERS + ("lvu",)


@dataclass(frozen=True)
class VideoRecord:
    path: str
    label: float          # an int class index, or a float target for regression
    line: int             # line number in the annotation file, for error messages
    duration: float | None = None


def read_video_annotations(file: str | os.PathLike, prefix: str = "", delimiter: str = ",",
                           num_classes: int | None = None, regression: bool = False,
                           need_duration: bool = False) -> list[VideoRecord]:
    """Parse an annotation file; see the module doc. ``delimiter=" "`` splits on any whitespace.

    Raises :class:`DataError` naming ``file:line`` for a missing column, a label that is not an integer
    (or a number, for ``regression``), a label outside ``[0, num_classes)``, a bad duration, or a file
    without a single sample.
    """
    file = Path(file)
    if not file.is_file():
        raise DataError(f"annotation file not found: {file}")
    records = []
    want = "path,label,duration" if need_duration else "path,label"
    for lineno, line in enumerate(file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split() if delimiter in (" ", None) else [p.strip() for p in line.split(delimiter)]
        if len(parts) < (3 if need_duration else 2) or not parts[0]:
            raise DataError(f"{file}:{lineno}: expected {len(want.split(','))} columns ({want}) separated by "
                            f"{delimiter!r}, got {line!r}")
        try:
            label = float(parts[1]) if regression else int(parts[1])
        except ValueError:
            kind = "a number" if regression else "an integer class index"
            raise DataError(f"{file}:{lineno}: label {parts[1]!r} is not {kind}") from None
        if not regression and (label < 0 or (num_classes is not None and label >= num_classes)):
            raise DataError(f"{file}:{lineno}: label {label} out of range [0, {num_classes})")
        duration = None
        if len(parts) >= 3:
            try:
                duration = float(parts[2])
            except ValueError:
                if need_duration:
                    raise DataError(f"{file}:{lineno}: duration {parts[2]!r} is not a number of seconds") from None
            if need_duration and not duration > 0:
                raise DataError(f"{file}:{lineno}: duration must be > 0 seconds, got {parts[2]!r}")
        path = parts[0] if not prefix else os.path.join(prefix, parts[0])
        records.append(VideoRecord(path, label, lineno, duration))
    if not records:
        raise DataError(f"{file}: no samples (empty annotation file)")
    return records


def report_missing(records: list[VideoRecord], source: str, limit: int = 5) -> int:
    """Warn about listed videos that do not exist (they are skipped or replaced when read); returns the count."""
    missing = [r for r in records if not os.path.isfile(r.path)]
    if missing:
        shown = ", ".join(f"{source}:{r.line} {r.path}" for r in missing[:limit])
        _log.warning("%d of %d videos listed in %s do not exist (they will be skipped or replaced): %s%s",
                     len(missing), len(records), source, shown, " ..." if len(missing) > limit else "")
    return len(missing)


@dataclass(frozen=True)
class Clip:
    """One training/evaluation unit: a whole video, or one LVU window of it."""
    video: int            # index of the video in the annotation file (the merge key)
    window: int           # window number within the video (0 without windows)
    start_s: float | None = None
    end_s: float | None = None


class VideoClipDataset(torch.utils.data.Dataset):
    """Clips of ``num_frames`` frames from annotated videos.

    ``mode="train"``: item ``i`` is ``(x, label)`` with ``x`` of shape ``(num_sample, 3, T, H, W)``:
    ``num_sample`` independent augmentations of one sampled clip (the official repeated augmentation;
    :func:`collate_train` flattens them into the batch).
    ``mode="eval"``: one item per ``(clip, temporal view, spatial crop)``, a dict with ``x``, ``label``
    and ``key = (video, temporal view id, crop)``; a video that cannot be read gives ``x=None`` and its
    ``error``. ``num_views=1, num_crops=1`` is the validation protocol (centre crop).

    ``sampler``: 'sparse' (Kinetics_sparse), 'ssv2', 'dense' (with ``sampling_rate``) or 'lvu' (sliding
    windows of ``trimmed`` seconds every ``time_stride`` seconds, sparse inside each window).
    """

    def __init__(self, records: list[VideoRecord], mode: str, num_frames: int, transform: Callable,
                 sampler: str = "sparse", sampling_rate: int = SAMPLING_RATE, num_sample: int = NUM_SAMPLE,
                 num_views: int = 1, num_crops: int = 1, trimmed: float = TRIMMED, time_stride: float = TIME_STRIDE,
                 backend: str | None = None, source: str = "", time_control: str | None = None):
        if mode not in ("train", "eval"):
            raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        if time_control not in (None, "shuffle", "repeat"):
            raise ValueError(f"time_control must be null, 'shuffle' or 'repeat', got {time_control!r}")
        self.records, self.mode, self.num_frames, self.transform = records, mode, num_frames, transform
        self.sampler, self.sampling_rate, self.num_sample = sampler, sampling_rate, num_sample
        self.num_views, self.num_crops, self.backend, self.source = num_views, num_crops, backend, source
        self.time_control = time_control
        self.clips = self._make_clips(trimmed, time_stride)
        self.failures = multiprocessing.Value("i", 0)   # shared with loader workers (counted, not lost)
        self._warned: set[str] = set()

    def _make_clips(self, trimmed: float, time_stride: float) -> list[Clip]:
        if self.sampler != "lvu":
            return [Clip(v, 0) for v in range(len(self.records))]
        clips = []
        for v, r in enumerate(self.records):
            if r.duration is None:
                raise DataError(f"{self.source}:{r.line}: the 'lvu' sampler needs a duration column (path,label,seconds)")
            clips += [Clip(v, w, s, e) for w, (s, e) in enumerate(sampling.lvu_windows(r.duration, trimmed, time_stride))]
        return clips

    def __len__(self) -> int:
        n = len(self.clips)
        return n if self.mode == "train" else n * self.num_views * self.num_crops

    # ------------------------------------------------------------------ sampling and reading
    def frame_indices(self, clip: Clip, video_len: int, fps: float, view: int | None,
                      rng: np.random.Generator | None) -> list[int]:
        T, K = self.num_frames, self.num_views if view is not None else 1
        if self.sampler == "lvu":
            return sampling.window_indices(video_len, fps, clip.start_s, clip.end_s, T, view, K, rng)
        return sampling.clip_indices(self.sampler, video_len, T, view, K, rng, self.sampling_rate)

    def read_clip(self, clip: Clip, view: int | None, rng: np.random.Generator | None) -> np.ndarray:
        """uint8 ``(T, H, W, 3)`` frames of one clip; raises :class:`VideoDecodeError` naming the file."""
        path = self.records[clip.video].path
        with open_video(path, self.backend) as reader:
            n = len(reader)
            if n == 0:
                raise VideoDecodeError(f"{path}: no decodable frames")
            frames = reader.get_frames(self.frame_indices(clip, n, reader.fps, view, rng))
        if self.time_control == "shuffle":    # the time-agnostic control: same frames, order destroyed
            frames = frames[(rng or np.random.default_rng()).permutation(len(frames))]
        elif self.time_control == "repeat":   # one frame repeated: no motion at all
            frames = np.repeat(frames[len(frames) // 2][None], len(frames), axis=0)
        return frames

    def _note_failure(self, clip: Clip, err: Exception):
        with self.failures.get_lock():
            self.failures.value += 1
        r = self.records[clip.video]
        if r.path not in self._warned:   # once per file and process; the count keeps every occurrence
            self._warned.add(r.path)
            where = f" (listed in {self.source}:{r.line})" if self.source else ""
            _log.warning("unreadable video%s: %s", where, err)

    @staticmethod
    def _item_rng() -> np.random.Generator:
        # Drawn from torch's generator, which the engine seeds per rank and restores on resume (and
        # DataLoader seeds per worker), so the frame draws are reproducible too.
        return np.random.default_rng(int(torch.randint(0, 2 ** 62, (1,)).item()))

    def __getitem__(self, i: int):
        if self.mode == "train":
            return self._train_item(i)
        return self._eval_item(i)

    def _train_item(self, i: int):
        n = len(self.clips)
        for attempt in range(min(n, 100)):
            # A bad video is replaced by the next one in a fixed stride (deterministic: resumes repeat it).
            clip = self.clips[(i + attempt * 7919) % n]
            rng = self._item_rng()
            try:
                frames = self.read_clip(clip, None, rng)
            except VideoDecodeError as err:
                self._note_failure(clip, err)
                continue
            x = torch.stack([self.transform(frames) for _ in range(self.num_sample)])
            return x, self.records[clip.video].label
        raise DataError(f"{self.source}: 100 videos in a row could not be read; is the data path right? "
                        f"(first tried: {self.records[self.clips[i].video].path})")

    def view_of(self, i: int) -> tuple[Clip, int, int]:
        """Item ``i`` of an eval set -> (clip, temporal view, crop); the clip varies fastest, as officially."""
        n = len(self.clips)
        clip, rest = self.clips[i % n], i // n
        return clip, rest // self.num_crops, rest % self.num_crops

    def _eval_item(self, i: int) -> dict:
        clip, view, crop = self.view_of(i)
        # Windows of one video are distinct views of it: they must survive the merge's de-duplication.
        key = (clip.video, clip.window * self.num_views + view, crop)
        label = self.records[clip.video].label
        try:
            frames = self.read_clip(clip, view, np.random.default_rng(i))
        except VideoDecodeError as err:
            self._note_failure(clip, err)
            return {"x": None, "label": label, "key": key, "error": str(err)}
        crop_index = None if self.num_views * self.num_crops == 1 else crop
        return {"x": self.transform(frames, crop_index), "label": label, "key": key, "error": None}


def collate_train(batch):
    """``[(x (S,3,T,H,W), label)]`` -> ``x (B*S,3,T,H,W)``, labels repeated per copy (the copies of one
    video stay next to each other, as the official ``multiple_samples_collate``)."""
    xs, labels = zip(*batch)
    x = torch.cat(xs)
    reps = xs[0].shape[0]
    y = torch.tensor(labels).repeat_interleave(reps)
    return x, y


def collate_eval(batch):
    """Eval items -> ``(x, labels, keys (N, 3) long, skipped [(key, error)])``; unreadable views are left out."""
    ok = [b for b in batch if b["x"] is not None]
    skipped = [(b["key"], b["error"]) for b in batch if b["x"] is None]
    x = torch.stack([b["x"] for b in ok]) if ok else torch.empty(0)
    labels = torch.tensor([b["label"] for b in ok])
    keys = torch.tensor([b["key"] for b in ok], dtype=torch.long).reshape(-1, 3)
    return x, labels, keys, skipped
