"""Text-to-video search over a folder with a trained video-text checkpoint (``videomamba search``).

The index (``DIR/index.pt``) holds, per video, the joint-space per-frame features of the checkpoint's vision
encoder (``middle`` frames, the eval protocol), with the file's size and modification time, plus the
checkpoint it was built with. It is built once; a later build over the same folder encodes only new or
changed files and drops removed ones, and a query needs nothing but the index (the checkpoint path is in it).
A query is ranked by ITC (the per-frame cosine averaged over frames); ``rerank=K`` re-scores the best K with the
fusion encoder's ITM logit (their frames are read again: patch tokens are too large to keep for a big folder).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.decode import VIDEO_SUFFIXES, find_videos  # noqa: F401  (VIDEO_SUFFIXES: its old home)
from ..utils.checkpoint_io import CheckpointError, atomic_write, read_checkpoint

INDEX_FILE = "index.pt"
INDEX_VERSION = 1


class SearchError(ValueError):
    """A bad index, folder or checkpoint for search; the message names it."""


@dataclass
class Hit:
    rank: int
    path: str
    score: float
    itc: float


def load_video_text(checkpoint: str | os.PathLike, device="cpu"):
    """``(model, tokenizer, meta)`` from a training checkpoint of ``video_mm`` (it holds the model's
    description in ``extra.video_text_model``)."""
    from ..checkpoint.video_text import load_video_text_checkpoint
    from ..data.text import load_tokenizer
    from ..models.video_text import video_text_from_meta

    obj = read_checkpoint(checkpoint)
    meta = (obj.get("extra") or {}).get("video_text_model") if isinstance(obj, dict) else None
    if meta is None:
        raise CheckpointError(checkpoint, "has no video-text model description (extra.video_text_model): search needs "
                              "a checkpoint written by video_mm.pretrain / video_mm.retrieval")
    model = video_text_from_meta(meta)
    load_video_text_checkpoint(model, obj, strict=False, log=lambda s: None)
    tokenizer = load_tokenizer(meta["text"].get("tokenizer"))
    return model.to(device).eval(), tokenizer, meta


def _stat(path: Path) -> list:
    st = path.stat()
    return [st.st_size, int(st.st_mtime_ns)]


def list_videos(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise SearchError(f"{folder}: not a folder of videos")
    return find_videos(folder)


def _clip_shape(meta: dict) -> tuple[int, int]:
    """Frames and size of the vision encoder a video-text checkpoint describes (its config's defaults where the
    saved kwargs are silent)."""
    from ..models.config import VideoTextVisionConfig

    kw, defaults = meta["vision"]["kwargs"], VideoTextVisionConfig()
    return int(kw.get("num_frames", defaults.num_frames)), int(kw.get("img_size", defaults.img_size))


@torch.no_grad()
def encode_videos(model, meta, paths: list[Path], batch: int = 16, device="cpu", progress: bool = True,
                  tokens: bool = False):
    """Per-frame joint-space features ``(N, T, D)`` (and patch tokens with ``tokens``) of ``paths``; an
    unreadable file raises :class:`SearchError` naming it."""
    from tqdm import tqdm

    from ..data.decode import VideoDecodeError
    from ..data.video_text import MediaRecord, MediaTestTransform, read_media
    from ..utils.dist import show_progress

    frames, size = _clip_shape(meta)
    transform = MediaTestTransform(size)
    feats, toks = [], []
    for s in tqdm(range(0, len(paths), batch), desc="videos", disable=not show_progress(progress), leave=False):
        clips = []
        for p in paths[s:s + batch]:
            try:
                clips.append(transform(read_media(MediaRecord(str(p), "video"), frames, "middle")))
            except VideoDecodeError as err:
                raise SearchError(f"cannot index {p}: {err}") from None
        t, pooled, _ = model.encode_vision(torch.stack(clips).to(device))
        f = model.vision_proj(pooled)
        feats.append(f.float().cpu())
        if tokens:
            toks.append(t.cpu())
    feats = torch.cat(feats) if feats else torch.empty(0)
    return (feats, torch.cat(toks)) if tokens else feats


def build_index(index_dir: str | os.PathLike, videos: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
                device="cpu", batch: int = 16, progress: bool = True, log=print) -> dict:
    """Create or update ``index_dir/index.pt`` for the videos under ``videos`` (recursively); ``checkpoint``
    None updates an existing index with the checkpoint it was built with."""
    index_dir, videos = Path(index_dir), Path(videos).resolve()
    paths = list_videos(videos)
    if not paths:
        raise SearchError(f"{videos}: no video files ({', '.join(VIDEO_SUFFIXES)})")
    old = _read_index(index_dir) if (index_dir / INDEX_FILE).is_file() else None
    if checkpoint is None:
        if old is None:
            raise SearchError(f"{index_dir}: no index to update; building one needs --checkpoint (a video_mm "
                              "training checkpoint)")
        checkpoint = old["checkpoint"]
    checkpoint = Path(checkpoint).resolve()
    ckpt_stat = _stat(checkpoint)
    reuse = {}
    if old is not None and old["checkpoint"] == str(checkpoint) and old["checkpoint_stat"] == ckpt_stat \
            and old["root"] == str(videos):
        reuse = {rel: (stat, old["features"][i]) for i, (rel, stat) in enumerate(zip(old["paths"], old["stats"]))}
    rels = [str(p.relative_to(videos)) for p in paths]
    stats = [_stat(p) for p in paths]
    todo = [i for i, (rel, st) in enumerate(zip(rels, stats)) if rel not in reuse or reuse[rel][0] != st]
    if old is not None and not todo and len(rels) == len(old["paths"]) and reuse:
        log(f"index {index_dir}: up to date ({len(rels)} videos)")
        return old
    model, _, meta = load_video_text(checkpoint, device)
    new = encode_videos(model, meta, [paths[i] for i in todo], batch, device, progress) if todo else None
    by_todo = {i: k for k, i in enumerate(todo)}
    features = torch.stack([new[by_todo[i]] if i in by_todo else reuse[rels[i]][1] for i in range(len(rels))])
    index = {"version": INDEX_VERSION, "root": str(videos), "paths": rels, "stats": stats, "features": features,
             "checkpoint": str(checkpoint), "checkpoint_stat": ckpt_stat, "video_text_model": meta}
    index_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(index_dir / INDEX_FILE, lambda tmp: torch.save(index, tmp))
    log(f"index {index_dir}: {len(rels)} videos ({len(todo)} encoded, {len(rels) - len(todo)} reused)")
    return index


def _read_index(index_dir: Path) -> dict:
    path = index_dir / INDEX_FILE
    if not path.is_file():
        raise SearchError(f"{index_dir}: no {INDEX_FILE}; build it first: videomamba search QUERY --index "
                          f"{index_dir} --videos FOLDER --checkpoint CKPT")
    try:
        index = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:   # a truncated or foreign file
        raise SearchError(f"{path}: not a search index ({type(err).__name__}: {err})") from None
    if not isinstance(index, dict) or index.get("version") != INDEX_VERSION:
        raise SearchError(f"{path}: not a version-{INDEX_VERSION} search index; rebuild it with --videos")
    return index


@torch.no_grad()
def search(query: str, index_dir: str | os.PathLike, top: int = 5, rerank: int = 0, device="cpu",
           model=None) -> list[Hit]:
    """The ``top`` videos of the index for ``query``: ITC order, or ITM over ITC's best ``rerank``."""
    from ..data.text import clean_caption
    from ..objectives.contrastive import similarity

    index = _read_index(Path(index_dir))
    tokenizer = None
    if model is None:
        model, tokenizer, _ = load_video_text(index["checkpoint"], device)
    else:
        from ..data.text import load_tokenizer

        tokenizer = load_tokenizer(index["video_text_model"]["text"].get("tokenizer"))
    text = clean_caption(query)
    if not text:
        raise SearchError(f"the query {query!r} is empty after cleaning")
    tok = tokenizer([text], truncation=True, max_length=64, return_tensors="pt").to(device)
    hidden, pooled = model.encode_text(tok["input_ids"], tok["attention_mask"])
    itc = similarity(index["features"], model.text_proj(pooled).float().cpu())[:, 0]
    order = itc.argsort(descending=True)
    scores = itc.clone()
    if rerank:
        best = order[:rerank]
        paths = [Path(index["root"]) / index["paths"][i] for i in best.tolist()]
        _, tokens = encode_videos(model, index["video_text_model"], paths, device=device, progress=False, tokens=True)
        itm = model.itm_scores(tokens.to(device), hidden.expand(len(paths), -1, -1),
                               tok["attention_mask"].expand(len(paths), -1)).float().cpu()
        sub = itm.argsort(descending=True)
        order = torch.cat([best[sub], order[rerank:]])
        scores[best] = itm
    return [Hit(r + 1, str(Path(index["root"]) / index["paths"][i]), float(scores[i]), float(itc[i]))
            for r, i in enumerate(order[:top].tolist())]


__all__ = ["build_index", "search", "encode_videos", "load_video_text", "list_videos", "Hit", "SearchError",
           "INDEX_FILE"]
