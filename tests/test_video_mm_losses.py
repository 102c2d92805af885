"""VTC, the VTM hard-negative draw and MLM corruption on tiny inputs against direct computations."""
import math

import pytest
import torch

from videomamba.pretrain.contrastive import mlm_mask, sample_hard_negatives, similarity, vtc_loss


def test_similarity_per_frame_is_the_mean_of_frame_cosines():
    v, t = torch.randn(2, 3, 5), torch.randn(4, 5)
    s = similarity(v, t)
    for i in range(2):
        for j in range(4):
            want = sum(torch.cosine_similarity(v[i, f], t[j], dim=0) for f in range(3)) / 3
            assert s[i, j].item() == pytest.approx(want.item(), abs=1e-6)


def test_vtc_equals_a_direct_computation():
    torch.manual_seed(0)
    v, t = torch.randn(4, 6), torch.randn(4, 6)
    idx = torch.tensor([0, 1, 1, 2])    # items 1 and 2 share a video: both are positives of each other
    temp = torch.tensor(0.07)
    loss = vtc_loss(v, t, idx, temp)
    vn, tn = v / v.norm(dim=1, keepdim=True), t / t.norm(dim=1, keepdim=True)
    total = 0.0
    for sims in (vn @ tn.t() / 0.07, tn @ vn.t() / 0.07):
        for i in range(4):
            pos = [j for j in range(4) if idx[j] == idx[i]]
            logz = math.log(sum(math.exp(sims[i, j].item()) for j in range(4)))
            total += -sum(sims[i, j].item() - logz for j in pos) / len(pos) / 4
    assert loss.item() == pytest.approx(total / 2, rel=1e-5)


def test_vtc_gradient_reaches_the_temperature_and_features():
    v, t = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4, requires_grad=True)
    temp = torch.tensor(0.07, requires_grad=True)
    vtc_loss(v, t, torch.arange(3), temp).backward()
    assert v.grad.abs().sum() > 0 and t.grad.abs().sum() > 0 and temp.grad != 0


def test_hard_negatives_are_never_positives_and_follow_similarity():
    idx = torch.tensor([0, 0, 1, 2])
    sim = torch.zeros(4, 4)
    sim[:, 3] = 8.0      # caption 3 is by far the most similar to every video
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(4, dtype=torch.long)
    for _ in range(200):
        neg_text, neg_video = sample_hard_negatives(sim, idx, gen)
        for i in range(4):
            assert idx[neg_text[i]] != idx[i] and idx[neg_video[i]] != idx[i]
        counts += torch.bincount(neg_text[:3], minlength=4)
    assert counts[3] > 0.95 * counts.sum()   # videos 0-2 pick the hard caption 3 almost always
    with pytest.raises(ValueError, match="no negative"):
        sample_hard_negatives(torch.zeros(2, 2), torch.tensor([5, 5]))


def test_mlm_mask_rates_and_exclusions():
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 1000, (64, 40), generator=gen)
    ids[:, 0] = 101                       # CLS
    ids[:, 30:] = 0                       # padding
    out, labels = mlm_mask(ids, 1000, mask_token_id=103, pad_token_id=0, cls_token_id=101, prob=0.5, generator=gen)
    chosen = labels != -100
    assert not chosen[:, 0].any() and not chosen[:, 30:].any()
    assert torch.equal(labels[chosen], ids[chosen]) and torch.equal(out[~chosen], ids[~chosen])
    rate = chosen[:, 1:30].float().mean().item()
    assert rate == pytest.approx(0.5, abs=0.03)
    masked = (out[chosen] == 103).float().mean().item()
    kept = (out[chosen] == ids[chosen]).float().mean().item()
    assert masked == pytest.approx(0.8, abs=0.03) and kept == pytest.approx(0.1, abs=0.03)
