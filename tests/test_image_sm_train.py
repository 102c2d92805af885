"""image_sm end to end on the embedded data: resume (in process and after a SIGKILL of the whole script),
2-process torchrun replicas, eval against an independent computation, DeepSpeed ZeRO-2, distillation."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from image_sm.train import main

CONFIG = "configs/image_sm/moving_digits_tiny.yaml"
SMALL = ["model.kwargs.depth=1", "model.kwargs.embed_dim=32"]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parents[1]))


def steps(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "train_steps.jsonl").read_text().splitlines()]


def epochs(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.txt").read_text().splitlines()]


def test_train_resume_and_eval(tmp_path):
    base = ["--config", CONFIG, "--no-progress", "--opts", f"output_dir={tmp_path / 'run'}",
            f"data.root={tmp_path / 'data'}", *SMALL]
    first = main(base + ["train.epochs=1"])
    assert 0 <= first["val_acc1"] <= 100 and first["train_loss"] > 0
    run = tmp_path / "run"
    assert {"config.yaml", "log.txt", "train_steps.jsonl", "checkpoint-latest.pth", "checkpoint-best.pth"} \
        <= {p.name for p in run.iterdir()}
    second = main(base + ["train.epochs=2"])          # resumes at epoch 1 from checkpoint-latest.pth
    assert [e["epoch"] for e in epochs(run)] == [0, 1]
    assert [s["step"] for s in steps(run)] == list(range(len(steps(run))))
    stats = main(base[:3] + ["--eval"] + base[3:])
    best = max(e["val_acc1"] for e in epochs(run))
    assert abs(stats["acc1"] - best) < 1e-4 and abs(second["best_acc1"] - best) < 1e-4   # log.txt rounds to 1e-6


def _train_cmd(run: Path, data: Path, *opts: str, nproc: int = 0, port: int = 29650) -> list[str]:
    launcher = ([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={port}"]
                if nproc else [sys.executable])
    return launcher + ["-m", "image_sm.train", "--config", CONFIG, "--no-progress", "--opts",
                       f"output_dir={run}", f"data.root={data}", *SMALL, *opts]


def _kill_after_first_epoch(cmd: list[str], run: Path):
    """Start ``cmd``, SIGKILL its whole process group once epoch 0 is logged (its checkpoint is written
    before), check that no later epoch was logged, then run the same command again to the end."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not ((run / "log.txt").is_file() and (run / "log.txt").read_text().strip()):
        assert proc.poll() is None and time.time() < deadline, "the run ended before it could be interrupted"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(epochs(run)) == 1, "killed too late to test resuming"
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert "resumed from" in r.stdout
    return r


