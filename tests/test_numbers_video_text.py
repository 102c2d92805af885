"""Video-text matching: the VTM hard-negative draw in both directions (videomamba/objectives/contrastive.py
``sample_hard_negatives``) and the ITM re-ranked retrieval evaluation (videomamba/tasks/video_text/retrieval.py
``rerank`` / ``evaluate_retrieval``, docs/design.md §4 and D10), against numbers made here: softmax draw
probabilities from ``math.exp``, and a brute-force re-rank (sort by ITC, re-order the top k by an ITM score the
fake model takes from a table, the rest after them in ITC order) with recalls and ranks counted by hand."""
import importlib
import math
import statistics
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fake_ranks import FakeRanks
from videomamba.objectives.contrastive import sample_hard_negatives

retrieval = importlib.import_module("videomamba.tasks.video_text.retrieval")
CPU = torch.device("cpu")


# ------------------------------------------------------------------------------------------- hard negatives
def test_the_negative_holding_all_the_mass_is_drawn_in_each_direction():
    # idx: video/text 0 and 1 are one item (positives of each other). Positives get the largest similarity,
    # so if they were not excluded they would be drawn; each row/column has one hard negative at 40, the
    # rest 0 (weight e^-40 against it).
    idx = torch.tensor([0, 0, 1, 2])
    sim = torch.zeros(4, 4)
    for v, t in [(0, 0), (0, 1), (1, 0), (1, 1), (2, 2), (3, 3)]:
        sim[v, t] = 60.0
    for v, t in [(0, 3), (1, 2), (2, 0), (3, 1)]:
        sim[v, t] = 40.0
    # video -> text: row v's hard negative; text -> video: column t's hard negative (worked out by hand)
    want_text = [3, 2, 0, 1]    # video 0 -> text 3, video 1 -> text 2, video 2 -> text 0, video 3 -> text 1
    want_video = [2, 3, 1, 0]   # text 0: column (60, 60, 40, 0) -> video 2; text 1: (60, 60, 0, 40) -> video 3; ...
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        neg_text, neg_video = sample_hard_negatives(sim, idx, gen)
        assert neg_text.tolist() == want_text
        assert neg_video.tolist() == want_video


def _softmax_over(values: dict) -> dict:
    z = sum(math.exp(v) for v in values.values())
    return {k: math.exp(v) / z for k, v in values.items()}


def test_draw_frequencies_follow_the_softmax_of_each_direction():
    idx = torch.tensor([0, 1, 2])
    sim = torch.tensor([[0.0, 2.0, 0.0],
                        [0.0, 0.0, 0.0],
                        [3.0, 3.0, 0.0]])   # the diagonal (positives) is never a candidate
    # (row and column normalisers differ here, so a softmax over the wrong axis gives other frequencies:
    # video 0 draws text 1 with e^2 / (e^2 + 1) = 0.88 by its row, 0.44 with columns normalised first)
    n = 3000
    gen = torch.Generator().manual_seed(0)
    texts = np.zeros((3, 3))
    videos = np.zeros((3, 3))
    for _ in range(n):
        nt, nv = sample_hard_negatives(sim, idx, gen)
        texts[np.arange(3), nt.numpy()] += 1
        videos[np.arange(3), nv.numpy()] += 1
    assert np.all(np.diag(texts) == 0) and np.all(np.diag(videos) == 0)   # a positive is never drawn
    s = sim.tolist()
    for v in range(3):   # video v draws text t with softmax over row v, the positive left out
        p = _softmax_over({t: s[v][t] for t in range(3) if t != v})
        for t, want in p.items():
            assert texts[v, t] / n == pytest.approx(want, abs=0.04), (v, t)
    for t in range(3):   # text t draws video v with softmax over column t
        p = _softmax_over({v: s[v][t] for v in range(3) if v != t})
        for v, want in p.items():
            assert videos[t, v] / n == pytest.approx(want, abs=0.04), (t, v)


def test_a_batch_without_negatives_is_refused():
    with pytest.raises(ValueError, match="no negative"):
        sample_hard_negatives(torch.zeros(3, 3), torch.tensor([4, 4, 4]))


