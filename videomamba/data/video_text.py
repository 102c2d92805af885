"""Video-text and image-text data (UMT/VINDLU formats, docs/design.md §4).

An annotation file is a JSON list of ``{"video" | "image": relpath, "caption": str | [str, ...]}``; the path is
joined to a ``prefix``. Training (:class:`CaptionedMediaDataset`) yields one item per (media, caption) pair with
the media's index as ``idx`` (the VTC positives); evaluation (:class:`RetrievalCorpus`) keeps the media once,
all its captions as separate texts (``txt2vid``), or joined into one paragraph (DiDeMo, ActivityNet).

Frames: ``rand`` (training) or ``middle`` (evaluation) of T equal intervals
(:func:`videomamba.data.sampling.interval_indices`), optionally only within the first ``trim_seconds``
(DiDeMo's ``trimmed30``). Media come out as normalised float ``(3, T, H, W)``; an image is a clip of one frame.
Captions are cleaned with the official :func:`~videomamba.data.text.clean_caption`.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .decode import VideoDecodeError, open_video
from .errors import DataError
from .sampling import interval_indices
from .text import clean_caption
from .video_transforms import IMAGENET_MEAN, IMAGENET_STD, _normalise, _to_video

_log = logging.getLogger(__name__)
MEDIA = ("video", "image")


@dataclass
class MediaRecord:
    path: str
    media: str                      # "video" | "image"
    captions: list[str] = field(default_factory=list)
    index: int = 0                  # position in the annotation file (for error messages)
    group: str | None = None        # entries of one group describe the same content (optional "group" key)


def read_caption_annotations(file: str | Path, prefix: str = "", media: str | None = None,
                             paragraph: bool = False, limit: int | None = None) -> list[MediaRecord]:
    """Records of a JSON annotation file. ``media`` forces the type (the corpus config's third element; the
    VINDLU retrieval files list videos under ``"image"``); otherwise the entry's key decides. ``paragraph``
    joins a list of captions into one text. An optional ``"group"`` (string or number) marks entries whose
    captions describe the same content: in training they share ``idx``, so VTC counts them as positives of
    each other and VTM never draws one as another's negative (a corpus made from caption templates needs this;
    web corpora have no such key). Bad entries raise :class:`DataError` naming the file and index."""
    file = Path(file)
    if not file.is_file():
        raise DataError(f"{file}: annotation file not found")
    try:
        entries = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{file}:{err.lineno}: not valid JSON ({err.msg})") from None
    if not isinstance(entries, list):
        raise DataError(f"{file}: expected a JSON list of {{\"video\"|\"image\": path, \"caption\": ...}} entries, "
                        f"got a {type(entries).__name__}")
    if media is not None and media not in MEDIA:
        raise ValueError(f"media must be one of {MEDIA}, got {media!r}")
    records = []
    for i, e in enumerate(entries[:limit] if limit else entries):
        where = f"{file}: entry {i}"
        if not isinstance(e, dict):
            raise DataError(f"{where}: expected an object, got {type(e).__name__}")
        key = next((k for k in MEDIA if k in e), None)
        if key is None:
            raise DataError(f"{where}: has no \"video\" or \"image\" path (keys: {sorted(e)})")
        cap = e.get("caption")
        caps = [cap] if isinstance(cap, str) else cap
        if not isinstance(caps, list) or not caps or not all(isinstance(c, str) for c in caps):
            raise DataError(f"{where}: \"caption\" must be a non-empty string or list of strings, got {cap!r}")
        caps = [" ".join(caps)] if paragraph else caps
        caps = [clean_caption(c) for c in caps]
        if any(not c for c in caps):
            raise DataError(f"{where}: a caption is empty after cleaning ({cap!r})")
        group = e.get("group")
        if group is not None and (isinstance(group, bool) or not isinstance(group, (str, int, float))):
            raise DataError(f"{where}: \"group\" must be a string or a number, got {group!r}")
        path = str(Path(prefix) / e[key]) if prefix else str(e[key])
        records.append(MediaRecord(path, media or key, caps, i, None if group is None else str(group)))
    if not records:
        raise DataError(f"{file}: no entries")
    return records


# ------------------------------------------------------------------------------------------ transforms
class MediaTrainTransform:
    """``RandomResizedCrop(size, scale, bicubic)`` + horizontal flip + normalise (official ``random_aug=False``),
    one draw for all frames of a clip (torchvision v2 on a ``(T, C, H, W)`` video)."""

    def __init__(self, size: int, scale=(0.5, 1.0), hflip: float = 0.5, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        from torchvision.transforms import InterpolationMode, v2

        ops = [v2.RandomResizedCrop(size, scale=tuple(scale), interpolation=InterpolationMode.BICUBIC, antialias=True)]
        if hflip > 0:
            ops.append(v2.RandomHorizontalFlip(hflip))
        self.transform = v2.Compose(ops)
        self.mean, self.std = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        return _normalise(self.transform(_to_video(frames)).as_subclass(torch.Tensor), self.mean, self.std)


class MediaTestTransform:
    """``Resize((size, size), bicubic)`` + normalise (the official test transform: no crop)."""

    def __init__(self, size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.size = size
        self.mean, self.std = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as TF

        x = _to_video(frames).as_subclass(torch.Tensor)
        if tuple(x.shape[-2:]) != (self.size, self.size):
            x = TF.resize(x, [self.size, self.size], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
        return _normalise(x, self.mean, self.std)


# ------------------------------------------------------------------------------------------ reading
def read_media(record: MediaRecord, num_frames: int, sample: str, backend: str | None = None,
               trim_seconds: float | None = None, rng: np.random.Generator | None = None) -> np.ndarray:
    """uint8 ``(T, H, W, 3)`` frames of a video (``T = num_frames``) or ``(1, H, W, 3)`` of an image."""
    if record.media == "image":
        from PIL import Image

        try:
            with Image.open(record.path) as im:
                return np.array(im.convert("RGB"))[None]   # a writable copy
        except FileNotFoundError:
            raise VideoDecodeError(f"{record.path}: image not found") from None
        except OSError as err:
            raise VideoDecodeError(f"{record.path}: cannot read the image ({err})") from None
    with open_video(record.path, backend) as reader:
        n = len(reader)
        if n == 0:
            raise VideoDecodeError(f"{record.path}: no decodable frames")
        if trim_seconds:
            n = max(1, min(n, int(trim_seconds * reader.fps)))
        return reader.get_frames(interval_indices(n, num_frames, sample, rng))


class CaptionedMediaDataset(torch.utils.data.Dataset):
    """Training pairs of one media type: item ``i`` -> ``(media (3, T, H, W), caption, idx)``; ``idx`` is the
    media's index (or its group's, when the annotation groups entries) plus ``idx_offset`` (unique across the
    corpora of a loader, so two corpora's items are never taken for positives of each other; ``num_ids`` ids
    are used). An unreadable file is replaced by another item (deterministic stride) and counted in
    ``failures``; 100 in a row raise :class:`DataError`."""

    def __init__(self, records: list[MediaRecord], num_frames: int, transform, sample: str = "rand",
                 backend: str | None = None, source: str = "", idx_offset: int = 0, expand_captions: bool = True):
        self.records, self.num_frames, self.transform = records, num_frames, transform
        self.sample, self.backend, self.source, self.idx_offset = sample, backend, source, idx_offset
        # expand_captions: one item per (media, caption) pair (the official retrieval-training sets); else one
        # item per media with one of its captions drawn at random each time (an epoch = one pass over the media)
        self.expand_captions = expand_captions
        self.pairs = ([(r, c) for r, rec in enumerate(records) for c in range(len(rec.captions))] if expand_captions
                      else [(r, None) for r in range(len(records))])
        self.media = records[0].media if records else "video"
        ids: dict[tuple, int] = {}   # a record without a group is its own
        keys = [("group", rec.group) if rec.group is not None else ("entry", r) for r, rec in enumerate(records)]
        self.ids = [ids.setdefault(key, len(ids)) for key in keys]
        self.num_ids = len(ids)
        self.failures = multiprocessing.Value("i", 0)
        self._warned: set[str] = set()

    def __len__(self) -> int:
        return len(self.pairs)

    @staticmethod
    def _rng() -> np.random.Generator:   # from torch's generator: seeded per rank / worker, restored on resume
        return np.random.default_rng(int(torch.randint(0, 2 ** 62, (1,)).item()))

    def __getitem__(self, i: int):
        n = len(self.pairs)
        for attempt in range(min(n, 100)):
            r, c = self.pairs[(i + attempt * 7919) % n]
            rec = self.records[r]
            try:
                frames = read_media(rec, self.num_frames, self.sample, self.backend, rng=self._rng())
            except VideoDecodeError as err:
                with self.failures.get_lock():
                    self.failures.value += 1
                if rec.path not in self._warned:
                    self._warned.add(rec.path)
                    _log.warning("unreadable %s (%s entry %d): %s", rec.media, self.source, rec.index, err)
                continue
            if c is None:
                c = int(torch.randint(len(rec.captions), (1,)).item())
            return self.transform(frames), rec.captions[c], self.ids[r] + self.idx_offset
        raise DataError(f"{self.source}: 100 files in a row could not be read; is the prefix right? "
                        f"(first tried: {self.records[self.pairs[i][0]].path})")


class ConcatCaptioned(torch.utils.data.ConcatDataset):
    """The corpora of one media type as one data set (one loader per media type, as officially)."""

    @property
    def failures_count(self) -> int:
        return sum(d.failures.value for d in self.datasets)


class TextCollate:
    """``[(media, caption, idx)]`` -> ``({"media", "input_ids", "attention_mask"}, idx)``: captions tokenized
    (padded to ``max_len``, truncated) in the loader workers."""

    def __init__(self, tokenizer, max_len: int):
        self.tokenizer, self.max_len = tokenizer, max_len

    def __call__(self, batch):
        media, captions, idx = zip(*batch)
        tok = self.tokenizer(list(captions), padding="max_length", truncation=True, max_length=self.max_len,
                             return_tensors="pt")
        x = {"media": torch.stack(media), "input_ids": tok["input_ids"], "attention_mask": tok["attention_mask"]}
        return x, torch.tensor(idx, dtype=torch.long)


# ------------------------------------------------------------------------------------------ evaluation
class RetrievalCorpus(torch.utils.data.Dataset):
    """A retrieval test set: item ``i`` -> ``(media (3, T, H, W), i)`` for each video (or image), and
    ``texts`` / ``txt2vid`` (the video of each text; several texts per video for multi-caption sets).
    Unreadable media raise (a retrieval metric over a silently shortened set would not be comparable)."""

    def __init__(self, records: list[MediaRecord], num_frames: int, transform, backend: str | None = None,
                 trim_seconds: float | None = None, source: str = ""):
        self.records, self.num_frames, self.transform = records, num_frames, transform
        self.backend, self.trim_seconds, self.source = backend, trim_seconds, source
        self.texts = [c for rec in records for c in rec.captions]
        self.txt2vid = [v for v, rec in enumerate(records) for _ in rec.captions]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        rec = self.records[i]
        try:
            frames = read_media(rec, self.num_frames, "middle", self.backend, self.trim_seconds)
        except VideoDecodeError as err:
            raise DataError(f"{self.source}: entry {rec.index}: {err}") from None
        return self.transform(frames), i


def collate_indexed(batch):
    media, idx = zip(*batch)
    return torch.stack(media), torch.tensor(idx, dtype=torch.long)


__all__ = ["MediaRecord", "read_caption_annotations", "read_media", "MediaTrainTransform", "MediaTestTransform",
           "CaptionedMediaDataset", "ConcatCaptioned", "TextCollate", "RetrievalCorpus", "collate_indexed", "MEDIA"]
