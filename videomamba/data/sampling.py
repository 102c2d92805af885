"""Which frames and which crops a video data set reads: the official loaders' index arithmetic.

Every function returns frame indices (0-based, presentation order) for one clip. ``view=None`` is the
training draw (random, from ``rng``, a ``numpy.random.Generator``); ``view=k`` is the deterministic test
clip ``k`` of ``num_views``; ``view=0, num_views=1`` is the validation clip. Rounding follows the
official code exactly: ``round`` is round-half-to-even (as ``np.round``) and ``int`` truncates.

- :func:`sparse_indices`: ``Kinetics_sparse`` (K400, Breakfast, COIN, LVU): TSN-style, one frame per
  segment of ``seg = (len - 1) / T``.
- :func:`ssv2_indices`: the SSv2 loader (two fixed temporal test views).
- :func:`dense_indices`: dense ``Kinetics``: ``T`` frames ``sampling_rate`` apart.
- :func:`interval_indices`: the video-text loaders' ``rand`` / ``middle``: one frame per equal interval.
- :func:`lvu_windows` / :func:`window_indices`: LVU's sliding windows over long videos.
- :func:`short_side_size` / :func:`test_crop_offsets`: the test resize and the crops along the long side.
"""
from __future__ import annotations

import numpy as np

from .defaults import SAMPLING_RATE, TIME_STRIDE, TRIMMED

__all__ = ["sparse_indices", "ssv2_indices", "dense_indices", "interval_indices", "clip_indices", "lvu_windows", "window_indices",
           "short_side_resize", "test_crop_offsets"]

SAMPLERS = ("sparse", "ssv2", "dense")


def _rng(rng: np.random.Generator | None) -> np.random.Generator:
    return rng if rng is not None else np.random.default_rng()


def _check(video_len: int, num_frames: int, view: int | None, num_views: int):
    if video_len < 1:
        raise ValueError(f"video_len must be >= 1, got {video_len} (a zero-frame video has nothing to sample)")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if view is not None and not 0 <= view < num_views:
        raise ValueError(f"view must be in [0, {num_views}), got {view}")


def sparse_indices(video_len: int, num_frames: int, view: int | None = None, num_views: int = 1,
                   rng: np.random.Generator | None = None) -> list[int]:
    """``Kinetics_sparse``: split ``[0, len-1]`` into ``num_frames`` segments of ``seg = (len-1)/T``.

    Training: frame ``i`` is uniform in ``[round(seg*i), round(seg*(i+1))]`` (both ends included).
    Test clip ``k`` of ``K``: ``round(seg*i) + int(seg/(K+1)*(k+1))``; validation is ``k=0`` of ``K=1``
    (the middle of each segment). Indices are capped at ``len-1``; a video shorter than ``num_frames``
    repeats frames.
    """
    _check(video_len, num_frames, view, num_views)
    seg = max(0.0, (video_len - 1) / num_frames)
    last = video_len - 1
    if view is None:
        g = _rng(rng)
        return [min(int(g.integers(round(seg * i), round(seg * (i + 1)), endpoint=True)), last)
                for i in range(num_frames)]
    offset = int(seg / (num_views + 1) * (view + 1))
    return [min(round(seg * i) + offset, last) for i in range(num_frames)]


