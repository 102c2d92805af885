"""``videomamba bench loader`` (videomamba/bench/loader.py) end to end at a tiny scale, its workers arithmetic
by hand, and the loader speed-ups it led to in videomamba/data/video_transforms.py: VideoRandAugment gives
torchvision's RandAugment pixels bit for bit, and VideoTrainTransform the official order's values up to float
rounding, with the same random draws."""
import json
import math
import statistics

import numpy as np
import pytest
import torch

pytest.importorskip("av")
pytest.importorskip("torchvision")

from videomamba import cli  # noqa: E402
from videomamba.bench import loader  # noqa: E402


def test_loader_bench_tiny_end_to_end(tmp_path):
    gpu = tmp_path / "gpu.json"
    gpu.write_text(json.dumps({"device": "hand-made", "videomamba_tiny": {"8": 50.0}}))
    out = tmp_path / "out"
    payload = loader.run(gpu_speed=str(gpu), videos_dir=str(tmp_path / "videos"), readers=("pyav",), frames=(8,),
                         short_sides=(48,), workers=(0,), models=("videomamba_tiny",), num_videos=2, seconds=1,
                         batch=2, repeats=2, out_dir=str(out))
    for ext in ("json", "txt", "png"):
        assert (out / f"loader.{ext}").stat().st_size > 0
    first = (out / "loader.txt").read_text().splitlines()[0]
    assert "CPU" in first and "torch " in first and "PyAV " in first and "cores" in first

    vids = payload["videos"]["48"]   # 16:9, even sides, 1 s at 30 fps, H.264 with keyframes
    assert [(v["width"], v["height"], v["frames"]) for v in vids] == [(86, 48, 30)] * 2
    assert all(v["keyframes"][0] == 0 and v["kbit_per_s"] > 0 for v in vids)

    (r,) = payload["results"]
    assert (r["reader"], r["frames"], r["size"], r["workers"], r["short_side"]) == ("pyav", 8, 224, 0, 48)
    assert r["num_sample"] == 2 and r["clips_per_batch"] == 4   # the K400 recipe: 2 augmented copies per video
    assert r["auto_augment"] == "rand-m5-n2-mstd0.25-inc1"     # VideoMamba-Ti's recipe
    assert len(r["batch_seconds"]) == 2
    assert r["clips_per_s"] == pytest.approx(4 / statistics.median(r["batch_seconds"]), rel=1e-3)
    # one worker's figure: clips per CPU-second of the process
    assert r["per_worker_clips_per_s"] == pytest.approx(4 / statistics.median(r["batch_cpu_seconds"]), rel=1e-3)

    (w,) = payload["workers"]   # by hand: ceil(50 clips/s of the GPU / one worker's clips/s)
    need = math.ceil(50.0 / r["per_worker_clips_per_s"])
    assert (w["model"], w["frames"], w["gpu_clips_per_s"], w["gpu_source"]) == ("videomamba_tiny", 8, 50.0,
                                                                               "given (gpu.json)")
    assert w["workers_needed"] == need and w["ok"] == (need <= 8)
    assert payload["target"] == [w]
    text = (out / "loader.txt").read_text()
    assert f"{'ok    ' if need <= 8 else 'MISSED'}  pyav, short side 48: {need} workers" in text
    assert json.loads((out / "loader.json").read_text())["workers"] == payload["workers"]

    # the same measurement against other GPU speeds, without measuring again (through the CLI)
    # a GPU 20.5x one worker's speed, so this needs more than 8 workers on any machine (a fixed 1,000 clips/s
    # did not: a fast CPU decodes 150 clips/s per worker)
    fast_gpu = 20.5 * r["per_worker_clips_per_s"]
    gpu.write_text(json.dumps({"videomamba_tiny": {"8": fast_gpu}}))
    again = tmp_path / "again"
    assert cli.main(["bench", "loader", "--measured", str(out / "loader.json"), "--gpu-speed", str(gpu),
                     "--out", str(again)]) == 0
    (w2,) = json.loads((again / "loader.json").read_text())["workers"]
    assert w2["gpu_clips_per_s"] == fast_gpu
    assert w2["workers_needed"] == math.ceil(fast_gpu / r["per_worker_clips_per_s"]) == 21 and w2["ok"] is False


