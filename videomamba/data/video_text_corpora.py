"""Video-text data from a config (``video_mm``): the training corpora grouped by media type and the
retrieval test sets, each corpus a named annotation file (``data.train.<name>`` / ``data.test.<name>``:
``{anno, prefix, media, ...}``, ``{anno_root}`` / ``{media_root}`` expanded). Defaults:
:data:`videomamba.data.defaults.VIDEO_TEXT`; config keys: ``configs/video_mm/_base_pretrain.yaml``.

A config without ``data.name`` uses its corpora as they are (:class:`VideoTextSource`). Registered names
(task ``video_text``) prepare them first:

- ``moving_digits``: generates the embedded caption files on first use into ``data.root`` and points
  ``data.anno_root`` / ``data.media_root`` at them.
"""
from __future__ import annotations

from ..utils.dist import main_process_first
from .defaults import VIDEO_TEXT
from .registry import DataSource, data_source, register_dataset
from .video_text import (MEDIA, CaptionedMediaDataset, ConcatCaptioned, MediaTestTransform, MediaTrainTransform,
                         RetrievalCorpus, read_caption_annotations)

TASK = "video_text"


def expand(path: str | None, d) -> str:
    """``{anno_root}`` / ``{media_root}`` in a configured path -> ``data.anno_root`` / ``data.media_root``."""
    path = path or ""
    for key in ("anno_root", "media_root"):
        token = "{" + key + "}"
        if token in path:
            if not d.get(key):
                raise ValueError(f"{path!r} uses {token} but data.{key} is not set (pass --opts data.{key}=DIR)")
            path = path.replace(token, str(d[key]))
    return path


def moving_digits_captions(d):
    """Point ``data.anno_root`` / ``data.media_root`` at the Moving Digits caption files (generated on first
    use into ``data.root``: one rank writes them, the others wait)."""
    from . import moving_digits

    with main_process_first():
        anno = moving_digits.make_video_text_variant(d.get("root"))
    d.anno_root, d.media_root = str(anno), str(anno.parent)


def train_sets(cfg) -> dict[str, ConcatCaptioned]:
    """media type -> the concatenated training corpora of that type (``idx`` unique across them)."""
    d, D = cfg.data, VIDEO_TEXT
    if not d.train:
        raise ValueError("data.train lists no corpus (name: {anno, prefix, media})")
    by_media: dict[str, list] = {}
    offset = 0
    for name, c in d.train.items():
        media = c.get("media", D.media)
        if media not in MEDIA:
            raise ValueError(f"data.train.{name}.media must be one of {MEDIA}, got {media!r}")
        anno = expand(c.get("anno"), d)
        records = read_caption_annotations(anno, expand(c.get("prefix"), d), media,
                                           limit=c.get("limit") or d.get("limit"))
        size = d.input_size
        ds = CaptionedMediaDataset(records, d.num_frames if media == "video" else 1,
                                   MediaTrainTransform(size, tuple(d.scale), d.get("hflip", D.hflip)),
                                   d.get("sample_train", D.sample_train), d.get("backend"), source=anno,
                                   idx_offset=offset, expand_captions=bool(c.get("expand_captions", D.expand_captions)))
        offset += ds.num_ids
        by_media.setdefault(media, []).append(ds)
    return {m: ConcatCaptioned(sets) for m, sets in by_media.items()}


def test_sets(cfg) -> dict[str, dict]:
    """name -> ``{"corpus": RetrievalCorpus, "max_len": int}`` of ``data.test``."""
    d, D = cfg.data, VIDEO_TEXT
    out = {}
    for name, c in (d.get("test") or {}).items():
        anno = expand(c.get("anno"), d)
        media = c.get("media", D.media)
        records = read_caption_annotations(anno, expand(c.get("prefix"), d), media,
                                           paragraph=bool(c.get("paragraph", D.paragraph)), limit=c.get("limit"))
        corpus = RetrievalCorpus(records, d.num_frames if media == "video" else 1, MediaTestTransform(d.input_size),
                                 d.get("backend"), c.get("trim_seconds"), source=anno)
        out[name] = {"corpus": corpus, "max_len": int(c.get("max_txt_len") or d.max_txt_len)}
    return out


class VideoTextSource(DataSource):
    """The corpora as configured. ``build("train")``: :func:`train_sets`; ``build("test")``: :func:`test_sets`."""

    def build(self, split: str):
        if split == "train":
            return train_sets(self.cfg)
        if split == "test":
            return test_sets(self.cfg)
        raise ValueError(f"video-text data has the splits 'train' and 'test', got {split!r}")


@register_dataset(TASK, "moving_digits")
class MovingDigitsCaptions(VideoTextSource):
    """The embedded caption corpora (``configs/video_mm/_moving_digits.yaml``)."""

    def __init__(self, cfg):
        super().__init__(cfg)
        moving_digits_captions(cfg.data)


def video_text_source(cfg) -> VideoTextSource:
    """The source of ``cfg``: its ``data.name``'s (an unknown name is an error), or the corpora as configured
    when it names none."""
    return data_source(cfg, TASK) if cfg.data.get("name") else VideoTextSource(cfg)