def ssv2_indices(video_len: int, num_frames: int, view: int | None = None, num_views: int = 2,
                 rng: np.random.Generator | None = None) -> list[int]:
    """The SSv2 loader (TSN with ``num_frames`` segments).

    Training: ``avg = len // T``; frame ``i`` is ``i*avg + U[0, avg)``; when ``avg == 0`` (a video shorter
    than T) ``T`` sorted uniform draws from ``[0, len)`` if ``len > T``, else all zeros (official).
    Validation (``view=0, num_views=1``): segment middles ``int(tick/2 + tick*i)`` with ``tick = len/T``.
    Test (``num_views=2``): the ``T`` middles and the ``T`` segment starts ``int(tick*i)``, sorted together;
    view ``k`` takes every second one starting at ``k``. The official test loader always makes exactly
    these two temporal views, whatever ``--test_num_segment`` says, so other counts are refused.
    """
    if view is not None and num_views not in (1, 2):
        raise ValueError(f"ssv2_indices: the SSv2 test protocol has 2 temporal views (validation: 1), "
                         f"got num_views={num_views}")
    _check(video_len, num_frames, view, num_views)
    if view is None:
        g = _rng(rng)
        avg = video_len // num_frames
        if avg > 0:
            return [i * avg + int(r) for i, r in enumerate(g.integers(avg, size=num_frames))]
        if video_len > num_frames:   # unreachable when avg == 0, kept for fidelity with the loader's branches
            return sorted(int(r) for r in g.integers(video_len, size=num_frames))
        return [0] * num_frames
    tick = video_len / num_frames
    middles = [int(tick / 2.0 + tick * i) for i in range(num_frames)]
    if num_views == 1:
        return middles
    both = sorted(middles + [int(tick * i) for i in range(num_frames)])
    return both[view::2]


