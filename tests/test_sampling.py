"""Frame indices and test crops equal the official loaders' arithmetic (values worked out by hand from
the formulas of docs/design.md §3.2, including round-half-to-even and short videos)."""
import numpy as np
import pytest

from videomamba.data.sampling import (dense_indices, lvu_windows, short_side_resize, sparse_indices, ssv2_indices,
                                      test_crop_offsets, window_indices)

# (video_len, num_frames, view, num_views) -> indices. seg = (len-1)/T; index i = round(seg*i) + int(seg/(K+1)*(k+1)).
SPARSE_TABLE = [
    ((300, 8, 0, 1), [18, 55, 93, 130, 168, 205, 242, 280]),     # seg 37.375, offset int(18.6875) = 18
    ((300, 8, 0, 4), [7, 44, 82, 119, 157, 194, 231, 269]),      # offset int(7.475) = 7; round(149.5) = 150 (even)
    ((300, 8, 1, 4), [14, 51, 89, 126, 164, 201, 238, 276]),
    ((300, 8, 2, 4), [22, 59, 97, 134, 172, 209, 246, 284]),
    ((300, 8, 3, 4), [29, 66, 104, 141, 179, 216, 253, 291]),
    ((11, 4, 0, 1), [1, 3, 6, 9]),                               # seg 2.5: round(2.5) = 2, round(7.5) = 8
    ((21, 4, 0, 1), [2, 7, 12, 17]),
    ((4, 8, 0, 1), [0, 0, 1, 1, 2, 2, 2, 3]),                    # shorter than num_frames: repeats
    ((4, 8, 3, 4), [0, 0, 1, 1, 2, 2, 2, 3]),
    ((1, 4, 0, 1), [0, 0, 0, 0]),
    ((16, 8, 0, 4), [0, 2, 4, 6, 8, 9, 11, 13]),                 # the Moving Digits clips: seg 1.875
    ((16, 8, 3, 4), [1, 3, 5, 7, 9, 10, 12, 14]),
]


@pytest.mark.parametrize("args,expected", SPARSE_TABLE)
def test_sparse_views_match_the_official_formula(args, expected):
    assert sparse_indices(*args) == expected


@pytest.mark.parametrize("video_len,num_frames", [(300, 8), (11, 4), (4, 8), (64, 16), (1, 3), (1000, 64)])
def test_sparse_training_draw_stays_in_each_segment_and_reaches_both_ends(video_len, num_frames):
    rng = np.random.default_rng(0)
    seg = max(0.0, (video_len - 1) / num_frames)
    lo = np.array([round(seg * i) for i in range(num_frames)])
    hi = np.minimum([round(seg * (i + 1)) for i in range(num_frames)], video_len - 1)
    draws = np.array([sparse_indices(video_len, num_frames, rng=rng) for _ in range(400)])
    assert ((draws >= lo) & (draws <= hi)).all()
    assert (draws.min(0) == lo).all() and (draws.max(0) == hi).all()   # randint includes both ends
    again = [sparse_indices(video_len, num_frames, rng=np.random.default_rng(7)) for _ in range(2)]
    assert again[0] == again[1]


def test_ssv2_views():
    # tick = 50/8 = 6.25: middles int(3.125 + 6.25 i), starts int(6.25 i); sorted together, views take [k::2]
    middles = [3, 9, 15, 21, 28, 34, 40, 46]
    starts = [0, 6, 12, 18, 25, 31, 37, 43]
    assert ssv2_indices(50, 8, view=0, num_views=1) == middles
    assert ssv2_indices(50, 8, view=0, num_views=2) == starts
    assert ssv2_indices(50, 8, view=1, num_views=2) == middles
    # 10 frames, T=4: tick 2.5, middles [1, 3, 6, 8], starts [0, 2, 5, 7] -> sorted [0,1,2,3,5,6,7,8]
    assert ssv2_indices(10, 4, view=0) == [0, 2, 5, 7] and ssv2_indices(10, 4, view=1) == [1, 3, 6, 8]
    with pytest.raises(ValueError, match="2 temporal views"):
        ssv2_indices(50, 8, view=0, num_views=4)


def test_ssv2_training_draw():
    rng = np.random.default_rng(0)
    draws = np.array([ssv2_indices(50, 8, rng=rng) for _ in range(300)])   # avg = 6: i*6 + U[0, 6)
    base = np.arange(8) * 6
    assert ((draws >= base) & (draws < base + 6)).all() and (draws.max(0) == base + 5).all()
    assert ssv2_indices(5, 8, rng=rng) == [0] * 8   # shorter than T: all zeros, as the official loader


