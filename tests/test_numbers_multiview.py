"""The multi-view video test (videomamba/tasks/classification/multiview.py, design decision D9) against numbers
worked out by hand: each view soft-maxed before the views are averaged, top-5, the accuracy denominator when
videos could not be read, de-duplication by the (video, temporal view, crop) key within and across ranks.

The model is the identity and each batch's input *is* its logits, so every expected number below comes from
the hand-made logits with ``math.exp`` (never from the code under test). Two ranks are two threads whose
collectives meet in :class:`fake_ranks.FakeRanks`."""
import importlib
import math
from types import SimpleNamespace

import pytest
import torch

from fake_ranks import FakeRanks
from videomamba.data.video_dataset import VideoRecord

mv = importlib.import_module("videomamba.tasks.classification.multiview")
CPU = torch.device("cpu")


def softmax(logits):
    e = [math.exp(v) for v in logits]
    return [v / sum(e) for v in e]


class LogitsAreTheInput(torch.nn.Module):
    def forward(self, x):
        return x


class Loader:
    """What evaluate_multiview reads: batches of collate_eval's ``(x, labels, keys, skipped)`` and
    ``dataset.records`` (labels, paths)."""

    def __init__(self, batches, labels):
        self.batches = batches
        self.dataset = SimpleNamespace(records=[VideoRecord(f"/videos/v{i}.mp4", y, i + 1) for i, y in enumerate(labels)])

    def __iter__(self):
        return iter(self.batches)


def batch(rows, skipped=()):
    """``rows``: [(key, label, logits)] -> one collate_eval batch."""
    if not rows:
        return torch.empty(0), torch.empty(0), torch.empty(0, 3, dtype=torch.long), list(skipped)
    keys, labels, logits = zip(*rows)
    return (torch.tensor(logits, dtype=torch.float32), torch.tensor(labels), torch.tensor(keys, dtype=torch.long),
            list(skipped))


def evaluate(batches, labels, **kw):
    return mv.evaluate_multiview(LogitsAreTheInput(), Loader(batches, labels), CPU, progress=False, **kw)


# ---------------------------------------------------------------------------------------------- softmax first
# Video 0 (label 1): one over-confident view for class 0 and two moderate views for class 1.
# Mean of logits: [20/3, 2, 0] -> class 0.  Mean of probabilities: ~[0.365, 0.603, 0.031] -> class 1.
V0_VIEWS = [[20.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 3.0, 0.0]]


def test_views_are_softmaxed_before_they_are_averaged():
    mean_logits = [sum(v[c] for v in V0_VIEWS) / 3 for c in range(3)]
    mean_probs = [sum(softmax(v)[c] for v in V0_VIEWS) / 3 for c in range(3)]
    assert max(range(3), key=mean_logits.__getitem__) == 0 and max(range(3), key=mean_probs.__getitem__) == 1
    rows = [((0, k, 0), 1, v) for k, v in enumerate(V0_VIEWS)] + [((1, 0, 0), 0, [1.0, 0.0, 0.0])]
    res = evaluate([batch(rows[:2]), batch(rows[2:])], labels=[1, 0])
    assert res["pred"] == [1, 0]
    assert res["acc1"] == pytest.approx(100.0)
    assert res["num_videos"] == 2 and res["num_views"] == 4
    # the merged probabilities themselves
    preds = mv.predict_views(LogitsAreTheInput(), [batch(rows)], CPU, progress=False)
    probs, counts = mv.merge_views(preds, num_videos=2)
    assert counts.tolist() == [3, 1]
    assert probs[0].tolist() == pytest.approx(mean_probs, abs=1e-6)
    assert probs[1].tolist() == pytest.approx(softmax([1.0, 0.0, 0.0]), abs=1e-6)
    # the loss is the mean cross-entropy per view, from the same logits
    ce = [-math.log(softmax(v)[y]) for (_, y, v) in rows]
    assert res["loss"] == pytest.approx(sum(ce) / len(ce), rel=1e-5)


