"""Video annotations, clips, bad videos in training and evaluation, and the multi-view merge."""
import json

import numpy as np
import pytest
import torch

from videomamba.data.errors import DataError
from videomamba.data.moving_digits import render_motion, write_mp4
from videomamba.data.sampling import sparse_indices
from videomamba.data.video_dataset import (VideoClipDataset, collate_eval, collate_train, read_video_annotations)
from videomamba.data.video_transforms import VideoEvalTransform, VideoTrainTransform, parse_rand_augment
from videomamba.engine.multiview import ViewPredictions, evaluate_multiview, first_occurrences, merge_views

pytest.importorskip("av")


def _write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("text,match", [
    ("a.mp4,1\nb.mp4\n", r"ann.csv:2: expected 2 columns"),
    ("a.mp4,1\nb.mp4,x\n", r"ann.csv:2: label 'x' is not an integer"),
    ("a.mp4,1\n\nb.mp4,9\n", r"ann.csv:3: label 9 out of range \[0, 5\)"),
    ("a.mp4,-1\n", r"ann.csv:1: label -1 out of range"),
    ("\n\n", r"ann.csv: no samples"),
])
def test_malformed_annotation_lines_name_file_and_line(tmp_path, text, match):
    with pytest.raises(DataError, match=match):
        read_video_annotations(_write(tmp_path / "ann.csv", text), num_classes=5)


def test_annotation_formats(tmp_path):
    k = read_video_annotations(_write(tmp_path / "k.csv", "x/a.mp4,3\nx/b.mp4,0\n"), prefix="/data", num_classes=4)
    assert [(r.path, r.label, r.line) for r in k] == [("/data/x/a.mp4", 3, 1), ("/data/x/b.mp4", 0, 2)]
    s = read_video_annotations(_write(tmp_path / "s.csv", "12 5\n13  7\n"), delimiter=" ", num_classes=174)
    assert [(r.path, r.label) for r in s] == [("12", 5), ("13", 7)]
    lvu = read_video_annotations(_write(tmp_path / "l.csv", "a.mp4,2,120.5\n"), need_duration=True)
    assert lvu[0].duration == 120.5
    reg = read_video_annotations(_write(tmp_path / "r.csv", "a.mp4,0.25,90\n"), regression=True, need_duration=True)
    assert reg[0].label == 0.25
    with pytest.raises(DataError, match=r"l2.csv:1: expected 3 columns"):
        read_video_annotations(_write(tmp_path / "l2.csv", "a.mp4,2\n"), need_duration=True)
    with pytest.raises(DataError, match=r"l3.csv:1: duration 'long' is not a number"):
        read_video_annotations(_write(tmp_path / "l3.csv", "a.mp4,2,long\n"), need_duration=True)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Six real H.264 clips (two motions each of three kinds) plus every kind of bad file."""
    root = tmp_path_factory.mktemp("vids")
    rng = np.random.default_rng(0)
    digit = np.tile(np.linspace(0, 16, 8), (8, 1))
    lines = []
    for i, motion in enumerate([0, 1, 4, 5, 6, 7]):
        write_mp4(root / f"ok{i}.mp4", render_motion(digit, motion, rng, canvas=32, frames=12))
        lines.append(f"ok{i}.mp4,{motion}")
    good = (root / "ok0.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(good[: len(good) // 2])
    (root / "text.mp4").write_text("not a video\n")
    import av

    # a valid container whose video stream has no frames (a fragmented mp4 writes its empty track up front)
    with av.open(str(root / "empty.mp4"), "w", options={"movflags": "frag_keyframe+empty_moov"}) as c:
        s = c.add_stream("libx264", rate=8)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        c.start_encoding()
    bad = ["truncated.mp4,2", "text.mp4,3", "missing.mp4,0", "empty.mp4,1"]
    _write(root / "good.csv", "\n".join(lines) + "\n")
    _write(root / "mixed.csv", "\n".join(lines[:3] + bad + lines[3:]) + "\n")
    return root


def _eval_set(root, ann, views=2, crops=3, size=32):
    recs = read_video_annotations(root / ann, prefix=str(root), num_classes=8)
    return VideoClipDataset(recs, "eval", 8, VideoEvalTransform(size, num_crops=crops), num_views=views,
                            num_crops=crops, source=ann)


def test_eval_views_read_the_official_frames(videos):
    ds = _eval_set(videos, "good.csv", views=2, crops=1)
    assert len(ds) == 12
    item = ds[7]   # clip varies fastest: item 7 = video 1, temporal view 1, crop 0
    assert item["key"] == (1, 1, 0) and item["label"] == 1 and item["error"] is None
    from videomamba.data.decode import open_video

    with open_video(videos / "ok1.mp4") as r:
        frames = r.get_frames(sparse_indices(len(r), 8, view=1, num_views=2))
    expected = VideoEvalTransform(32)(frames)
    torch.testing.assert_close(item["x"], expected)
    assert item["x"].shape == (3, 8, 32, 32)


def test_bad_videos_are_replaced_in_training(videos, caplog):
    recs = read_video_annotations(videos / "mixed.csv", prefix=str(videos), num_classes=8)
    ds = VideoClipDataset(recs, "train", 8, VideoTrainTransform(24, hflip=0), num_sample=2, source="mixed.csv")
    items = [ds[i] for i in range(len(ds))]   # never raises
    # Bad items 3..6 each fall back through the earlier (bad) neighbours to video 2: 1+2+3+4 failed reads,
    # every one counted.
    assert ds.failures.value == 10
    logged = caplog.text
    for name in ("truncated.mp4", "text.mp4", "missing.mp4", "empty.mp4"):
        assert name in logged
    assert "mixed.csv:" in logged   # the annotation line of each bad video is named
    x, y = collate_train(items[:3])
    assert x.shape == (6, 3, 8, 24, 24) and y.tolist()[:2] == [items[0][1]] * 2
    good_labels = {0, 1, 4, 5, 6, 7}
    assert all(lbl in good_labels for _, lbl in items)   # replacements come from readable videos


def test_bad_videos_are_skipped_and_reported_in_evaluation(videos):
    ds = _eval_set(videos, "mixed.csv", views=2, crops=1)
    loader = torch.utils.data.DataLoader(ds, batch_size=5, collate_fn=collate_eval)
    model = _TinyModel()
    res = evaluate_multiview(model, loader, torch.device("cpu"), progress=False)
    assert res["num_videos"] == 6 and res["num_views"] == 12
    skipped = {s["path"].split("/")[-1]: s["error"] for s in res["skipped"]}
    assert set(skipped) == {"truncated.mp4", "text.mp4", "missing.mp4", "empty.mp4"}
    assert all(err.startswith(str(videos)) for err in skipped.values())   # the error names the file
    assert res["pred"][3] == -1 and res["pred"][0] >= 0


class _TinyModel(torch.nn.Module):
    """Deterministic logits from the clip's mean intensity per frame."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)
        torch.nn.init.normal_(self.lin.weight, generator=torch.Generator().manual_seed(0))

    def forward(self, x):
        return self.lin(x.mean(dim=(1, 3, 4)))


