"""Every image_sm config parses and builds its model; the official recipes' numbers; the launchers."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from videomamba.engine import load_config
from videomamba.engine.runner import scaled_lr

ROOT = Path(__file__).parents[1]
CONFIGS = sorted(p for p in (ROOT / "configs" / "image_sm").glob("*.yaml") if not p.name.startswith("_"))
# docs/design.md §2: model, image size, GPUs in the exp script and the effective lr those GPUs give
# (lr x bs x GPUs / 512); §1.5: parameters at 224 (without a distill head)
OFFICIAL = {
    "videomamba_tiny_in1k_224": ("videomamba_tiny", 224, 7_148_008, 8, 4e-3),
    "videomamba_tiny_in1k_448": ("videomamba_tiny", 448, 7_148_008, 8, 5e-6 * 256 * 8 / 512),
    "videomamba_tiny_in1k_576": ("videomamba_tiny", 576, 7_148_008, 8, 5e-6 * 128 * 8 / 512),
    "videomamba_small_in1k_224": ("videomamba_small", 224, 25_796_584, 8, 4e-3),
    "videomamba_small_in1k_448": ("videomamba_small", 448, 25_796_584, 8, 5e-6 * 64 * 8 / 512),
    "videomamba_small_in1k_576": ("videomamba_small", 576, 25_796_584, 8, 5e-6 * 64 * 8 / 512),
    "videomamba_middle_in1k_224_distill": ("videomamba_middle", 224, 74_217_448, 16, 2e-3),
    "videomamba_base_in1k_224_distill": ("videomamba_base", 224, 97_598_440, 16, 2e-3),
    "videomamba_middle_in1k_448": ("videomamba_middle", 448, 74_217_448, 16, 5e-6 * 32 * 16 / 512),
    "videomamba_middle_in1k_576": ("videomamba_middle", 576, 74_217_448, 16, 5e-6 * 32 * 16 / 512),
}


def test_every_official_image_experiment_has_a_config():
    assert set(OFFICIAL) <= {p.stem for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_parses_and_builds_its_model(path):
    from image_sm.data import build_transforms
    from image_sm.train import build_model
    from videomamba.engine.losses import build_criterion

    cfg = load_config(path, ["model.finetune=null"])   # the chained checkpoints do not exist here
    distill = cfg.get("distill") or {}
    teacher_dim = None
    if distill.get("enabled"):
        import videomamba

        teacher = videomamba.create_model(distill.teacher, num_classes=cfg.model.num_classes,
                                          img_size=cfg.data.img_size, **(distill.get("teacher_kwargs") or {}))
        teacher_dim = teacher.embed_dim
        assert distill.teacher_checkpoint, "a distillation config must name its teacher checkpoint"
    model = build_model(cfg, distill_dim=teacher_dim)
    assert model.patch_embed.num_patches == (cfg.data.img_size // model.patch_embed.proj.kernel_size[-1]) ** 2
    build_transforms(cfg, True), build_transforms(cfg, False)
    build_criterion(cfg)
    if path.stem in OFFICIAL:
        name, size, params_224, gpus, eff_lr = OFFICIAL[path.stem]
        n = sum(p.numel() for k, p in model.named_parameters() if not k.startswith("distill_head"))
        assert cfg.model.name == name and cfg.data.img_size == size
        assert n - model.pos_embed.numel() + 197 * model.embed_dim == params_224   # only pos_embed grows
        assert model.patch_embed.num_patches == (size // 16) ** 2
        assert scaled_lr(cfg.train, cfg.data.batch_size * gpus) == pytest.approx(eff_lr)
        assert cfg.train.amp == "bf16" and cfg.train.ema_decay is None and cfg.aug.eval_crop_pct == 0.875
        if size > 224:   # high-resolution fine-tuning starts from the previous resolution's run
            assert (cfg.model.get("finetune") or load_config(path).model.finetune)
        if teacher_dim:
            assert model.distill_head[1].out_features == 384


LAUNCHERS = sorted((ROOT / "image_sm" / "exp").glob("*.sh")) + sorted((ROOT / "scripts" / "launch").glob("*"))


@pytest.mark.parametrize("path", LAUNCHERS, ids=lambda p: p.name)
def test_launchers_parse_and_hard_code_no_cluster_settings(path):
    subprocess.run(["bash", "-n", str(path)], check=True)
    text = path.read_text()
    assert os.access(path, os.X_OK)
    for forbidden in ("--partition", "#SBATCH -p", "#SBATCH --account", "/mnt/", "/home/", "petrel", "s3://"):
        assert forbidden not in text.replace("-p PARTITION", ""), f"{path.name} hard-codes {forbidden}"


def _fake_slurm(tmp_path, **env):
    """srun / scontrol stand-ins that print what they were asked to run."""
    for name, body in (("srun", 'printf "%s\\n" "$@"'), ("scontrol", 'echo gpu07; echo gpu08')):
        tool = tmp_path / name
        tool.write_text(f"#!/usr/bin/env bash\n{body}\n")
        tool.chmod(0o755)
    return dict(os.environ, PATH=f"{tmp_path}:{os.environ['PATH']}", SLURM_JOB_ID="123456", SLURM_JOB_NUM_NODES="2",
                SLURM_JOB_NODELIST="gpu[07-08]", SLURM_CPUS_PER_TASK="64", **env)


def test_slurm_torchrun_script_runs_one_torchrun_per_node(tmp_path):
    env = _fake_slurm(tmp_path, SLURM_GPUS_ON_NODE="8")
    r = subprocess.run(["bash", str(ROOT / "scripts/launch/slurm_torchrun.sbatch"), "image_sm.train", "c.yaml",
                        "--opts", "a=1"], env=env, capture_output=True, text=True, check=True)
    args = r.stdout.split("\n")
    assert args[:3] == ["--kill-on-bad-exit=1", "--ntasks-per-node=1", "--cpus-per-task=64"]
    assert "torch.distributed.run" in args and "--nnodes=2" in args and "--nproc_per_node=8" in args
    assert f"--rdzv_endpoint=gpu07:{20000 + 123456 % 20000}" in args
    assert args[args.index("image_sm.train") - 1] == "-m"
    assert args[args.index("--config") + 1] == "c.yaml" and "a=1" in args


def test_slurm_srun_script_runs_one_task_per_gpu_without_torchrun(tmp_path):
    env = _fake_slurm(tmp_path, SLURM_GPUS_ON_NODE="8", SLURM_NTASKS_PER_NODE="8")
    r = subprocess.run(["bash", str(ROOT / "scripts/launch/slurm_srun.sbatch"), "image_sm.train", "c.yaml"],
                       env=env, capture_output=True, text=True, check=True)
    args = r.stdout.split("\n")
    assert "torch.distributed.run" not in args and args[args.index("-m") + 1] == "image_sm.train"
    assert "--cpus-per-task=64" in args
    r = subprocess.run(["bash", str(ROOT / "scripts/launch/slurm_srun.sbatch"), "image_sm.train", "c.yaml"],
                       env=dict(env, SLURM_NTASKS_PER_NODE="1"), capture_output=True, text=True)
    assert r.returncode == 2 and "--ntasks-per-node=8" in r.stderr


def test_slurm_wrapper_passes_sbatch_options_and_the_task(tmp_path):
    fake = tmp_path / "sbatch"
    fake.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{tmp_path}:{os.environ['PATH']}")
    r = subprocess.run([str(ROOT / "image_sm/exp/slurm.sh"), "-N", "2", "--gres=gpu:8", "--", "cfg.yaml",
                        "--opts", "a=1"], env=env, capture_output=True, text=True, check=True)
    assert r.stdout.split("\n")[:8] == ["-N", "2", "--gres=gpu:8", str(ROOT / "scripts/launch/slurm_torchrun.sbatch"),
                                        "image_sm.train", "cfg.yaml", "--opts", "a=1"]
    r = subprocess.run([str(ROOT / "image_sm/exp/slurm.sh"), "--", "cfg.yaml"], env=dict(env, MODE="srun"),
                       capture_output=True, text=True, check=True)
    assert str(ROOT / "scripts/launch/slurm_srun.sbatch") in r.stdout
    r = subprocess.run([str(ROOT / "image_sm/exp/slurm.sh"), "--", "cfg.yaml"], env=dict(env, MODE="both"),
                       capture_output=True, text=True)
    assert r.returncode == 2 and "MODE must be" in r.stderr


def test_torchrun_launcher_trains_two_processes(tmp_path):
    env = dict(os.environ, NPROC="2", PYTHON=sys.executable, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    r = subprocess.run([str(ROOT / "image_sm/exp/train.sh"), "configs/image_sm/moving_digits_tiny.yaml",
                        "--no-progress", "--opts", f"output_dir={tmp_path / 'run'}", f"data.root={tmp_path / 'data'}",
                        "model.kwargs.depth=1", "model.kwargs.embed_dim=32", "train.epochs=1"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 process(es)" in r.stdout and (tmp_path / "run" / "checkpoint-latest.pth").is_file()


def test_srun_style_tasks_train_together(tmp_path):
    """What slurm_srun.sbatch does: srun starts one plain process per GPU with SLURM_* set, no torchrun."""
    base = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), SLURM_NTASKS="2", SLURM_STEP_NUM_TASKS="2", SLURM_STEP_ID="0",
                SLURM_JOB_NODELIST="localhost",
                MASTER_PORT="29657")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        base.pop(k, None)
    cmd = [sys.executable, "-m", "image_sm.train", "--config", "configs/image_sm/moving_digits_tiny.yaml",
           "--no-progress", "--opts", f"output_dir={tmp_path / 'run'}", f"data.root={tmp_path / 'data'}",
           "model.kwargs.depth=1", "model.kwargs.embed_dim=32", "train.epochs=1"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=dict(base, SLURM_PROCID=str(r), SLURM_LOCALID=str(r)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs[0][1][-2000:] + outs[1][1][-2000:]
    assert "2 process(es)" in outs[0][0]