def dense_indices(video_len: int, num_frames: int, sampling_rate: int, view: int | None = None,
                  num_views: int = 1, rng: np.random.Generator | None = None) -> list[int]:
    """Dense ``Kinetics``: ``num_frames`` frames spanning ``L = num_frames * sampling_rate`` frames.

    Training: when the video is longer than ``L``, the clip ends at ``e ~ U[L, len)`` and its frames are
    ``linspace(e-L, e, T)`` truncated and clipped to ``[e-L, e-1]``; otherwise ``linspace(0, len, len//rate)``
    padded with ``len`` up to ``T`` and clipped to ``[0, len-1]``. Test clip ``k`` of ``K`` starts at
    ``int(k * max((len-L)/(K-1), 0))`` and takes every ``rate``-th frame up to ``min(start+L, len)``,
    repeating the last one up to ``T``.

    Deviations (official bugs): with ``K = 1`` the official test divides by zero; here the single clip is
    centred (``start = max((len-L)//2, 0)``), which is also used for validation, where the official
    formula gives negative frame indices.
    """
    _check(video_len, num_frames, view, num_views)
    if sampling_rate < 1:
        raise ValueError(f"sampling_rate must be >= 1, got {sampling_rate}")
    span = num_frames * sampling_rate
    if view is None:
        if video_len <= span:
            n = video_len // sampling_rate
            idx = np.concatenate((np.linspace(0, video_len, num=n), np.full(num_frames - n, float(video_len))))
            return np.clip(idx, 0, video_len - 1).astype(np.int64).tolist()
        end = int(_rng(rng).integers(span, video_len))
        start = end - span
        return np.clip(np.linspace(start, end, num=num_frames), start, end - 1).astype(np.int64).tolist()
    if num_views == 1:
        start = max((video_len - span) // 2, 0)
    else:
        start = int(view * max((video_len - span) / (num_views - 1), 0.0))
    idx = list(range(start, min(start + span, video_len), sampling_rate))
    return idx + [idx[-1]] * (num_frames - len(idx))


def interval_indices(video_len: int, num_frames: int, mode: str = "middle",
                     rng: np.random.Generator | None = None) -> list[int]:
    """The video-text (UMT) loaders: cut ``[0, len)`` into ``min(T, len)`` equal intervals at
    ``linspace(0, len, n + 1)`` (truncated to int); ``mode="rand"`` takes a uniform frame of each interval
    (training), ``"middle"`` its centre ``(start + end) // 2`` (evaluation). A video shorter than ``T``
    repeats its last index. (The official ``rand`` draws from ``range(start, end)``, which never picks an
    interval's last frame and falls back to a random subset when an interval is one frame long; here
    every frame of the interval can be drawn.)"""
    _check(video_len, num_frames, None, 1)
    if mode not in ("rand", "middle"):
        raise ValueError(f"mode must be 'rand' or 'middle', got {mode!r}")
    n = min(num_frames, video_len)
    edges = np.linspace(0, video_len, n + 1).astype(int)
    starts, ends = edges[:-1], edges[1:] - 1
    if mode == "middle":
        idx = [int((a + b) // 2) for a, b in zip(starts, ends)]
    else:
        g = _rng(rng)
        idx = [int(g.integers(a, b, endpoint=True)) for a, b in zip(starts, ends)]
    return idx + [idx[-1]] * (num_frames - n)


def clip_indices(sampler: str, video_len: int, num_frames: int, view: int | None = None, num_views: int = 1,
                 rng: np.random.Generator | None = None, sampling_rate: int = SAMPLING_RATE) -> list[int]:
    """The data sets' sampler by name: 'sparse', 'ssv2' or 'dense' (``sampling_rate`` is dense-only)."""
    if sampler == "sparse":
        return sparse_indices(video_len, num_frames, view, num_views, rng)
    if sampler == "ssv2":
        return ssv2_indices(video_len, num_frames, view, num_views, rng)
    if sampler == "dense":
        return dense_indices(video_len, num_frames, sampling_rate, view, num_views, rng)
    raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")


def lvu_windows(duration: float, trimmed: float = TRIMMED,
                time_stride: float = TIME_STRIDE) -> list[tuple[float, float]]:
    """LVU's windows ``(start_s, end_s)`` over a video of ``duration`` seconds.

    A video shorter than ``trimmed`` is one window ``(0, duration)``. Otherwise windows of ``trimmed``
    seconds start every ``time_stride`` seconds from 0 while ``start < int(duration)``; a window that
    runs past the end is kept, cut at ``duration``, only if at least ``trimmed / 2`` seconds remain.
    """
    if duration < trimmed:
        return [(0, duration)]
    windows = []
    for start in range(0, int(duration), int(time_stride)):
        end = start + trimmed
        if end > duration:
            if duration - start < trimmed / 2:
                continue
            end = duration
        windows.append((start, end))
    return windows


def window_indices(video_len: int, fps: float, start_s: float, end_s: float, num_frames: int,
                   view: int | None = None, num_views: int = 1, rng: np.random.Generator | None = None) -> list[int]:
    """Sparse sampling inside one LVU window: seconds become frames with the average ``fps``
    (``int(s * fps)``), clamped to the video; then :func:`sparse_indices` over the window's frames."""
    _check(video_len, num_frames, view, num_views)
    first = max(0, min(int(start_s * fps), video_len - 1))
    last = max(first, min(int(end_s * fps), video_len - 1))
    return [first + i for i in sparse_indices(last - first + 1, num_frames, view, num_views, rng)]


def short_side_resize(height: int, width: int, size: int) -> tuple[int, int]:
    """Frame size after resizing the short side to ``size`` (the long side truncated, as the official
    ``Resize``); unchanged when the short side already is ``size``."""
    if min(height, width) == size:
        return height, width
    if width < height:
        return int(size * height / width), size
    return size, int(size * width / height)


def test_crop_offsets(height: int, width: int, size: int, num_crops: int) -> list[tuple[int, int]]:
    """``(top, left)`` of each ``size x size`` test crop of a ``height x width`` frame after its short side
    is resized to ``size``: crop ``j`` starts at ``int(j * (long - size) / (num_crops - 1))`` along the long
    side (3 crops: left/top, centre, right/bottom); one crop is centred. A square frame gives the same crop
    ``num_crops`` times, as in the official loader."""
    if num_crops < 1:
        raise ValueError(f"num_crops must be >= 1, got {num_crops}")
    h, w = short_side_resize(height, width, size)
    long_side = max(h, w)
    if num_crops == 1:
        starts = [int((long_side - size) / 2)]
    else:
        step = (long_side - size) / (num_crops - 1)
        starts = [int(j * step) for j in range(num_crops)]
    return [(s, 0) if h >= w else (0, s) for s in starts]


test_crop_offsets.__test__ = False   # not a pytest test, despite its name
