"""Zero-shot / fine-tuned text-video retrieval evaluation of a :class:`~videomamba.models.video_text.VideoMambaText`
(the official ``retrieval_utils.evaluation``, docs/design.md §4):

1. every video (split across ranks, gathered) -> per-frame joint-space features and its patch tokens;
   every text -> joint-space feature and hidden states (all texts on every rank, as officially);
2. ITC scores: per-frame cosine averaged over frames (temperature 1);
3. re-ranking: for each video (each rank takes every W-th), its ``k_test`` best texts by ITC go through the
   fusion encoder and get the raw ``itm_head`` "matched" logit; the same for each text and its best videos.

Two result sets: ``itm`` (re-ranked; model selection) and ``itc`` (embeddings only). Outside the top ``k``
the order is ITC's, below every re-ranked item (officially those entries are all -100, i.e. tied), so that
MdR and MnR are defined over the whole list. Every rank ends with the same numbers, equal to one rank's.
"""
from __future__ import annotations

import torch
from tqdm import tqdm

from ...objectives.contrastive import similarity
from ...utils.tensors import autocast
from ...utils.dist import all_gather_object, all_reduce_sum, get_rank, get_world_size, show_progress
from .metrics import retrieval_metrics
from ...utils.tensors import unwrap

OUTSIDE_TOP_K = 1.0e4   # subtracted from ITC scores outside the top k: below any ITM logit


@torch.no_grad()
def encode_corpus_vision(model, loader, device, amp: str = "none", progress: bool = True):
    """``(features (N, T|1, D), tokens (N, L, Dv))`` of every item of ``loader``'s data set, in data-set order,
    on every rank (each rank encodes its shard; the shards are gathered)."""
    own = []
    for media, idx in tqdm(loader, desc="videos", disable=not show_progress(progress), leave=False, dynamic_ncols=True):
        with autocast(device, amp):
            tokens, pooled, _ = model.encode_vision(media.to(device))
            feats = model.vision_proj(pooled)
        own.append((idx, feats.float().cpu(), tokens.cpu()))
    parts = [p for rank_parts in all_gather_object(own) for p in rank_parts]
    if not parts:
        raise ValueError("the retrieval corpus is empty")
    order = torch.cat([p[0] for p in parts]).argsort()
    feats = torch.cat([p[1] for p in parts])[order]
    tokens = torch.cat([p[2] for p in parts])[order]
    return feats, tokens


@torch.no_grad()
def encode_texts(model, tokenizer, texts: list[str], max_len: int, device, batch: int = 256, amp: str = "none"):
    """``(features (N, D), hidden (N, L, H), attention mask (N, L))`` of ``texts`` (padded to ``max_len``)."""
    feats, hidden, masks = [], [], []
    for s in range(0, len(texts), batch):
        tok = tokenizer(texts[s:s + batch], padding="max_length", truncation=True, max_length=max_len,
                        return_tensors="pt").to(device)
        with autocast(device, amp):
            h, cls = model.encode_text(tok["input_ids"], tok["attention_mask"])
            feats.append(model.text_proj(cls).float().cpu())
        hidden.append(h.cpu())
        masks.append(tok["attention_mask"].cpu())
    return torch.cat(feats), torch.cat(hidden), torch.cat(masks)


@torch.no_grad()
def rerank(model, itc: torch.Tensor, vision_tokens, text_hidden, text_mask, k: int, device, amp: str = "none",
           batch: int = 32, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``(v2t (V, T), t2v (T, V))`` ITM-re-ranked score matrices (see the module doc); rows are shared out
    across ranks and summed, so every rank returns the full matrices."""
    V, T = itc.shape
    rank, world = get_rank(), get_world_size()

    def scores(rows_tokens, rows_hidden, rows_mask):
        out = []
        for s in range(0, rows_tokens.shape[0], batch):
            with autocast(device, amp):
                out.append(model.itm_scores(rows_tokens[s:s + batch].to(device), rows_hidden[s:s + batch].to(device),
                                            rows_mask[s:s + batch].to(device)).float().cpu())
        return torch.cat(out)

    # float64: ITC scores shifted by OUTSIDE_TOP_K keep their exact order (float32 at 1e4 rounds them to ~1e-3)
    v2t, t2v = torch.zeros(V, T, dtype=torch.float64), torch.zeros(T, V, dtype=torch.float64)
    kv, kt = min(k, T), min(k, V)
    bar = tqdm(total=len(range(rank, V, world)) + len(range(rank, T, world)), desc="re-rank",
               disable=not show_progress(progress), leave=False, dynamic_ncols=True)
    for v in range(rank, V, world):
        top = itc[v].topk(kv).indices
        row = itc[v].double() - OUTSIDE_TOP_K
        row[top] = scores(vision_tokens[v:v + 1].expand(kv, -1, -1), text_hidden[top], text_mask[top]).double()
        v2t[v] = row
        bar.update(1)
    for t in range(rank, T, world):
        top = itc[:, t].topk(kt).indices
        row = itc[:, t].double() - OUTSIDE_TOP_K
        row[top] = scores(vision_tokens[top], text_hidden[t:t + 1].expand(kt, -1, -1),
                          text_mask[t:t + 1].expand(kt, -1)).double()
        t2v[t] = row
        bar.update(1)
    bar.close()
    return all_reduce_sum(v2t.to(device)).cpu(), all_reduce_sum(t2v.to(device)).cpu()


@torch.no_grad()
def evaluate_retrieval(model, loader, corpus, tokenizer, device, max_len: int, k_test: int = 128,
                       amp: str = "none", itm_batch: int = 32, text_batch: int = 256, rerank_itm: bool = True,
                       progress: bool = True) -> dict:
    """``{"itm": metrics, "itc": metrics, "n_videos", "n_texts"}`` for a :class:`RetrievalCorpus`;
    ``rerank_itm=False`` skips the fusion pass (``itm`` is then absent)."""
    model = unwrap(model)
    model.eval()
    vision_feats, vision_tokens = encode_corpus_vision(model, loader, device, amp, progress)
    text_feats, text_hidden, text_mask = encode_texts(model, tokenizer, corpus.texts, max_len, device, text_batch, amp)
    itc = similarity(vision_feats, text_feats)
    out = {"itc": retrieval_metrics(itc.numpy(), None, corpus.txt2vid),
           "n_videos": int(itc.shape[0]), "n_texts": int(itc.shape[1])}
    if rerank_itm:
        v2t, t2v = rerank(model, itc, vision_tokens, text_hidden, text_mask, k_test, device, amp, itm_batch, progress)
        out["itm"] = retrieval_metrics(v2t.numpy(), t2v.numpy(), corpus.txt2vid)
    return out


def summary_line(name: str, res: dict) -> str:
    """One line per result set: R@1/5/10 both ways, MdR, mean recall."""
    parts = []
    for kind in ("itm", "itc"):
        m = res.get(kind)
        if m is None:
            continue
        parts.append(f"{kind}: t2v R@1/5/10 {m['img_r1']:.1f}/{m['img_r5']:.1f}/{m['img_r10']:.1f} MdR {m['img_mdr']:g}, "
                     f"v2t {m['txt_r1']:.1f}/{m['txt_r5']:.1f}/{m['txt_r10']:.1f} MdR {m['txt_mdr']:g}, "
                     f"mean R {m['r_mean']:.2f}")
    return f"{name} ({res['n_videos']} videos, {res['n_texts']} texts) " + " | ".join(parts)


__all__ = ["evaluate_retrieval", "encode_corpus_vision", "encode_texts", "rerank", "summary_line", "OUTSIDE_TOP_K"]
