"""video_sm masked pretraining end to end on the embedded Moving Digits videos with a tiny random CLIP
teacher: it runs, lowers the alignment loss, resumes exactly, runs under 2-process DDP with its frozen
blocks, and video_sm.finetune starts from the student it writes."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("av")
pytest.importorskip("sklearn")

import videomamba  # noqa: E402
from videomamba.models import model_from_config  # noqa: E402
from video_sm.pretrain import main  # noqa: E402
from videomamba.models.clip_teacher import CLIPTeacher, build_clip_vit, convert_clip  # noqa: E402

CONFIG = "configs/video_sm/moving_digits_pretrain.yaml"
ROOT = Path(__file__).parents[1]
SMALL = ["model.kwargs.depth=2", "model.kwargs.embed_dim=64", "model.kwargs.clip_decoder_embed_dim=64",
         "model.kwargs.clip_output_dim=48", "data.limit_videos=48", "data.batch_size=8", "data.eval_batch_size=24"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from videomamba.data.moving_digits import make_video_variant

    root = tmp_path_factory.mktemp("md")
    make_video_variant(root)
    return root


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    """A random CLIP-architecture tower with the student's 2x2 grid (32 px, patch 16), 48-d targets."""
    torch.manual_seed(0)
    teacher = CLIPTeacher(build_clip_vit(img_size=32, patch_size=16, width=64, layers=2),
                          torch.nn.Parameter(torch.randn(64, 48) * 0.1))
    return convert_clip(teacher, tmp_path_factory.mktemp("teacher") / "teacher.pth")


def _args(run, data_root, teacher_file, *opts):
    return ["--config", CONFIG, "--no-progress", "--opts", f"output_dir={run}", f"data.root={data_root}",
            f"teacher.path={teacher_file}", *SMALL, *opts]


def _lines(path):
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


def test_pretrain_learns_and_resumes_exactly(tmp_path, data_root, teacher_file):
    run = tmp_path / "run"
    main(_args(run, data_root, teacher_file, "train.epochs=1"))
    main(_args(run, data_root, teacher_file, "train.epochs=3"))      # resumes at epoch 1
    log = _lines(run / "log.txt")
    assert [e["epoch"] for e in log] == [0, 1, 2]
    assert log[-1]["val_loss"] < log[0]["val_loss"]                  # the student moves towards the teacher
    straight = tmp_path / "straight"
    main(_args(straight, data_root, teacher_file, "train.epochs=3"))
    # the interrupted run continues exactly: the same masks, losses and lr at every step
    assert _lines(run / "train_steps.jsonl") == _lines(straight / "train_steps.jsonl")
    assert [e["val_loss"] for e in log] == [e["val_loss"] for e in _lines(straight / "log.txt")]
    assert {"curves.png", "checkpoint-best.pth", "checkpoint-latest.pth", "config.yaml"} <= {p.name for p in run.iterdir()}

    # the checkpoint holds the official pretrain layout and loads strictly into a rebuilt student ...
    ckpt = run / "checkpoint-best.pth"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    student = model_from_config(state["extra"]["model_config"])   # the student's own config, saved by the run
    assert type(student).__name__ == "VideoMambaPretrain"
    assert videomamba.load_checkpoint(student, ckpt, strict=True).clean
    assert "norm.weight" in state["model"] and "clip_decoder.0.head.weight" in state["model"]
    # ... whose last block never moved (the official target gives it no gradient)
    fresh = torch.load(tmp_path / "run" / "checkpoint-latest.pth", weights_only=True)["model"]
    torch.manual_seed(0)
    init = model_from_config(state["extra"]["model_config"]).state_dict()
    assert torch.equal(fresh["layers.1.mixer.in_proj.weight"], init["layers.1.mixer.in_proj.weight"])
    assert not torch.equal(fresh["layers.0.mixer.in_proj.weight"], init["layers.0.mixer.in_proj.weight"])

    # --eval measures the same validation loss as the run's best epoch
    res = main(["--config", CONFIG, "--no-progress", "--eval", "--checkpoint", str(ckpt), "--opts",
                f"output_dir={tmp_path / 'ev'}", f"data.root={data_root}", f"teacher.path={teacher_file}", *SMALL])
    assert res["loss"] == pytest.approx(min(e["val_loss"] for e in log), rel=1e-5)

    # video_sm.finetune starts from the student (clip decoder skipped, norm -> norm_f, new head)
    from video_sm.finetune import main as finetune

    out = finetune(["--config", "configs/video_sm/moving_digits.yaml", "--no-progress", "--opts",
                    f"output_dir={tmp_path / 'ft'}", f"data.root={data_root}", f"model.finetune={ckpt}",
                    "model.kwargs.depth=2", "model.kwargs.embed_dim=64", "data.limit_videos=48", "data.batch_size=8",
                    "train.epochs=1", "test.num_views=1", "test.num_crops=1"])
    assert out["num_videos"] == 48
    ft = torch.load(tmp_path / "ft" / "checkpoint-latest.pth", weights_only=True)["model"]
    assert "clip_decoder.0.head.weight" not in ft and "head.weight" in ft


@pytest.mark.parametrize("kind", ["random", "tube"])
def test_other_mask_types_run(tmp_path, data_root, teacher_file, kind):
    stats = main(_args(tmp_path / kind, data_root, teacher_file, "train.epochs=1", f"mask.type={kind}",
                       "data.limit_videos=16"))
    assert 0 < stats["val_loss"] < 4 and stats["val_cos"] == pytest.approx(1 - stats["val_loss"] / 2)
    extra = torch.load(tmp_path / kind / "checkpoint-latest.pth", weights_only=True)["extra"]
    assert extra["mask"] == {"type": kind, "ratio": 0.8}


def test_teacher_must_fit_the_student(tmp_path, data_root, teacher_file):
    with pytest.raises(ValueError, match="clip_output_dim"):
        main(_args(tmp_path / "a", data_root, teacher_file, "model.kwargs.clip_output_dim=32"))
    with pytest.raises(ValueError, match="patch grid"):
        main(_args(tmp_path / "b", data_root, teacher_file, "model.kwargs.patch_size=16"))


@pytest.mark.parametrize("engine", ["ddp", "deepspeed"])
def test_two_process_pretraining(tmp_path, data_root, teacher_file, engine):
    """DDP (or DeepSpeed ZeRO-2) with the frozen last block (no find_unused_parameters needed) and the
    teacher on every rank."""
    extra = []
    if engine == "deepspeed":
        pytest.importorskip("deepspeed", reason="deepspeed not installed (pip install 'videomamba[deepspeed]')")
        extra = ["train.deepspeed.enabled=true", "train.deepspeed.stage=2"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    port = 29673 if engine == "ddp" else 29674
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}", "-m",
           "video_sm.pretrain", *_args(tmp_path / "two", data_root, teacher_file, "train.epochs=1",
                                       "data.limit_videos=32", *extra)]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    if engine == "deepspeed":
        assert "DeepSpeed" in proc.stdout
    log = _lines(tmp_path / "two" / "log.txt")
    assert len(log) == 1 and log[0]["val_loss"] > 0
    state = torch.load(tmp_path / "two" / "checkpoint-latest.pth", map_location="cpu", weights_only=True)
    torch.manual_seed(0)
    init = model_from_config(state["extra"]["model_config"]).state_dict()
    for k in ("layers.1.mixer.in_proj.weight", "norm.weight"):       # frozen: bit-identical to the init
        assert torch.equal(state["model"][k], init[k]), k
    assert not torch.equal(state["model"]["layers.0.mixer.in_proj.weight"], init["layers.0.mixer.in_proj.weight"])