# ------------------------------------------------------------------------------------------------ re-ranking
class FakeVideoText(torch.nn.Module):
    """What the retrieval evaluation calls on a video-text model, answering from tables: video ``v``'s
    per-frame joint features ``vis[v] (F, D)``, text ``t``'s ``txt[t] (D,)``, and the ITM logit ``itm[v, t]``.
    The video tokens are filled with ``v`` and the text states with ``t``, so that ``itm_scores`` can tell
    which pair it was given."""

    def __init__(self, vis, txt, itm):
        super().__init__()
        self.vis, self.txt, self.itm = vis, txt, itm
        self.itm_calls = 0

    def encode_vision(self, media):
        ids = media.round().long()
        tokens = media.float()[:, None, None].expand(-1, 3, 4).clone()
        return tokens, self.vis[ids], None

    def vision_proj(self, pooled):
        return pooled

    def encode_text(self, input_ids, attention_mask):
        ids = input_ids[:, 0]
        hidden = ids.float()[:, None, None].expand(-1, input_ids.shape[1], 4).clone()
        return hidden, self.txt[ids]

    def text_proj(self, cls):
        return cls

    def itm_scores(self, vision_tokens, text_hidden, text_mask):
        self.itm_calls += vision_tokens.shape[0]
        v = vision_tokens[:, 0, 0].round().long()
        t = text_hidden[:, 0, 0].round().long()
        return self.itm[v, t]


class Encoding(dict):
    def to(self, device):
        return self


def tokenizer(texts, padding, truncation, max_length, return_tensors):
    ids = torch.tensor([[int(s)] * max_length for s in texts])
    return Encoding(input_ids=ids, attention_mask=torch.ones_like(ids))


def itc_by_hand(vis, txt):
    """Per-frame cosine averaged over the frames, with numpy."""
    vis, txt = np.asarray(vis, dtype=np.float64), np.asarray(txt, dtype=np.float64)
    out = np.zeros((vis.shape[0], txt.shape[0]))
    for v in range(vis.shape[0]):
        for t in range(txt.shape[0]):
            out[v, t] = np.mean([f @ txt[t] / np.linalg.norm(f) / np.linalg.norm(txt[t]) for f in vis[v]])
    return out


def brute_force_order(itc_row, itm_row, k):
    """Candidates of one query, best first: its k best by ITC re-ordered by ITM, then the rest by ITC."""
    by_itc = sorted(range(len(itc_row)), key=lambda c: -itc_row[c])
    return sorted(by_itc[:k], key=lambda c: -itm_row[c]) + by_itc[k:]


def ranks_by_hand(orders, positives):
    return [1 + min(order.index(p) for p in pos) for order, pos in zip(orders, positives)]


def metrics_by_hand(txt_ranks, img_ranks):
    out = {}
    for name, ranks in (("txt", txt_ranks), ("img", img_ranks)):
        for k in (1, 5, 10):
            out[f"{name}_r{k}"] = 100.0 * sum(r <= k for r in ranks) / len(ranks)
        out[f"{name}_r_mean"] = (out[f"{name}_r1"] + out[f"{name}_r5"] + out[f"{name}_r10"]) / 3
        out[f"{name}_mdr"] = float(statistics.median(ranks))
        out[f"{name}_mnr"] = sum(ranks) / len(ranks)
    out["r_mean"] = (out["txt_r_mean"] + out["img_r_mean"]) / 2
    return out


V, T, K_TEST = 12, 15, 3
TXT2VID = [0, 0, 1, 1, 2, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]   # videos 0-2 have two captions


@pytest.fixture(scope="module")
def tables():
    """ITC values spread apart by construction (no two candidates of a query closer than 0.05, see
    test_outside_items_keep_their_itc_order_however_close for why that matters): text t's feature is the
    t-th axis, video v's row of values is a Latin-square arrangement of 15 evenly spaced numbers (distinct
    along rows and columns); both are turned by one random rotation (cosines do not change). Each video has
    two frames, the second the first scaled: the same cosine."""
    g = torch.Generator().manual_seed(3)
    vals = torch.linspace(-1.0, 1.0, T)
    rows = torch.stack([vals[[(7 * t + 2 * v) % T for t in range(T)]] for v in range(V)])   # (V, T)
    q, _ = torch.linalg.qr(torch.randn(T, T, generator=g, dtype=torch.float64))
    q = q.float()
    vis = torch.stack([rows @ q.t(), 3.0 * rows @ q.t()], dim=1)   # (V, 2, T)
    txt = torch.eye(T) @ q.t()
    itm = torch.randn(V, T, generator=g) * 3.0     # below and above the ITC range [-1, 1]
    itc = itc_by_hand(vis, txt)
    for row in list(itc) + list(itc.T):
        gaps = np.diff(np.sort(row))
        assert gaps.min() > 0.05
    return vis, txt, itm


