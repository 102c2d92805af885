"""Retrieval metrics for video-text (and any cross-modal) evaluation: recall at k in both directions,
their means, median and mean rank (design decision D10 adds MdR and MnR to the official R@1/5/10).

Conventions:

- ``v2t`` is a ``(V, T)`` score matrix (videos x texts; higher = better), ``t2v`` a ``(T, V)`` one; the two
  can differ (re-ranking scores each direction separately) or ``t2v = v2t.T``.
- A text has exactly one video (``txt2vid[t]``); a video may have several texts (multi-caption data sets).
  The rank of a query is the rank of its **best** ground-truth item, as the official ``itm_eval``.
- Ranks are 1-based and **ties count against the query**: the rank is 1 + the number of non-ground-truth
  items scoring at least as high as the best ground-truth item. A model that scores everything alike
  therefore gets the worst rank, not the best (``argsort`` would break ties arbitrarily).
- ``R@k`` is the percentage of queries with rank <= k. Keys follow the official names: ``txt_r*`` are
  video-to-text, ``img_r*`` text-to-video, plus ``*_r_mean`` and ``r_mean``; ``txt_mdr``/``txt_mnr`` and
  ``img_mdr``/``img_mnr`` are the median and mean ranks.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

KS = (1, 5, 10)


def query_ranks(scores: np.ndarray, positives: Sequence[Sequence[int]]) -> np.ndarray:
    """1-based rank of the best positive of each row of ``scores (Q, C)``; ties count against the query."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or len(positives) != scores.shape[0]:
        raise ValueError(f"scores must be (queries, candidates) with one positive list per query; got "
                         f"{scores.shape} and {len(positives)} lists")
    ranks = np.empty(scores.shape[0], dtype=np.int64)
    for q, pos in enumerate(positives):
        pos = np.asarray(pos, dtype=np.int64)
        if pos.size == 0:
            raise ValueError(f"query {q} has no ground-truth candidate")
        if pos.min() < 0 or pos.max() >= scores.shape[1]:
            raise ValueError(f"query {q}: ground-truth index out of range [0, {scores.shape[1]})")
        best = scores[q, pos].max()
        others = np.ones(scores.shape[1], dtype=bool)
        others[pos] = False
        ranks[q] = 1 + int((scores[q, others] >= best).sum())
    return ranks


def _summary(ranks: np.ndarray, prefix: str) -> dict:
    out = {f"{prefix}_r{k}": 100.0 * float((ranks <= k).mean()) for k in KS}
    out[f"{prefix}_r_mean"] = float(np.mean([out[f"{prefix}_r{k}"] for k in KS]))
    out[f"{prefix}_mdr"] = float(np.median(ranks))
    out[f"{prefix}_mnr"] = float(ranks.mean())
    return out


def retrieval_metrics(v2t: np.ndarray, t2v: np.ndarray | None, txt2vid: Sequence[int]) -> dict:
    """All metrics for a ``(V, T)`` video-to-text score matrix and a ``(T, V)`` text-to-video one
    (``None``: ``v2t.T``), with ``txt2vid[t]`` the video of text ``t``."""
    v2t = np.asarray(v2t, dtype=np.float64)
    t2v = v2t.T if t2v is None else np.asarray(t2v, dtype=np.float64)
    V, T = v2t.shape
    if t2v.shape != (T, V):
        raise ValueError(f"t2v must be (texts, videos) = ({T}, {V}), got {t2v.shape}")
    txt2vid = np.asarray(txt2vid, dtype=np.int64)
    if txt2vid.shape != (T,) or (T and (txt2vid.min() < 0 or txt2vid.max() >= V)):
        raise ValueError(f"txt2vid must give one video index in [0, {V}) for each of the {T} texts")
    vid2txt = [np.flatnonzero(txt2vid == v) for v in range(V)]
    empty = [v for v, t in enumerate(vid2txt) if t.size == 0]
    if empty:
        raise ValueError(f"videos without a caption: {empty[:5]}{' ...' if len(empty) > 5 else ''}")
    out = {**_summary(query_ranks(v2t, vid2txt), "txt"), **_summary(query_ranks(t2v, txt2vid[:, None]), "img")}
    out["r_mean"] = (out["txt_r_mean"] + out["img_r_mean"]) / 2
    return out