def test_merge_softmaxes_dedups_by_integer_key_and_averages():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [5.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    keys = torch.tensor([[0, 0, 0], [0, 1, 0], [0, 0, 0], [1, 0, 0], [0, 10, 0]])   # row 2 repeats row 0's key
    preds = ViewPredictions(keys, logits.softmax(-1))
    probs, counts = merge_views(preds, num_videos=3)
    p = logits.softmax(-1).double()
    torch.testing.assert_close(probs[0], (p[0] + p[1] + p[4]) / 3)    # the duplicate is dropped, not averaged in
    torch.testing.assert_close(probs[1], p[3])
    assert counts.tolist() == [3, 1, 0]
    # 'window 1, view 0' (key 10 with 10 views) and 'window 0, view 10' would collide as strings "1"+"0"/"10"+""
    # in the official merge; as integers they are distinct
    masks = first_occurrences([torch.tensor([[0, 1, 0], [0, 0, 0]]), torch.tensor([[0, 0, 0], [0, 2, 0]])])
    assert [m.tolist() for m in masks] == [[True, True], [False, True]]


def test_rand_augment_spec_and_video_consistency():
    assert parse_rand_augment("rand-m7-n4-mstd0.5-inc1") == {"magnitude": 7, "num_ops": 4}
    with pytest.raises(ValueError):
        parse_rand_augment("autoaug")
    frame = np.random.default_rng(0).integers(0, 255, (1, 40, 48, 3), dtype=np.uint8)
    clip = np.repeat(frame, 6, axis=0)   # six identical frames stay identical: one draw for the whole clip
    t = VideoTrainTransform(32, "rand-m9-n4", hflip=0.5, reprob=1.0)
    for _ in range(10):
        out = t(clip)
        assert out.shape == (3, 6, 32, 32)
        assert all(torch.equal(out[:, 0], out[:, k]) for k in range(6))


def test_video_mixup_shares_the_cutmix_box_across_frames():
    from timm.data import Mixup

    from videomamba.engine.losses import VideoMixup

    x = torch.arange(4.0)[:, None, None, None, None].expand(4, 3, 5, 16, 16).clone()
    mix = VideoMixup(Mixup(mixup_alpha=0.0, cutmix_alpha=1.0, prob=1.0, num_classes=4))
    out, target = mix(x, torch.arange(4))
    assert out.shape == x.shape and target.shape == (4, 4)
    changed = out[0, 0] != 0   # sample 0 got a box from sample 3 ...
    assert changed.any() and all(torch.equal(changed[0], changed[t]) for t in range(5))   # ... on every frame
    assert torch.equal(out[0, 0], out[0, 2])
    assert json.dumps(target.tolist())
