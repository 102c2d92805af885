"""The video_mm data from a config: training corpora grouped by media type (one loader each, alternating per
step) and the retrieval test sets. Config keys: see ``configs/video_mm/_base_pretrain.yaml`` (``data.*``)."""
from __future__ import annotations

import torch

from videomamba.data.errors import DataError
from videomamba.data.video_text import RetrievalCorpus, TextCollate, collate_indexed
from videomamba.data.video_text_corpora import expand, moving_digits_captions, test_sets, train_sets
from videomamba.tasks.video_text import AlternatingLoader
from videomamba.engine.samplers import EpochShuffleSampler, ShardSampler


def moving_digits_paths(d):
    """Point the ``moving_digits`` corpora of the embedded default at the generated caption files (the
    preparation of the ``moving_digits`` video-text source, :mod:`videomamba.data.video_text_corpora`)."""
    moving_digits_captions(d)


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


def test_loader(cfg, info, corpus: RetrievalCorpus):
    d = cfg.data
    return torch.utils.data.DataLoader(corpus, batch_size=d.get("eval_batch_size") or d.batch_size,
                                       sampler=ShardSampler(len(corpus), info.rank, info.world_size),
                                       collate_fn=collate_indexed, num_workers=d.get("num_workers", 0),
                                       pin_memory=bool(d.get("pin_memory", False)))


__all__ = ["expand", "moving_digits_paths", "train_sets", "train_loader", "test_sets", "test_loader"]