def test_top5_counts_the_label_in_fifth_place_and_not_in_sixth():
    logits = [6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0]   # class c is in place c + 1
    labels = [4, 5, 0, 6]                          # 5th, 6th, 1st, 7th
    rows = [((v, 0, 0), y, logits) for v, y in enumerate(labels)]
    res = evaluate([batch(rows)], labels=labels)
    assert res["acc1"] == pytest.approx(100 * 1 / 4)
    assert res["acc5"] == pytest.approx(100 * 2 / 4)
    assert res["pred"] == [0, 0, 0, 0]


def test_top5_with_fewer_than_five_classes_is_every_class():
    rows = [((0, 0, 0), 2, [3.0, 2.0, 1.0]), ((1, 0, 0), 0, [0.0, 1.0, 2.0])]
    res = evaluate([batch(rows)], labels=[2, 0])
    assert res["acc1"] == 0.0 and res["acc5"] == 100.0


# ------------------------------------------------------------------------------------- unreadable videos
def test_accuracy_counts_only_videos_with_a_readable_view():
    # 4 videos: 0 right, 1 wrong, 2 unreadable (both views skipped), 3 one view skipped, the other right.
    rows = [((0, 0, 0), 0, [2.0, 0.0]), ((0, 1, 0), 0, [1.0, 0.0]),
            ((1, 0, 0), 1, [3.0, 0.0]), ((1, 1, 0), 1, [2.0, 1.0]),
            ((3, 1, 0), 1, [0.0, 1.0])]
    skipped = [((2, 0, 0), "/videos/v2.mp4: broken"), ((2, 1, 0), "/videos/v2.mp4: broken"),
               ((3, 0, 0), "/videos/v3.mp4: bad packet")]
    res = evaluate([batch(rows[:3], skipped[:1]), batch(rows[3:], skipped[1:])], labels=[0, 1, 1, 1])
    assert res["num_videos"] == 3 and res["num_views"] == 5
    assert res["acc1"] == pytest.approx(100 * 2 / 3)   # 2 right of the 3 readable videos, not of 4
    assert res["acc5"] == pytest.approx(100.0)
    assert res["pred"] == [0, 0, -1, 1]
    assert [(s["video"], s["path"]) for s in res["skipped"]] == [(2, "/videos/v2.mp4"), (3, "/videos/v3.mp4")]
    assert res["skipped"][0]["error"] == "/videos/v2.mp4: broken"


def test_regression_mse_over_readable_videos_of_the_mean_prediction():
    # raw values averaged per video (no softmax), squared error averaged over readable videos
    rows = [((0, 0, 0), 1.0, [2.0]), ((0, 1, 0), 1.0, [4.0]), ((2, 0, 0), 0.5, [0.0])]
    res = evaluate([batch(rows, [((1, 0, 0), "unreadable")])], labels=[1.0, 7.0, 0.5], regression=True)
    assert res["mse"] == pytest.approx(((3.0 - 1.0) ** 2 + (0.0 - 0.5) ** 2) / 2)
    assert res["pred"][0] == pytest.approx(3.0) and math.isnan(res["pred"][1]) and res["num_videos"] == 2


# ------------------------------------------------------------------------------------------ de-duplication
def test_two_views_differing_only_by_crop_both_count():
    # crop 0 alone says class 0; with crop 1 the mean says class 1
    a, b = [2.0, 0.0], [0.0, 3.0]
    mean = [(softmax(a)[c] + softmax(b)[c]) / 2 for c in range(2)]
    assert mean[1] > mean[0] and softmax(a)[0] > softmax(a)[1]
    rows = [((0, 0, 0), 1, a), ((0, 0, 1), 1, b), ((0, 0, 0), 1, a)]   # the third row repeats the first key
    res = evaluate([batch(rows)], labels=[1])
    assert res["num_views"] == 2 and res["pred"] == [1] and res["acc1"] == 100.0
    probs, counts = mv.merge_views(mv.predict_views(LogitsAreTheInput(), [batch(rows)], CPU, progress=False), 1)
    assert counts.tolist() == [2] and probs[0].tolist() == pytest.approx(mean, abs=1e-6)