def test_workers_arithmetic_by_hand():
    res = [dict(model="videomamba_tiny", frames=8, reader="pyav", short_side=320, workers=w, per_worker_clips_per_s=pw)
           for w, pw in ((2, 30.0), (0, 9.5))]   # the in-process (0 workers) figure is the one used
    speeds = {("videomamba_tiny", 8): 75.0}
    (row,) = loader.workers_table(res, speeds, {("videomamba_tiny", 8): "x"}, frames_list=(8,))
    assert (row["per_worker_clips_per_s"], row["workers_needed"], row["ok"]) == (9.5, 8, True)   # 75 / 9.5 = 7.9
    res[1]["per_worker_clips_per_s"] = 9.3                                                         # 75 / 9.3 = 8.06
    assert loader.workers_table(res, speeds, {("videomamba_tiny", 8): "x"}, frames_list=(8,))[0]["workers_needed"] == 9
    res[1]["per_worker_clips_per_s"] = 7.5                                                         # exactly 10
    assert loader.workers_table(res, speeds, {("videomamba_tiny", 8): "x"}, frames_list=(8,))[0]["workers_needed"] == 10
    # S and M share a recipe, hence one measurement: both get a row, also when recomputed (--measured)
    shared = [dict(model="videomamba_small", models=["videomamba_small", "videomamba_middle"], frames=8, reader="pyav",
                   short_side=320, workers=0, per_worker_clips_per_s=9.0)]
    rows = loader.workers_table(loader._expand(shared), loader.DEFAULT_GPU_SPEED,
                                {k: "p" for k in loader.DEFAULT_GPU_SPEED}, frames_list=(8,))
    assert [(r["model"], r["workers_needed"]) for r in rows] == [("videomamba_small", math.ceil(23.1 / 9.0)),
                                                                  ("videomamba_middle", math.ceil(8.4 / 9.0))]
    # the placeholders: 1.09e12 MAC/s over the full forward GMACs
    assert loader.DEFAULT_GPU_SPEED[("videomamba_tiny", 8)] == round(195 * 5.6e9 / 14.569e9, 1) == 75.0


def test_gpu_speed_from_a_model_bench_json(tmp_path):
    rows = [dict(model="videomamba_tiny", frames=8, mode="train", batch=128, batch_spec="official", img_size=224,
                 scan_backend=sb, clips_per_s=v, status="ok") for sb, v in (("triton", 40.0), ("mamba_ssm", 90.0))]
    rows += [dict(model="videomamba_tiny", frames=8, mode="train", batch=1, batch_spec=1, img_size=224,
                  clips_per_s=3.0, status="ok"),
             dict(model="videomamba_tiny", frames=8, mode="infer", batch=128, batch_spec="official", img_size=224,
                  clips_per_s=900.0, status="ok"),
             dict(model="videomamba_small", frames=8, mode="train", batch=64, batch_spec="official", img_size=224,
                  clips_per_s=None, status="OOM")]
    f = tmp_path / "model.json"
    f.write_text(json.dumps({"device": "some GPU", "results": rows}))
    speeds, sources, device = loader.load_gpu_speed(f)
    assert device == "some GPU"
    assert speeds[("videomamba_tiny", 8)] == 90.0 and sources[("videomamba_tiny", 8)].startswith("measured, batch 128")
    assert "mamba_ssm" in sources[("videomamba_tiny", 8)]
    assert sources[("videomamba_small", 8)] == "placeholder"   # OOM: not a speed
    assert speeds[("videomamba_small", 8)] == loader.DEFAULT_GPU_SPEED[("videomamba_small", 8)]


def _clips():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:36, 0:52]
    smooth = np.stack([(xx * 5 + t * 3) % 256 for t in range(3)])[..., None].repeat(3, -1)
    smooth[..., 1] = (yy * 7)[None] % 256
    return [smooth.astype(np.uint8),                                       # structured (equalize, contrast, shift)
            rng.integers(0, 256, (2, 47, 65, 3), dtype=np.uint8),          # odd size
            rng.integers(0, 256, (2, 6, 9, 3), dtype=np.uint8)]            # tiny: shifts past the edge


