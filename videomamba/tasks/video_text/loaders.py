"""The video-text loaders: one training loader per media type, alternating per step (:class:`AlternatingLoader`),
and the retrieval test loader of a corpus (its items split across ranks)."""
from __future__ import annotations

import torch

from ...data.errors import DataError
from ...data.video_text import RetrievalCorpus, TextCollate, collate_indexed
from ...engine.samplers import EpochShuffleSampler, ShardSampler
from .alternating_loader import AlternatingLoader


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
