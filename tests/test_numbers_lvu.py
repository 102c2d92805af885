"""The LVU path of VideoClipDataset (sampler 'lvu': windows of ``trimmed`` seconds every ``time_stride``
seconds, sparse sampling inside each window, docs/design.md §3.2 and D9) and ``data.time_control``, on a real
H.264 video whose frames show their own index (frame k: left half grey ``20 + 14 * (k % 16)``, right half
``20 + 14 * (k // 16)``), so every frame a data set item read can be named. Windows, keys and frame indices
expected here are written out from the documented rules, by hand."""
import numpy as np
import pytest
import torch

from videomamba.data.video_dataset import VideoClipDataset, VideoRecord, collate_eval
from videomamba.engine.multiview import evaluate_multiview

pytest.importorskip("av")

FPS, FRAMES = 2, 200   # a 100 s video


def frame_index(frame: np.ndarray) -> int:
    lo, hi = frame[:, 2:14, 0].mean(), frame[:, 18:30, 0].mean()
    return int(round((lo - 20) / 14)) + 16 * int(round((hi - 20) / 14))


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    from videomamba.data.moving_digits import write_mp4

    frames = np.zeros((FRAMES, 32, 32), dtype=np.uint8)
    for k in range(FRAMES):
        frames[k, :, :16], frames[k, :, 16:] = 20 + 14 * (k % 16), 20 + 14 * (k // 16)
    path = tmp_path_factory.mktemp("lvu") / "long.mp4"
    write_mp4(path, frames, fps=FPS)
    return str(path)


class Probe:
    """A transform that returns which frames it was given and which crop: ``[index..., crop or -1]``."""

    def __call__(self, frames, crop=None):
        return torch.tensor([frame_index(f) for f in frames] + [-1 if crop is None else crop])


# durations (s) -> the windows the LVU rule gives (trimmed 60, stride 16), worked out by hand:
#  30: shorter than 60 -> one window (0, 30)
# 100: starts 0, 16, ..., 96; 48 and 64 run past 100 but keep >= 30 s -> cut at 100; 80 and 96 keep < 30 s
#  61: (0, 60); 16 runs past 61 with 45 s left -> (16, 61); 32 and 48 keep < 30 s
WINDOWS = {30: [(0, 30)], 100: [(0, 60), (16, 76), (32, 92), (48, 100), (64, 100)], 61: [(0, 60), (16, 61)]}
DURATIONS = [30, 100, 61]


def lvu_set(video, views=2, crops=2, num_frames=4, **kw):
    records = [VideoRecord(video, label, line, duration=d) for line, (label, d) in enumerate(zip([0, 1, 2], DURATIONS), 1)]
    return VideoClipDataset(records, "eval", num_frames, Probe(), sampler="lvu", num_views=views, num_crops=crops,
                            trimmed=60, time_stride=16, **kw)


def window_frames(start_s, end_s, num_frames, view, num_views):
    """Sparse test sampling inside a window, from docs/design.md §3.2: seconds -> frames with the average fps
    (int), then seg = (n - 1) / T and frame i = round(seg * i) + int(seg / (K + 1) * (k + 1)), capped."""
    first = min(int(start_s * FPS), FRAMES - 1)
    last = min(int(end_s * FPS), FRAMES - 1)
    n = last - first + 1
    seg = (n - 1) / num_frames
    offset = int(seg / (num_views + 1) * (view + 1))
    return [first + min(round(seg * i) + offset, n - 1) for i in range(num_frames)]


def test_windows_views_and_crops_each_have_their_own_key(video):
    views, crops = 3, 2
    ds = lvu_set(video, views, crops)
    n_windows = sum(len(WINDOWS[d]) for d in DURATIONS)
    assert n_windows == 8 and len(ds) == n_windows * views * crops
    keys = [ds[i]["key"] for i in range(len(ds))]
    assert len(set(keys)) == len(keys)   # no two items share a key
    want = {(v, w * views + k, c) for v, d in enumerate(DURATIONS) for w in range(len(WINDOWS[d]))
            for k in range(views) for c in range(crops)}
    assert set(keys) == want


def test_each_item_reads_its_windows_frames_and_its_crop(video):
    views, crops, T = 2, 2, 4
    ds = lvu_set(video, views, crops, num_frames=T)
    for i in range(len(ds)):
        item = ds[i]
        assert item["error"] is None
        v, wk, c = item["key"]
        w, k = divmod(wk, views)
        start, end = WINDOWS[DURATIONS[v]][w]
        got = item["x"].tolist()
        assert got[:T] == window_frames(start, end, T, k, views), (item["key"], got)
        assert got[T] == c
        assert item["label"] == v
    # spot checks of the formula itself: video 1's last window (64 s, 100 s) = frames 128..199, view 1 of 2:
    # seg = 71 / 4 = 17.75, offset int(17.75 / 3 * 2) = 11 -> 139, 157, 175, 192
    assert window_frames(64, 100, 4, 1, 2) == [139, 157, 175, 192]


def test_the_multiview_test_keeps_every_window(video):
    ds = lvu_set(video, views=2, crops=2)
    loader = torch.utils.data.DataLoader(ds, batch_size=7, collate_fn=collate_eval)

    class Constant(torch.nn.Module):
        def forward(self, x):
            return torch.tensor([[0.0, 1.0, 0.0]]).expand(x.shape[0], 3)

    res = evaluate_multiview(Constant(), loader, torch.device("cpu"), progress=False)
    assert res["num_videos"] == 3
    assert res["num_views"] == 8 * 2 * 2   # every window x view x crop: none collapsed by the merge
    assert res["pred"] == [1, 1, 1] and res["acc1"] == pytest.approx(100 / 3)


def test_validation_reads_one_centred_view_per_window(video):
    ds = lvu_set(video, views=1, crops=1)
    assert len(ds) == 8
    item = ds[1]   # clip 1: video 1, window (0, 60) -> frames 0..120, seg 30, offset 15
    assert item["key"] == (1, 0, 0) and item["x"].tolist() == [15, 45, 75, 105, -1]


# -------------------------------------------------------------------------------------------- time_control
SPARSE_8 = [12, 37, 62, 87, 112, 136, 161, 186]   # seg = 199 / 8 = 24.875: round(seg * i) + int(seg / 2)


def sparse_set(video, time_control, mode="eval"):
    records = [VideoRecord(video, 0, 1)]
    if mode == "eval":
        return VideoClipDataset(records, "eval", 8, Probe(), time_control=time_control)
    return VideoClipDataset(records, "train", 8, lambda frames: Probe()(frames)[:-1], num_sample=2,
                            time_control=time_control)


def test_no_time_control_reads_the_frames_in_order(video):
    assert [round(199 / 8 * i) + int(199 / 8 / 2) for i in range(8)] == SPARSE_8
    assert sparse_set(video, None)[0]["x"].tolist()[:8] == SPARSE_8


def test_shuffle_keeps_the_frames_and_destroys_their_order_in_evaluation(video):
    ds = sparse_set(video, "shuffle")
    got = ds[0]["x"].tolist()[:8]
    assert sorted(got) == SPARSE_8 and got != SPARSE_8
    assert ds[0]["x"].tolist()[:8] == got   # a test view reads the same way every time


def test_shuffle_in_training_permutes_the_drawn_frames(video):
    ds = sparse_set(video, "shuffle", mode="train")
    torch.manual_seed(0)
    orders = [ds[0][0][0].tolist() for _ in range(6)]
    assert all(len(set(o)) == 8 for o in orders)
    assert any(o != sorted(o) for o in orders)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_repeat_shows_one_frame_of_the_clip_every_time(video, mode):
    ds = sparse_set(video, "repeat", mode)
    if mode == "eval":
        got = ds[0]["x"].tolist()[:8]
        # one of the sampled frames, repeated: the middle one (frames[T // 2]) of the clip
        assert got == [SPARSE_8[4]] * 8
    else:
        x, _ = ds[0]
        assert x.shape == (2, 8)
        assert all(len(set(row.tolist())) == 1 for row in x)


def test_time_control_values_are_checked(video):
    with pytest.raises(ValueError, match="time_control"):
        sparse_set(video, "reverse")