def test_dense_views_and_training():
    # span 32, K=3: step (100-32)/2 = 34
    assert dense_indices(100, 8, 4, view=0, num_views=3) == list(range(0, 32, 4))
    assert dense_indices(100, 8, 4, view=1, num_views=3) == list(range(34, 66, 4))
    assert dense_indices(100, 8, 4, view=2, num_views=3) == list(range(68, 100, 4))
    assert dense_indices(20, 8, 4, view=1, num_views=2) == [0, 4, 8, 12, 16, 16, 16, 16]   # short: last repeated
    assert dense_indices(100, 8, 4, view=0, num_views=1) == list(range(34, 66, 4))          # centred (see doc)
    assert dense_indices(20, 8, 4, rng=np.random.default_rng(0)) == [0, 5, 10, 15, 19, 19, 19, 19]
    rng = np.random.default_rng(1)
    for _ in range(100):
        idx = dense_indices(100, 8, 4, rng=rng)
        end = idx[0] + 32
        assert 32 <= end < 100 and idx == np.clip(np.linspace(end - 32, end, 8), end - 32, end - 1).astype(int).tolist()


def test_lvu_windows_and_indices():
    assert lvu_windows(100, 60, 16) == [(0, 60), (16, 76), (32, 92), (48, 100), (64, 100)]   # 80..100 < 30 s: dropped
    assert lvu_windows(50, 60, 16) == [(0, 50)]
    assert lvu_windows(60, 60, 16) == [(0, 60), (16, 60)]
    # 30 fps: window (16 s, 76 s) = frames 480..2280, sparse inside
    assert window_indices(3000, 30.0, 16, 76, 8, view=0) == [480 + i for i in sparse_indices(1801, 8, 0, 1)]
    # a window past the decoded end is clamped to the last frame
    assert window_indices(100, 30.0, 48, 100, 4, view=0) == [99] * 4


def test_test_crops_along_the_long_side():
    assert short_side_resize(256, 340, 224) == (224, 297)
    assert test_crop_offsets(256, 340, 224, 3) == [(0, 0), (0, 36), (0, 73)]   # step (297-224)/2 = 36.5
    assert test_crop_offsets(340, 256, 224, 3) == [(0, 0), (36, 0), (73, 0)]
    assert test_crop_offsets(256, 340, 224, 1) == [(0, 36)]
    assert test_crop_offsets(64, 64, 64, 3) == [(0, 0)] * 3
    assert test_crop_offsets(224, 398, 224, 2) == [(0, 0), (0, 174)]


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="zero-frame"):
        sparse_indices(0, 8)
    with pytest.raises(ValueError, match="view"):
        sparse_indices(100, 8, view=4, num_views=4)


def test_clip_indices_dispatches_by_sampler_name():
    from videomamba.data.sampling import clip_indices

    assert clip_indices("sparse", 300, 8, 1, 4) == sparse_indices(300, 8, 1, 4)
    assert clip_indices("ssv2", 50, 8, 1, 2) == ssv2_indices(50, 8, 1, 2)
    assert clip_indices("dense", 100, 8, 2, 3, sampling_rate=4) == dense_indices(100, 8, 4, 2, 3)
    with pytest.raises(ValueError, match="sampler"):
        clip_indices("lvu", 100, 8, 0, 1)


def test_interval_indices_rand_and_middle():
    import numpy as np

    from videomamba.data.sampling import interval_indices

    # 16 frames, 8 intervals of 2: middles are the first frame of each pair
    assert interval_indices(16, 8, "middle") == [0, 2, 4, 6, 8, 10, 12, 14]
    # 10 frames, 4 intervals at linspace(0, 10, 5) = 0, 2.5, 5, 7.5, 10 -> [0,1], [2,4], [5,6], [7,9]
    assert interval_indices(10, 4, "middle") == [0, 3, 5, 8]
    rng = np.random.default_rng(0)
    seen = [set() for _ in range(4)]
    for _ in range(300):
        for i, f in enumerate(interval_indices(10, 4, "rand", rng)):
            seen[i].add(f)
    assert seen == [{0, 1}, {2, 3, 4}, {5, 6}, {7, 8, 9}]   # every frame of every interval, nothing else
    assert interval_indices(3, 8, "middle") == [0, 1, 2, 2, 2, 2, 2, 2]   # short video: the last repeats
    with pytest.raises(ValueError, match="mode"):
        interval_indices(10, 4, "uniform")
