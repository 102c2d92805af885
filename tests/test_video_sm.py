"""video_sm end to end on the embedded Moving Digits videos: it learns, resumes exactly, writes
results.json / plots, and a 2-process evaluation equals a 1-process one."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("av")
pytest.importorskip("sklearn")

from video_sm.finetune import main  # noqa: E402

CONFIG = "configs/video_sm/moving_digits.yaml"
ROOT = Path(__file__).parents[1]
# A small model on a subset: the test is about the pipeline, the full recipe is the README's main job.
SMALL = ["model.kwargs.depth=2", "model.kwargs.embed_dim=64", "data.limit_videos=96", "data.batch_size=8",
         "data.eval_batch_size=32", "test.num_views=2", "test.num_crops=3"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from videomamba.data.moving_digits import make_video_variant

    root = tmp_path_factory.mktemp("md")
    make_video_variant(root)
    return root


def _args(run, data_root, *opts):
    return ["--config", CONFIG, "--no-progress", "--opts", f"output_dir={run}", f"data.root={data_root}", *SMALL, *opts]


def _lines(path):
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


def test_train_resume_test_and_eval(tmp_path, data_root):
    run = tmp_path / "run"
    main(_args(run, data_root, "train.epochs=1"))
    res = main(_args(run, data_root, "train.epochs=2"))   # resumes at epoch 1
    assert [e["epoch"] for e in _lines(run / "log.txt")] == [0, 1]
    straight = tmp_path / "straight"
    main(_args(straight, data_root, "train.epochs=2"))
    # the interrupted run continues exactly: same loss and lr at every step, same test result
    assert _lines(run / "train_steps.jsonl") == _lines(straight / "train_steps.jsonl")
    saved = json.loads((run / "results.json").read_text())
    assert saved == {**json.loads((straight / "results.json").read_text()),
                     "eval_seconds": saved["eval_seconds"], "wall_seconds": saved["wall_seconds"],
                     "weights": saved["weights"]}
    for key in ("acc1", "acc5", "num_videos", "num_views", "skipped"):
        assert key in saved
    assert saved["num_videos"] == 96 and saved["num_views"] == 96 * 2 * 3 and saved["skipped"] == []
    assert res["acc1"] == saved["acc1"]
    assert {"curves.png", "confusion.png", "checkpoint-best.pth", "config.yaml"} <= {p.name for p in run.iterdir()}
    # --eval of the best checkpoint gives the same multi-view result
    again = main(["--config", CONFIG, "--no-progress", "--eval", "--checkpoint", str(run / "checkpoint-best.pth"),
                  "--opts", f"output_dir={tmp_path / 'ev'}", f"data.root={data_root}", *SMALL])
    assert again["acc1"] == saved["acc1"] and again["num_views"] == saved["num_views"]


def test_two_process_evaluation_equals_one(tmp_path, data_root):
    run = tmp_path / "run"
    main(_args(run, data_root, "train.epochs=1"))
    ckpt = str(run / "checkpoint-best.pth")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29671", "-m",
           "video_sm.finetune", "--config", CONFIG, "--no-progress", "--eval", "--checkpoint", ckpt, "--opts",
           f"output_dir={tmp_path / 'two'}", f"data.root={data_root}", *SMALL]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = main(["--config", CONFIG, "--no-progress", "--eval", "--checkpoint", ckpt, "--opts",
                f"output_dir={tmp_path / 'one'}", f"data.root={data_root}", *SMALL])
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert two["num_videos"] == one["num_videos"] == 96 and two["num_views"] == one["num_views"]
    assert two["acc1"] == pytest.approx(one["acc1"]) and two["acc5"] == pytest.approx(one["acc5"])


def test_bad_checkpoint_is_one_line(tmp_path, data_root):
    bad = tmp_path / "bad.pth"
    bad.write_text("this is not a checkpoint\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "video_sm.finetune", "--config", CONFIG, "--eval", "--checkpoint",
                           str(bad), "--opts", f"output_dir={tmp_path / 'o'}", f"data.root={data_root}", *SMALL],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(bad) in lines[0] and "Traceback" not in proc.stderr