def test_keys_differing_in_one_place_are_distinct_and_repeats_are_dropped():
    keys = [[0, 0, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0], [0, 0, 1], [0, 10, 0], [0, 1, 0]]
    masks = mv.first_occurrences([torch.tensor(keys[:4]), torch.tensor(keys[4:])])
    assert [m.tolist() for m in masks] == [[True, True, True, True], [False, True, False]]


def _two_rank_batches():
    """Rank 0: video 0 view 0, video 1 views 0 and 1; rank 1: video 0 view 1 and video 1 view 0 again (the
    padding a distributed sampler adds repeats an item), with other logits so that it shows if it counts."""
    rank0 = [batch([((0, 0, 0), 0, [3.0, 0.0]), ((1, 0, 0), 0, [0.0, 2.0])]),
             batch([((1, 1, 0), 0, [2.5, 0.0])])]
    rank1 = [batch([((0, 1, 0), 0, [2.0, 0.0]), ((1, 0, 0), 0, [0.0, 9.0])])]
    return [rank0, rank1]


def test_duplicates_across_ranks_count_once_keeping_the_first_rank(monkeypatch):
    # video 1: the distinct views (1,0,0) [0,2] and (1,1,0) [2.5,0] average to class 0 (the label); counting
    # rank 1's repeat [0,9] as well would give class 1
    v1 = [(softmax([0.0, 2.0])[c] + softmax([2.5, 0.0])[c]) / 2 for c in range(2)]
    with_repeat = [(softmax([0.0, 2.0])[c] + softmax([2.5, 0.0])[c] + softmax([0.0, 9.0])[c]) / 3 for c in range(2)]
    assert v1[0] > v1[1] and with_repeat[1] > with_repeat[0]
    v0 = [(softmax([3.0, 0.0])[c] + softmax([2.0, 0.0])[c]) / 2 for c in range(2)]
    per_rank = _two_rank_batches()
    ranks = FakeRanks(2)

    def merged(rank):
        preds = mv.predict_views(LogitsAreTheInput(), per_rank[rank], CPU, progress=False)
        return mv.merge_views(preds, num_videos=2)

    ranks.patch(monkeypatch, mv)
    out = ranks.run(merged)
    for probs, counts in out:   # every rank ends with the same merge
        assert counts.tolist() == [2, 2]
        assert probs[0].tolist() == pytest.approx(v0, abs=1e-6)
        assert probs[1].tolist() == pytest.approx(v1, abs=1e-6)


def test_two_rank_evaluation_equals_the_hand_count(monkeypatch):
    per_rank = _two_rank_batches()
    ranks = FakeRanks(2)
    ranks.patch(monkeypatch, mv)
    out = ranks.run(lambda r: mv.evaluate_multiview(LogitsAreTheInput(), Loader(per_rank[r], [0, 0]), CPU,
                                                    progress=False))
    for res in out:
        assert res["num_views"] == 4 and res["num_videos"] == 2
        assert res["pred"] == [0, 0] and res["acc1"] == 100.0


def test_a_rank_with_no_readable_view_still_joins_the_merge(monkeypatch):
    per_rank = [[batch([((0, 0, 0), 1, [0.0, 1.0, 0.0])])], [batch([], [((1, 0, 0), "/videos/v1.mp4: gone")])]]
    ranks = FakeRanks(2)
    ranks.patch(monkeypatch, mv)
    out = ranks.run(lambda r: mv.evaluate_multiview(LogitsAreTheInput(), Loader(per_rank[r], [1, 2]), CPU,
                                                    progress=False))
    for res in out:
        assert res["num_videos"] == 1 and res["acc1"] == 100.0 and res["pred"] == [1, -1]
        assert [s["video"] for s in res["skipped"]] == [1]
