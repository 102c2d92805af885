"""The masked-pretraining configs: the official recipe (docs/design.md §3.4) for K400 and SSv2, Ti/S configs,
the embedded pipeline's config and launchers, and the MODEL_ZOO's student rows each with a config and a
command."""
import os
import subprocess
from pathlib import Path

import pytest
import torch

import videomamba
from videomamba.engine import load_config
from videomamba.engine.task import model_kwargs

ROOT = Path(__file__).parents[1]
CFG = ROOT / "configs" / "video_sm"
PRETRAIN = sorted(CFG.rglob("*_mask_pt_*.yaml"))
DIM = {"videomamba_tiny_pretrain": 192, "videomamba_small_pretrain": 384, "videomamba_middle_pretrain": 576}


def build_meta(cfg):
    kw = model_kwargs(cfg, img_size=cfg.data.input_size, num_frames=cfg.data.num_frames)
    with torch.device("meta"):
        return videomamba.create_model(kw.pop("name"), **kw)


def test_there_is_a_config_per_student():
    stems = {f"{p.parent.name}/{p.stem}" for p in PRETRAIN}
    assert stems == {f"{ds}/videomamba_{m}_mask_pt_f8_res224" for ds in ("k400", "ssv2") for m in ("tiny", "small", "middle")}


@pytest.mark.parametrize("path", PRETRAIN, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_official_recipe(path):
    cfg = load_config(path)
    t, d, m, a = cfg.train, cfg.data, cfg.model, cfg.aug
    # 32 GPUs x 64 clips: lr 1.5e-4 x 2048 / 256 = 1.2e-3; min/warmup lr 1e-5 / 1e-6 x 8
    assert t.lr * 64 * 32 / t.lr_scale_batch == pytest.approx(1.2e-3)
    assert (t.min_lr, t.warmup_lr, t.warmup_epochs, t.betas, t.weight_decay) == (8e-5, 8e-6, 40, [0.9, 0.95], 0.05)
    assert (t.layer_decay, t.clip_grad, t.amp, t.sched_per, t.weight_decay_end) == (None, None, "bf16", "step", None)
    assert t.epochs == (801 if path.parent.name == "k400" else 200)
    assert (d.batch_size, d.num_frames, d.input_size, d.sampler, d.num_sample, d.delimiter) == (64, 8, 224, "sparse", 1, " ")
    assert (cfg.mask.type, cfg.mask.ratio, cfg.loss.ratio, cfg.teacher.path) == ("attention", 0.8, 1.0, None)
    assert a.scales == [1.0, 0.875, 0.75, 0.66] and a.hflip == 0.5
    k = m.kwargs
    assert (k.clip_output_dim, k.clip_return_layers, k.clip_student_return_interval, k.clip_target) == (512, 1, 1, "official")
    assert k.clip_decoder_embed_dim == DIM[m.name]
    assert m.finetune is None   # from scratch, no IN-1K init
    assert m.drop_path_rate == {"videomamba_middle_pretrain": 0.4, "videomamba_small_pretrain": 0.2,
                                "videomamba_tiny_pretrain": 0.1}[m.name]
    assert cfg.output_dir == f"outputs/video_sm/{path.parent.name}/{path.stem}"
    model = build_meta(cfg)
    if m.name == "videomamba_middle_pretrain":   # the official student: 73,941,504 parameters
        assert sum(p.numel() for p in model.parameters()) == 73_875_856 - 400 * 577 + 576 * 512 + 3 * 512


def test_moving_digits_pretrain_config_fits_the_main_job():
    pre = load_config(CFG / "moving_digits_pretrain.yaml")
    main = load_config(CFG / "moving_digits.yaml")
    for key in ("depth", "embed_dim", "patch_size", "dt_init"):
        assert pre.model.kwargs[key] == main.model.kwargs[key]
    assert (pre.data.input_size, pre.data.num_frames) == (main.data.input_size, main.data.num_frames)
    teacher = load_config(ROOT / "configs" / "image_sm" / "moving_digits_clip_teacher.yaml")
    tk = teacher.model.kwargs
    # the teacher's patch grid is the student's, and its width is the targets' width (proj = identity)
    assert teacher.data.img_size // tk.patch_size == pre.data.input_size // pre.model.kwargs.patch_size
    assert tk.embed_dim == pre.model.kwargs.clip_output_dim and tk.num_heads == tk.embed_dim // 64
    assert teacher.model.name == "vit_base_patch16_clip_224" and tk.act_layer == "quick_gelu"
    model = build_meta(pre)
    assert model.return_index == [3]


def test_model_zoo_lists_every_student_with_config_and_command():
    text = (ROOT / "MODEL_ZOO.md").read_text()
    for path in PRETRAIN:
        rel = path.relative_to(ROOT).as_posix()
        if "middle" in path.stem:
            line = next(ln for ln in text.splitlines() if f"`{rel}`" in ln)
            assert "pretrain_slurm.sh" in line and f"-- {rel}" in line and "teacher.path=" in line
        else:
            assert rel.replace(f"/{path.parent.name}/", "/{k400,ssv2}/") in text
    for f in ("videomamba_m16_k400_mask_pt_f8_res224.pth", "videomamba_m16_ssv2_mask_pt_f8_res224.pth"):
        assert any(f in ln and "_mask_pt_f8_res224.yaml" in ln for ln in text.splitlines())


def test_pipeline_script_parses_and_is_executable():
    path = ROOT / "video_sm" / "exp" / "moving_digits_pretrain.sh"
    subprocess.run(["bash", "-n", str(path)], check=True)
    assert os.access(path, os.X_OK)
    text = path.read_text()
    for step in ("image_sm.train", "convert-clip", "video_sm.pretrain", "video_sm.finetune"):
        assert step in text