def expected(vis, txt, itm, k):
    itc = itc_by_hand(vis, txt)
    itm = itm.numpy()
    vid2txt = [[t for t in range(T) if TXT2VID[t] == v] for v in range(V)]
    v_orders = [brute_force_order(itc[v], itm[v], k) for v in range(V)]
    t_orders = [brute_force_order(itc[:, t], itm[:, t], k) for t in range(T)]
    itm_m = metrics_by_hand(ranks_by_hand(v_orders, vid2txt), ranks_by_hand(t_orders, [[v] for v in TXT2VID]))
    plain_v = [sorted(range(T), key=lambda c: -itc[v][c]) for v in range(V)]
    plain_t = [sorted(range(V), key=lambda c: -itc[c][t]) for t in range(T)]
    itc_m = metrics_by_hand(ranks_by_hand(plain_v, vid2txt), ranks_by_hand(plain_t, [[v] for v in TXT2VID]))
    return itc, v_orders, t_orders, itm_m, itc_m


def test_brute_force_reranking_changes_the_answer(tables):
    # the test data are worth something only if re-ranking moves ranks (and k matters)
    _, _, _, itm_m, itc_m = expected(*tables, K_TEST)
    assert itm_m != itc_m
    assert expected(*tables, K_TEST + 1)[3] != itm_m


def _rerank_inputs(model, itc):
    vt = torch.arange(V, dtype=torch.float32)[:, None, None].expand(V, 3, 4).clone()
    th = torch.arange(T, dtype=torch.float32)[:, None, None].expand(T, 5, 4).clone()
    return torch.as_tensor(itc, dtype=torch.float32), vt, th, torch.ones(T, 5, dtype=torch.long)


def _check_rerank(v2t, t2v, itc, itm, v_orders, t_orders, k):
    itm = itm.numpy()
    for v in range(V):
        row = v2t[v].tolist()
        top = v_orders[v][:k]
        assert sorted(range(T), key=lambda c: -row[c]) == v_orders[v]          # the final order
        assert [row[t] for t in top] == pytest.approx([itm[v, t] for t in top], abs=1e-6)   # raw ITM logits
        assert max(row[t] for t in v_orders[v][k:]) < min(row[t] for t in top)
    for t in range(T):
        col = t2v[t].tolist()
        top = t_orders[t][:k]
        assert sorted(range(V), key=lambda c: -col[c]) == t_orders[t]
        assert [col[v] for v in top] == pytest.approx([itm[v, t] for v in top], abs=1e-6)
        assert max(col[v] for v in t_orders[t][k:]) < min(col[v] for v in top)


def test_rerank_equals_a_brute_force_rerank(tables):
    vis, txt, itm = tables
    itc, v_orders, t_orders, _, _ = expected(vis, txt, itm, K_TEST)
    model = FakeVideoText(vis, txt, itm)
    v2t, t2v = retrieval.rerank(model, *_rerank_inputs(model, itc), K_TEST, CPU, batch=2, progress=False)
    assert v2t.shape == (V, T) and t2v.shape == (T, V)
    _check_rerank(v2t, t2v, itc, itm, v_orders, t_orders, K_TEST)
    assert model.itm_calls == (V + T) * K_TEST   # only the top k of each query go through the fusion encoder


def test_rerank_split_over_two_ranks_equals_one(tables, monkeypatch):
    vis, txt, itm = tables
    itc, v_orders, t_orders, _, _ = expected(vis, txt, itm, K_TEST)
    models = [FakeVideoText(vis, txt, itm) for _ in range(2)]
    ranks = FakeRanks(2)
    ranks.patch(monkeypatch, retrieval)
    out = ranks.run(lambda r: retrieval.rerank(models[r], *_rerank_inputs(models[r], itc), K_TEST, CPU, batch=2,
                                               progress=False))
    for v2t, t2v in out:
        _check_rerank(v2t, t2v, itc, itm, v_orders, t_orders, K_TEST)
    assert sum(m.itm_calls for m in models) == (V + T) * K_TEST   # each row once, on one rank