def test_video_rand_augment_is_torchvision_bit_for_bit():
    from torchvision.transforms import InterpolationMode, v2

    from videomamba.data.video_transforms import VideoRandAugment, _to_video

    fast = VideoRandAugment(1, 7, 11, InterpolationMode.BILINEAR)
    ra = fast.ra
    for clip in _clips():
        x = _to_video(clip)   # (T, 3, H, W) view of (T, H, W, 3) memory, as the readers' frames arrive
        h, w = x.shape[-2:]
        for op, (magnitudes_fn, signed) in ra._AUGMENTATION_SPACE.items():
            mags = magnitudes_fn(11, h, w)
            for value in ([0.0] if mags is None else [float(m) * s for m in mags for s in ((1, -1) if signed else (1,))]):
                want = ra._apply_image_or_video_transform(x, op, value, interpolation=ra.interpolation, fill=ra._fill)
                got = fast.apply(x, op, value)
                assert torch.equal(got.as_subclass(torch.Tensor), want.as_subclass(torch.Tensor)), (op, value, clip.shape)
    for n, m in ((2, 5), (4, 7)):   # whole chains: the same draws from torch's generator, the same pixels
        ref = v2.RandAugment(num_ops=n, magnitude=m, num_magnitude_bins=11, interpolation=InterpolationMode.BILINEAR)
        new = VideoRandAugment(num_ops=n, magnitude=m, num_magnitude_bins=11, interpolation=InterpolationMode.BILINEAR)
        for seed in range(40):
            clip = _clips()[seed % 2]
            torch.manual_seed(seed)
            want, after_ref = ref(_to_video(clip)), torch.rand(())
            torch.manual_seed(seed)
            got, after_new = new(_to_video(clip)), torch.rand(())
            assert type(got) is type(want) and torch.equal(got.as_subclass(torch.Tensor), want.as_subclass(torch.Tensor))
            assert after_new == after_ref


def test_train_transform_equals_the_official_order():
    """RandAugment -> [0, 1] -> normalise -> random resized crop -> flip -> erasing, built from torchvision
    directly: same draws, values within float rounding (the normalisation now runs after the crop)."""
    from torchvision.transforms import InterpolationMode, v2

    from videomamba.data.video_io import IMAGENET_MEAN, IMAGENET_STD
    from videomamba.data.video_transforms import VideoTrainTransform, _to_video

    official = v2.Compose([
        v2.RandAugment(num_ops=4, magnitude=7, num_magnitude_bins=11, interpolation=InterpolationMode.BILINEAR),
        v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(IMAGENET_MEAN), list(IMAGENET_STD)),
        v2.RandomResizedCrop(32, scale=(0.08, 1.0), ratio=(0.75, 4 / 3), interpolation=InterpolationMode.BILINEAR,
                             antialias=False),
        v2.RandomHorizontalFlip(0.5), v2.RandomErasing(0.25, value="random")])
    ours = VideoTrainTransform(32, "rand-m7-n4-mstd0.5-inc1", reprob=0.25)
    clip = _clips()[1]
    for seed in range(30):
        torch.manual_seed(seed)
        want = official(_to_video(clip)).as_subclass(torch.Tensor).permute(1, 0, 2, 3)
        after_ref = torch.rand(())
        torch.manual_seed(seed)
        got = ours(clip)
        assert torch.rand(()) == after_ref
        assert got.shape == (3, 2, 32, 32)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="platform: no fork")
def test_closed_pyav_readers_leave_nothing_for_a_forked_worker(tmp_path):
    """Found by the bench (0 workers, then 2): a closed reader stayed in a reference cycle with its decoding
    generator, and when a forked DataLoader worker's garbage collector freed it, swscale joined threads that
    exist only in the parent: the worker hung for ever."""
    import gc
    import multiprocessing

    from videomamba.data.decode import open_video

    (video,) = loader.make_videos(tmp_path, (48,), num_videos=1, seconds=1, log=lambda *_: None)[48]
    gc.disable()   # as if the collector had not run between the reads and the fork
    try:
        for _ in range(3):
            with open_video(video["path"], "pyav") as r:
                r.get_frames([3, 20, 29])
        child = multiprocessing.get_context("fork").Process(target=gc.collect)
        child.start()
        child.join(30)
        hung = child.is_alive()
        if hung:
            child.kill()
    finally:
        gc.enable()
    assert not hung and child.exitcode == 0