def test_killed_run_resumes_with_the_same_loss_sequence(tmp_path):
    """SIGKILL the whole script during epoch 1, start it again: the steps it logs (every step's loss)
    and the final weights equal those of a run that was never interrupted."""
    opts = ["train.epochs=3", "train.warmup_epochs=0", "aug.reprob=0.25", "model.drop_path_rate=0.1"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    subprocess.run(_train_cmd(full, tmp_path / "data", *opts), env=ENV, check=True, capture_output=True, timeout=300)

    _kill_after_first_epoch(_train_cmd(cut, tmp_path / "data", *opts), cut)

    assert steps(cut) == steps(full)                      # every step's loss and lr, bit for bit
    assert [e["epoch"] for e in epochs(cut)] == [0, 1, 2]
    a = torch.load(full / "checkpoint-latest.pth", weights_only=False)["model"]
    b = torch.load(cut / "checkpoint-latest.pth", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


# Runs image_sm.train and saves each rank's final weights, to compare replicas from outside the engine.
RANK_DUMP = textwrap.dedent("""
    import sys, torch
    from videomamba.engine.runner import TrainingRun
    fit = TrainingRun.fit
    def fit_and_dump(self):
        stats = fit(self)
        torch.save(self.model.state_dict(), f"{self.out}/rank{self.info.rank}.pt")
        torch.save(self.ema.module.state_dict(), f"{self.out}/ema{self.info.rank}.pt")
        return stats
    TrainingRun.fit = fit_and_dump
    from image_sm.train import main
    main(sys.argv[1:])
""")


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """2-process torchrun (gloo) training, 4 epochs, with an EMA."""
    tmp = tmp_path_factory.mktemp("ddp")
    script = tmp / "dump.py"
    script.write_text(RANK_DUMP)
    cmd = _train_cmd(tmp / "run", tmp / "data", "train.epochs=4", "train.warmup_epochs=0", "train.ema_decay=0.9",
                     nproc=2, port=29651)
    cmd[cmd.index("-m", 3):cmd.index("-m", 3) + 2] = [str(script)]
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    return tmp


def test_two_process_replicas_stay_identical(ddp_run):
    for name in ("rank", "ema"):   # the model and its EMA (which must start from the broadcast weights)
        a = torch.load(ddp_run / "run" / f"{name}0.pt")
        b = torch.load(ddp_run / "run" / f"{name}1.pt")
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert "val_acc1_ema" in epochs(ddp_run / "run")[-1]
    assert [e["epoch"] for e in epochs(ddp_run / "run")] == [0, 1, 2, 3]


def test_eval_top1_equals_an_independent_computation(ddp_run):
    """--eval on the run's best checkpoint vs. reading val.txt, the PNGs and the weights by hand."""
    from PIL import Image

    import videomamba

    run, data = ddp_run / "run", ddp_run / "data"
    stats = main(["--config", CONFIG, "--no-progress", "--eval", "--opts", f"output_dir={run}", f"data.root={data}",
                  *SMALL])
    model = videomamba.create_model("videomamba_tiny", num_classes=10, img_size=32, patch_size=8, depth=1,
                                    embed_dim=32).eval()
    model.load_state_dict(torch.load(run / "checkpoint-best.pth", weights_only=False)["model"])
    root = next(p for p in data.rglob("val.txt")).parent
    lines = (root / "val.txt").read_text().split("\n")
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    correct = 0
    for line in filter(None, lines):
        rel, label = line.rsplit(" ", 1)
        img = (np.asarray(Image.open(root / rel).convert("RGB"), dtype=np.float64) / 255 - mean) / std
        with torch.no_grad():
            logits = model(torch.tensor(img, dtype=torch.float32).permute(2, 0, 1)[None])
        correct += int(logits.argmax(1).item() == int(label))
    n = sum(1 for line in lines if line)
    assert stats["n"] == n
    assert stats["acc1"] == pytest.approx(100 * correct / n, abs=1e-9)
    assert stats["acc1"] > 20       # well above chance (10%): the checkpoint is a trained one
    assert stats["acc1"] == pytest.approx(max(e["val_acc1"] for e in epochs(run)), abs=1e-4)


def test_deepspeed_zero2_step_matches_ddp(ddp_run, tmp_path):
    pytest.importorskip("deepspeed", reason="deepspeed not installed (pip install 'videomamba[deepspeed]')")
    """ZeRO-2 across 2 processes, killed after epoch 0 and resumed from its partitioned optimiser state:
    the same per-step losses as the DDP run (ZeRO-2 is DDP + AdamW on shards: the same math)."""
    run = tmp_path / "ds"
    cmd = _train_cmd(run, ddp_run / "data", "train.epochs=4", "train.warmup_epochs=0", "train.ema_decay=0.9",
                     "train.deepspeed.enabled=true", "train.deepspeed.stage=2", nproc=2, port=29652)
    r = _kill_after_first_epoch(cmd, run)
    assert "DeepSpeed" in r.stdout
    best_tag = torch.load(run / "checkpoint-best.pth")["extra"]["deepspeed_tag"]
    assert {d.name for d in (run / "deepspeed").glob("epoch*")} == {"epoch3", best_tag}   # older tags pruned
    ds_losses = [s["loss"] for s in steps(run)]
    ddp_losses = [s["loss"] for s in steps(ddp_run / "run")]
    assert len(ds_losses) == len(ddp_losses)
    np.testing.assert_allclose(ds_losses, ddp_losses, rtol=1e-5, atol=1e-6)
    assert [e["epoch"] for e in epochs(run)] == [0, 1, 2, 3]


def test_self_distillation_trains_the_projector_and_keeps_the_teacher(tmp_path):
    import videomamba

    teacher = videomamba.create_model("videomamba_tiny", num_classes=10, img_size=32, patch_size=8, depth=1,
                                      embed_dim=48)
    teacher_path = tmp_path / "teacher.pth"
    torch.save({"model": teacher.state_dict()}, teacher_path)
    run = tmp_path / "run"
    main(["--config", CONFIG, "--no-progress", "--opts", f"output_dir={run}", f"data.root={tmp_path / 'data'}",
          *SMALL, "train.epochs=1", "distill.enabled=true", "+distill.teacher=videomamba_tiny",
          f"+distill.teacher_checkpoint={teacher_path}",
          "+distill.teacher_kwargs={patch_size: 8, depth: 1, embed_dim: 48}"])
    record = epochs(run)[0]
    assert record["train_loss_distill"] > 0 and record["train_loss_cls"] > 0
    assert record["train_loss"] == pytest.approx(record["train_loss_cls"] + record["train_loss_distill"], rel=1e-5)
    state = torch.load(run / "checkpoint-latest.pth", weights_only=False)["model"]
    assert state["distill_head.1.weight"].shape == (48, 32)          # RMSNorm + Linear(32 -> teacher's 48)
    # the released student is a plain backbone: its distill head is skipped, the load is still strict
    plain = videomamba.create_model("videomamba_tiny", num_classes=10, img_size=32, patch_size=8, depth=1,
                                    embed_dim=32)
    report = videomamba.load_checkpoint(plain, {"model": state}, strict=True)
    assert report.skipped == ["distill_head.0.weight", "distill_head.1.weight", "distill_head.1.bias"]
    stats = main(["--config", CONFIG, "--no-progress", "--eval", "--opts", f"output_dir={run}",
                  f"data.root={tmp_path / 'data'}", *SMALL, "distill.enabled=true"])   # no teacher needed to evaluate
    assert stats["acc1"] == pytest.approx(record["val_acc1"], abs=1e-4)


def test_token_cosine_loss_is_the_distance_of_unit_vectors():
    from videomamba.engine.distill import token_cosine_loss

    s, t = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    su, tu = s / s.norm(dim=-1, keepdim=True), t / t.norm(dim=-1, keepdim=True)
    expected = ((su - tu) ** 2).sum(-1).mean()
    assert torch.allclose(token_cosine_loss(s, t), expected, atol=1e-6)
    assert token_cosine_loss(s, 3 * s).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="differ"):
        token_cosine_loss(s, t[:, :4])


def test_high_resolution_finetune_resizes_pos_embed(tmp_path, capsys):
    """The 224 -> 448 recipe in small: train at 32 px, fine-tune at 64 px from its best checkpoint."""
    from videomamba.checkpoint.adapt import resize_spatial_pos_embed

    lo, hi = tmp_path / "lo", tmp_path / "hi"
    common = ["--config", CONFIG, "--no-progress", "--opts", f"data.root={tmp_path / 'data'}", *SMALL, "train.epochs=1"]
    main(common + [f"output_dir={lo}"])
    capsys.readouterr()
    stats = main(common[:3] + ["--eval"] + common[3:] + [f"output_dir={hi}", "data.img_size=64",
                                                         f"model.finetune={lo / 'checkpoint-best.pth'}"])
    out = capsys.readouterr().out
    assert "pos_embed" in out and "bicubic" in out and stats["n"] > 0
    main(common + [f"output_dir={hi}", "data.img_size=64", f"model.finetune={lo / 'checkpoint-best.pth'}",
                   "train.lr=0", "train.warmup_lr=0", "train.min_lr=0", "train.weight_decay=0"])
    # --eval of the fine-tuning config evaluates the fine-tuned run, not the checkpoint it started from
    stats = main(common[:3] + ["--eval"] + common[3:] + [f"output_dir={hi}", "data.img_size=64",
                                                         f"model.finetune={lo / 'checkpoint-best.pth'}"])
    assert f"evaluating {hi / 'checkpoint-best.pth'}" in capsys.readouterr().out
    assert stats["acc1"] == pytest.approx(epochs(hi)[-1]["val_acc1"], abs=1e-4)
    before = torch.load(lo / "checkpoint-best.pth", weights_only=False)["model"]["pos_embed"]
    after = torch.load(hi / "checkpoint-latest.pth", weights_only=False)["model"]["pos_embed"]
    assert before.shape == (1, 17, 32) and after.shape == (1, 65, 32)     # 4x4+1 -> 8x8+1 tokens (patch 8)
    assert torch.allclose(after, resize_spatial_pos_embed(before, (8, 8)))   # lr 0: exactly the resized init


def test_self_distillation_loss_keeps_the_teacher_frozen():
    import videomamba
    from videomamba.engine.distill import SelfDistillationLoss

    kw = dict(num_classes=4, img_size=16, patch_size=8, depth=1, drop_path_rate=0.0)
    teacher = videomamba.create_model("videomamba_tiny", embed_dim=24, **kw)
    student = videomamba.create_model("videomamba_tiny", embed_dim=16, distill_dim=24, **kw)
    teacher.train()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    loss_fn = SelfDistillationLoss(teacher, torch.nn.CrossEntropyLoss())
    x, y = torch.randn(3, 3, 16, 16), torch.tensor([0, 1, 3])
    loss, parts = loss_fn(student, x, y)
    loss.backward()
    assert not teacher.training and all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert student.distill_head[1].weight.grad.abs().sum() > 0
    with torch.no_grad():   # the distillation term by hand: unit tokens of both, 2 - 2 cos, mean
        s = torch.nn.functional.normalize(student.distill_head(student.forward_features(x)), dim=-1)
        t = torch.nn.functional.normalize(teacher.forward_features(x), dim=-1)
    assert parts["loss_distill"].item() == pytest.approx((2 - 2 * (s * t).sum(-1)).mean().item(), rel=1e-5)


def test_resume_with_another_batch_size_keeps_the_schedule_by_epoch(tmp_path):
    from videomamba.engine import load_config
    from videomamba.engine.runner import build_schedules

    base = ["--config", CONFIG, "--no-progress", "--opts", f"output_dir={tmp_path / 'run'}",
            f"data.root={tmp_path / 'data'}", *SMALL]
    main(base + ["train.epochs=1"])
    with pytest.warns(UserWarning, match="steps per epoch when saved"):
        main(base + ["train.epochs=2", "data.batch_size=32"])
    cfg = load_config(CONFIG, base[4:] + ["train.epochs=2", "data.batch_size=32"])
    second = [s for s in steps(tmp_path / "run") if s["epoch"] == 1]
    spe = len(second)
    lr, _ = build_schedules(cfg.train, cfg.train.lr * 32 / cfg.train.lr_scale_batch, spe)
    assert [s["lr"] for s in second] == pytest.approx(list(lr[spe:2 * spe]))
    assert [s["step"] for s in second] == list(range(spe, 2 * spe))


def test_deepspeed_bf16_checkpoint_holds_fp32_master_weights(tmp_path):
    pytest.importorskip("deepspeed", reason="deepspeed not installed (pip install 'videomamba[deepspeed]')")
    run = tmp_path / "ds"
    cmd = _train_cmd(run, tmp_path / "data", "train.epochs=1", "train.amp=bf16", "train.deepspeed.enabled=true",
                     nproc=2, port=29653)
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    state = torch.load(run / "checkpoint-latest.pth")["model"]
    assert {v.dtype for v in state.values()} == {torch.float32}
    assert any(v.float().ne(v.bfloat16().float()).any() for v in state.values())   # not bf16 values in fp32


def test_compiled_training_matches_eager(tmp_path):
    """train.compile: the scan and conv are custom ops, so the whole model traces; aot_eager runs the
    traced forward and backward graphs (inductor is the default and needs a C++ toolchain per shape)."""
    base = ["--config", CONFIG, "--no-progress", "--opts", f"data.root={tmp_path / 'data'}", *SMALL,
            "train.epochs=1", "model.drop_path_rate=0.0"]
    main(base + [f"output_dir={tmp_path / 'eager'}"])
    main(base + [f"output_dir={tmp_path / 'compiled'}", "train.compile=aot_eager"])
    eager, compiled = steps(tmp_path / "eager"), steps(tmp_path / "compiled")
    np.testing.assert_allclose([s["loss"] for s in compiled], [s["loss"] for s in eager], rtol=1e-4, atol=1e-5)
    a = torch.load(tmp_path / "eager" / "checkpoint-latest.pth")["model"]
    b = torch.load(tmp_path / "compiled" / "checkpoint-latest.pth")["model"]
    assert a.keys() == b.keys()   # plain key names, no _orig_mod. prefix
