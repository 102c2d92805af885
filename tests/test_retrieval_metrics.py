"""Retrieval metrics on hand-made score matrices: multi-caption videos, ties, MdR/MnR worked out by hand."""
import numpy as np
import pytest

from videomamba.engine.retrieval import query_ranks, retrieval_metrics


def test_perfect_and_reversed():
    s = np.eye(4)
    m = retrieval_metrics(s, None, [0, 1, 2, 3])
    assert m["txt_r1"] == m["img_r1"] == 100.0 and m["txt_mdr"] == m["img_mnr"] == 1.0 and m["r_mean"] == 100.0
    # each query's ground truth scored lowest: rank 4 for all
    m = retrieval_metrics(-np.eye(4), None, [0, 1, 2, 3])
    assert m["txt_r1"] == 0.0 and m["txt_r5"] == 100.0 and m["txt_mdr"] == 4.0 and m["img_mnr"] == 4.0


def test_by_hand():
    # 3 videos x 3 texts, text t belongs to video t
    s = np.array([[0.9, 0.1, 0.5],    # video 0: its text ranks 1st
                  [0.8, 0.3, 0.2],    # video 1: its text (0.3) is 2nd after 0.8
                  [0.7, 0.6, 0.4]])   # video 2: its text (0.4) is 3rd
    m = retrieval_metrics(s, None, [0, 1, 2])
    assert np.array_equal(query_ranks(s, [[0], [1], [2]]), [1, 2, 3])
    assert m["txt_r1"] == pytest.approx(100 / 3) and m["txt_r5"] == 100.0
    assert m["txt_mdr"] == 2.0 and m["txt_mnr"] == 2.0
    # text-to-video reads the columns: text 0 -> video 0 (0.9 best: rank 1); text 1 -> video 1 (0.3 < 0.6, 0.1:
    # rank 2); text 2 -> video 2 (0.4 < 0.5, 0.2: rank 2)
    assert m["img_r1"] == pytest.approx(100 / 3) and m["img_mdr"] == 2.0 and m["img_mnr"] == pytest.approx(5 / 3)
    assert m["txt_r_mean"] == pytest.approx((100 / 3 + 100 + 100) / 3)
    assert m["r_mean"] == pytest.approx((m["txt_r_mean"] + m["img_r_mean"]) / 2)


def test_multi_caption_uses_the_best_caption():
    # video 0 has texts 0 and 1, video 1 has text 2
    s = np.array([[0.1, 0.9, 0.5],    # best caption of video 0 (text 1) is first: rank 1
                  [0.8, 0.7, 0.6]])   # video 1's only caption is last: rank 3
    m = retrieval_metrics(s, None, [0, 0, 1])
    assert np.array_equal(query_ranks(s, [[0, 1], [2]]), [1, 3])
    assert (m["txt_r1"], m["txt_mdr"], m["txt_mnr"]) == (50.0, 2.0, 2.0)
    # other captions of the same video never count against a caption of that video
    s2 = np.array([[0.9, 0.95, 0.1], [0.2, 0.1, 0.3]])
    assert query_ranks(s2, [[0, 1], [2]])[0] == 1


def test_ties_count_against_the_query():
    flat = np.zeros((5, 5))
    m = retrieval_metrics(flat, None, range(5))
    assert m["txt_r1"] == m["img_r1"] == 0.0 and m["txt_mdr"] == 5.0   # not 100% R@1
    s = np.array([[0.5, 0.5, 0.1], [0.0, 1.0, 0.0], [0.2, 0.9, 0.2]])
    # video 0: one other text ties with its own -> rank 2; video 2: text 1 above, text 0 ties -> rank 3
    assert np.array_equal(query_ranks(s, [[0], [1], [2]]), [2, 1, 3])


def test_separate_t2v_matrix_and_errors():
    v2t = np.eye(3)
    t2v = np.array([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])   # text 0 retrieves video 1 first
    m = retrieval_metrics(v2t, t2v, [0, 1, 2])
    assert m["txt_r1"] == 100.0 and m["img_r1"] == pytest.approx(200 / 3)
    with pytest.raises(ValueError, match="t2v"):
        retrieval_metrics(v2t, t2v[:2], [0, 1, 2])
    with pytest.raises(ValueError, match="without a caption"):
        retrieval_metrics(np.zeros((3, 2)), None, [0, 1])
    with pytest.raises(ValueError, match="txt2vid"):
        retrieval_metrics(v2t, None, [0, 1, 3])


def test_large_random_matches_a_sort_based_computation():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(50, 120))            # continuous scores: no ties
    txt2vid = np.concatenate([np.arange(50), rng.integers(0, 50, 70)])
    m = retrieval_metrics(s, None, txt2vid)
    ranks = []
    for v in range(50):
        order = np.argsort(-s[v])
        ranks.append(1 + min(np.flatnonzero(np.isin(order, np.flatnonzero(txt2vid == v)))))
    ranks = np.array(ranks)
    assert m["txt_r1"] == pytest.approx(100 * (ranks <= 1).mean()) and m["txt_r10"] == pytest.approx(100 * (ranks <= 10).mean())
    assert m["txt_mdr"] == np.median(ranks) and m["txt_mnr"] == pytest.approx(ranks.mean())
    t_ranks = np.array([1 + np.flatnonzero(np.argsort(-s[:, t]) == txt2vid[t])[0] for t in range(120)])
    assert m["img_mnr"] == pytest.approx(t_ranks.mean()) and m["img_r5"] == pytest.approx(100 * (t_ranks <= 5).mean())