def test_a_ground_truth_outside_the_top_k_is_not_promoted_by_its_itm_score():
    # one video, three texts; text 2 is its caption, third by ITC: with k = 2 it stays third whatever ITM says
    vis = torch.tensor([[[1.0, 0.0]]])
    txt = torch.tensor([[1.0, 0.1], [1.0, 0.5], [0.0, 1.0]])
    itm = torch.tensor([[-1.0, -2.0, 10.0]])
    model = FakeVideoText(vis, txt, itm)
    itc = torch.tensor(itc_by_hand(vis, txt), dtype=torch.float32)
    vt = torch.zeros(1, 3, 4)
    th = torch.arange(3, dtype=torch.float32)[:, None, None].expand(3, 5, 4).clone()
    v2t, _ = retrieval.rerank(model, itc, vt, th, torch.ones(3, 5, dtype=torch.long), 2, CPU, progress=False)
    assert sorted(range(3), key=lambda c: -v2t[0, c].item()) == [0, 1, 2]
    assert v2t[0, :2].tolist() == [-1.0, -2.0]


def _corpus_and_loaders():
    corpus = SimpleNamespace(texts=[str(t) for t in range(T)], txt2vid=TXT2VID)
    # two batches in an order that is not the data set's: the evaluation must put them back
    first = [7, 0, 11, 3, 5, 9]
    second = [1, 10, 2, 8, 4, 6]
    return corpus, [(torch.tensor(b, dtype=torch.float32), torch.tensor(b)) for b in (first, second)]


def test_evaluate_retrieval_equals_brute_force_metrics(tables):
    vis, txt, itm = tables
    _, _, _, itm_m, itc_m = expected(vis, txt, itm, K_TEST)
    corpus, batches = _corpus_and_loaders()
    res = retrieval.evaluate_retrieval(FakeVideoText(vis, txt, itm), batches, corpus, tokenizer, CPU, max_len=4,
                                       k_test=K_TEST, itm_batch=2, text_batch=4, progress=False)
    assert (res["n_videos"], res["n_texts"]) == (V, T)
    assert res["itc"] == pytest.approx(itc_m)
    assert res["itm"] == pytest.approx(itm_m)


def test_evaluate_retrieval_on_two_ranks_equals_brute_force(tables, monkeypatch):
    vis, txt, itm = tables
    _, _, _, itm_m, itc_m = expected(vis, txt, itm, K_TEST)
    corpus, batches = _corpus_and_loaders()
    ranks = FakeRanks(2)
    ranks.patch(monkeypatch, retrieval)
    out = ranks.run(lambda r: retrieval.evaluate_retrieval(FakeVideoText(vis, txt, itm), [batches[r]], corpus,
                                                           tokenizer, CPU, max_len=4, k_test=K_TEST, itm_batch=2,
                                                           progress=False))
    for res in out:
        assert res["itc"] == pytest.approx(itc_m) and res["itm"] == pytest.approx(itm_m)


def test_outside_items_keep_their_itc_order_however_close():
    # one video, four texts; k = 2 re-ranks texts 0 and 1. Text 2 (its caption, ITC 0.5002) is above text 3
    # (ITC 0.5000) by ITC, so its rank is 3; a tie with text 3 would make it 4.
    itc = torch.tensor([[0.9, 0.8, 0.5002, 0.5000]])
    model = FakeVideoText(None, None, torch.tensor([[1.0, 2.0, 0.0, 0.0]]))
    vt = torch.zeros(1, 3, 4)
    th = torch.arange(4, dtype=torch.float32)[:, None, None].expand(4, 5, 4).clone()
    v2t, t2v = retrieval.rerank(model, itc, vt, th, torch.ones(4, 5, dtype=torch.long), 2, CPU, progress=False)
    from videomamba.tasks.video_text.metrics import query_ranks

    assert query_ranks(v2t.numpy(), [[2]]).tolist() == [3]
    assert v2t[0, 2] > v2t[0, 3]
