"""The video-text losses of UMT-style pretraining (docs/design.md §4), as functions of features and token ids
so they can be checked against direct computations: VTC (contrastive, over the batch gathered from every
rank with gradient), the hard-negative draw of VTM, and the token corruption of MLM. UTA (the unmasked
token alignment with the CLIP teacher) is :mod:`videomamba.objectives.alignment`, shared with video_sm.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..utils.dist import all_gather_with_grad


def similarity(vision: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Cosine similarities ``(Nv, Nt)`` of L2-normalised vision and text features; per-frame vision features
    ``(Nv, T, D)`` give the mean over frames of the per-frame similarities (the official ``get_sim``)."""
    vision, text = F.normalize(vision.float(), dim=-1), F.normalize(text.float(), dim=-1)
    if vision.dim() == 3:
        return torch.einsum("mtd,nd->mtn", vision, text).mean(dim=1)
    return vision @ text.t()


def vtc_loss(vision: torch.Tensor, text: torch.Tensor, idx: torch.Tensor, temp: torch.Tensor,
             gather: bool = True) -> torch.Tensor:
    """Video-text contrastive loss: ``(CE_v2t + CE_t2v) / 2`` over the batch of every rank (gathered with
    gradient, no queue), similarities divided by the learnable temperature, soft targets from ``idx``
    equality (a video and a caption with the same ``idx`` are positives; rows normalised)."""
    if gather:
        vision, text = all_gather_with_grad(vision), all_gather_with_grad(text)
        idx = all_gather_with_grad(idx.view(-1, 1).float()).view(-1).to(idx.dtype)
    sim_v2t = similarity(vision, text) / temp
    sim_t2v = sim_v2t.t()
    pos = (idx.view(-1, 1) == idx.view(1, -1)).float()
    targets = pos / pos.sum(dim=1, keepdim=True)
    loss_v2t = -(F.log_softmax(sim_v2t, dim=1) * targets).sum(dim=1).mean()
    loss_t2v = -(F.log_softmax(sim_t2v, dim=1) * targets).sum(dim=1).mean()
    return (loss_v2t + loss_t2v) / 2


@torch.no_grad()
def sample_hard_negatives(sim_v2t: torch.Tensor, idx: torch.Tensor, generator: torch.Generator | None = None):
    """For VTM on the local batch: for each video a negative caption and for each caption a negative video,
    drawn with probability ``softmax(sim + 1e-4)`` after zeroing the positives (same ``idx``); rows that
    end up without weight (NaN) get 1e-2 everywhere, as officially. Returns ``(neg_text_for_video,
    neg_video_for_text)`` index tensors."""
    pos = idx.view(-1, 1) == idx.view(1, -1)
    w_v2t = F.softmax(sim_v2t.float() + 1e-4, dim=1).masked_fill(pos, 0)
    w_t2v = F.softmax(sim_v2t.t().float() + 1e-4, dim=1).masked_fill(pos, 0)
    w_v2t = torch.nan_to_num(w_v2t, nan=1e-2)
    w_t2v = torch.nan_to_num(w_t2v, nan=1e-2)
    if (w_v2t.sum(1) == 0).any() or (w_t2v.sum(1) == 0).any():
        raise ValueError("VTM: a sample has no negative in the batch (every item shares its idx)")
    neg_text = torch.multinomial(w_v2t, 1, generator=generator).view(-1)
    neg_video = torch.multinomial(w_t2v, 1, generator=generator).view(-1)
    return neg_text, neg_video


@torch.no_grad()
def mlm_mask(input_ids: torch.Tensor, vocab_size: int, mask_token_id: int, pad_token_id: int, cls_token_id: int,
             prob: float = 0.5, generator: torch.Generator | None = None):
    """BERT-style corruption for MLM: each token other than padding and CLS is chosen with ``prob`` (0.5 in
    the official recipe); of the chosen, 80% become [MASK], 10% a random token, 10% stay. Returns
    ``(corrupted ids, labels)`` with labels -100 where nothing was chosen."""
    rand = lambda *s: torch.rand(*s, device=input_ids.device, generator=generator)   # noqa: E731
    chosen = (rand(input_ids.shape) < prob) & (input_ids != pad_token_id) & (input_ids != cls_token_id)
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    ids = input_ids.clone()
    to_mask = chosen & (rand(input_ids.shape) < 0.8)
    ids[to_mask] = mask_token_id
    to_random = chosen & ~to_mask & (rand(input_ids.shape) < 0.5)
    ids[to_random] = torch.randint(vocab_size, input_ids.shape, device=input_ids.device, generator=generator)[to_random]
    return ids, labels
