"""The video_mm data from a config: training corpora grouped by media type (one loader each, alternating per
step) and the retrieval test sets. Config keys: see ``configs/video_mm/_base_pretrain.yaml`` (``data.*``)."""
from __future__ import annotations


import torch

from videomamba.data.image_dataset import DataError
from videomamba.data.video_text import (MEDIA, CaptionedMediaDataset, ConcatCaptioned, MediaTestTransform,
                                        MediaTrainTransform, RetrievalCorpus, TextCollate, collate_indexed,
                                        read_caption_annotations)
from videomamba.engine.multi_loader import AlternatingLoader
from videomamba.engine.samplers import EpochShuffleSampler, ShardSampler


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


def moving_digits_paths(d):
    """Point the ``moving_digits`` corpora of the embedded default at the generated caption files."""
    from videomamba.data.moving_digits import make_video_text_variant
    from videomamba.engine.dist import main_process_first

    with main_process_first():
        anno = make_video_text_variant(d.get("root"))
    d.anno_root, d.media_root = str(anno), str(anno.parent)


def train_sets(cfg) -> dict[str, ConcatCaptioned]:
    """media type -> the concatenated training corpora of that type (``idx`` unique across them)."""
    d = cfg.data
    if not d.train:
        raise ValueError("data.train lists no corpus (name: {anno, prefix, media})")
    by_media: dict[str, list] = {}
    offset = 0
    for name, c in d.train.items():
        media = c.get("media", "video")
        if media not in MEDIA:
            raise ValueError(f"data.train.{name}.media must be one of {MEDIA}, got {media!r}")
        anno = expand(c.get("anno"), d)
        records = read_caption_annotations(anno, expand(c.get("prefix"), d), media, limit=c.get("limit") or d.get("limit"))
        size = d.input_size
        ds = CaptionedMediaDataset(records, d.num_frames if media == "video" else 1,
                                   MediaTrainTransform(size, tuple(d.scale), d.get("hflip", 0.5)),
                                   d.get("sample_train", "rand"), d.get("backend"), source=anno, idx_offset=offset,
                                   expand_captions=bool(c.get("expand_captions", True)))
        offset += len(records)
        by_media.setdefault(media, []).append(ds)
    return {m: ConcatCaptioned(sets) for m, sets in by_media.items()}


def train_loader(cfg, info, sets: dict, tokenizer) -> AlternatingLoader:
    d = cfg.data
    collate = TextCollate(tokenizer, d.max_txt_len)
    loaders = {}
    for media, ds in sets.items():
        sampler = EpochShuffleSampler(len(ds), info.rank, info.world_size, cfg.seed)
        dl = torch.utils.data.DataLoader(ds, batch_size=d.batch_size, sampler=sampler, drop_last=True,
                                         collate_fn=collate, num_workers=d.get("num_workers", 0),
                                         pin_memory=bool(d.get("pin_memory", False)))
        if len(dl) == 0:
            raise DataError(f"the {media} corpora hold {len(ds)} pairs: fewer than one batch of {d.batch_size} "
                            f"per rank on {info.world_size} rank(s)")
        loaders[media] = dl
    return AlternatingLoader(loaders, cfg.seed)


def test_sets(cfg) -> dict[str, dict]:
    """name -> ``{"corpus": RetrievalCorpus, "max_len": int}`` of ``data.test``."""
    d = cfg.data
    out = {}
    for name, c in (d.get("test") or {}).items():
        anno = expand(c.get("anno"), d)
        media = c.get("media", "video")
        records = read_caption_annotations(anno, expand(c.get("prefix"), d), media,
                                           paragraph=bool(c.get("paragraph", False)), limit=c.get("limit"))
        corpus = RetrievalCorpus(records, d.num_frames if media == "video" else 1, MediaTestTransform(d.input_size),
                                 d.get("backend"), c.get("trim_seconds"), source=anno)
        out[name] = {"corpus": corpus, "max_len": int(c.get("max_txt_len") or d.max_txt_len)}
    return out


def test_loader(cfg, info, corpus: RetrievalCorpus):
    d = cfg.data
    return torch.utils.data.DataLoader(corpus, batch_size=d.get("eval_batch_size") or d.batch_size,
                                       sampler=ShardSampler(len(corpus), info.rank, info.world_size),
                                       collate_fn=collate_indexed, num_workers=d.get("num_workers", 0),
                                       pin_memory=bool(d.get("pin_memory", False)))


__all__ = ["expand", "moving_digits_paths", "train_sets", "train_loader", "test_sets", "test_loader"]
