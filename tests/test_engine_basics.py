"""Engine building blocks: configs with overrides, parameter groups, schedules."""
import math

import numpy as np
import pytest
import torch

import videomamba
from videomamba.engine import (ConfigError, cosine_per_epoch, cosine_per_step, layer_id, load_config, param_groups,
                               save_config)


def write(p, text):
    p.write_text(text)
    return p


def test_config_bases_overrides_and_round_trip(tmp_path):
    write(tmp_path / "base.yaml", "model:\n  name: videomamba_tiny\n  drop_path_rate: 0.1\ntrain:\n  lr: 5.0e-4\n  epochs: 300\n")
    cfg_file = write(tmp_path / "exp.yaml", "_base_: base.yaml\ntrain:\n  epochs: 30\n")
    cfg = load_config(cfg_file, ["train.lr=1e-3", "model.drop_path_rate=0", "+train.clip_grad=5"])
    assert cfg.model.name == "videomamba_tiny" and cfg.train.epochs == 30
    assert cfg.train.lr == pytest.approx(1e-3) and cfg.model.drop_path_rate == 0 and cfg.train.clip_grad == 5
    out = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert load_config(out) == cfg


def test_config_errors_name_the_problem(tmp_path):
    bad = write(tmp_path / "bad.yaml", "train:\n  lr: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+:\d+"):
        load_config(bad)
    ok = write(tmp_path / "ok.yaml", "train:\n  lr: 1\n")
    with pytest.raises(ConfigError, match="unknown key 'train.lrr'"):
        load_config(ok, ["train.lrr=2"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(ok, ["train.lr"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def model():
    with torch.device("meta"):
        return videomamba.create_model("videomamba_tiny", num_frames=8, num_classes=400)


def test_layer_decay_real_mode():
    m = model()
    groups = param_groups(m, weight_decay=0.05, layer_decay=0.75, mode="real")
    scale = {n: g["lr_scale"] for g in groups for n in g["param_names"]}
    wd = {n: g["weight_decay"] for g in groups for n in g["param_names"]}
    assert scale["pos_embed"] == pytest.approx(0.75 ** 25)
    assert scale["temporal_pos_embedding"] == pytest.approx(0.75 ** 25)
    assert scale["layers.0.mixer.in_proj.weight"] == pytest.approx(0.75 ** 24)
    assert scale["layers.23.norm.weight"] == pytest.approx(0.75)
    assert scale["head.weight"] == 1.0 and scale["norm_f.weight"] == 1.0
    # weight decay: 1-D, biases and no_weight_decay() excluded; A_log (2-D) decayed as officially
    assert wd["layers.3.mixer.A_log"] == 0.05 and wd["layers.3.mixer.D"] == 0.0
    assert wd["pos_embed"] == 0.0 and wd["head.bias"] == 0.0 and wd["head.weight"] == 0.05
    assert sum(len(g["params"]) for g in groups) == len(list(m.parameters()))


def test_layer_decay_official_mode_only_scales_the_embedding():
    m = model()
    scale = {n: g["lr_scale"] for g in param_groups(m, 0.05, 0.75, mode="official") for n in g["param_names"]}
    frozen_ish = {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"}
    for name, s in scale.items():
        assert s == pytest.approx(0.75 ** 25 if name in frozen_ish else 1.0), name
    assert layer_id("temporal_pos_embedding", 24, "official") == 25


def test_module_lr_gives_named_modules_their_own_peak_lr():
    m = model()
    groups = param_groups(m, 0.05, module_lr={"layers.1": 1e-4, "layers.1.mixer": 2e-5, "head": 5e-3}, lr=1e-3)
    scale = {n: g["lr_scale"] for g in groups for n in g["param_names"]}
    # by hand: module lr / run lr; the longest matching name wins; a prefix matches whole names only
    assert scale["layers.1.norm.weight"] == pytest.approx(0.1)
    assert scale["layers.1.mixer.in_proj.weight"] == pytest.approx(0.02)
    assert scale["layers.12.norm.weight"] == 1.0 and scale["layers.12.mixer.in_proj.weight"] == 1.0
    assert scale["head.weight"] == pytest.approx(5.0) and scale["layers.2.norm.weight"] == 1.0
    assert sum(len(g["params"]) for g in groups) == len(list(m.parameters()))
    # combined with layer decay: the two factors multiply
    both = {n: g["lr_scale"] for g in param_groups(m, 0.05, 0.75, module_lr={"layers.0": 1e-4}, lr=1e-3)
            for n in g["param_names"]}
    assert both["layers.0.norm.weight"] == pytest.approx(0.75 ** 24 * 0.1)
    assert both["layers.1.norm.weight"] == pytest.approx(0.75 ** 23)
    with pytest.raises(ValueError, match=r"train.module_lr.text_encoder: no trainable parameter"):
        param_groups(m, 0.05, module_lr={"text_encoder": 1e-4}, lr=1e-3)
    with pytest.raises(ValueError, match=r"train.module_lr.head: expected a learning rate"):
        param_groups(m, 0.05, module_lr={"head": "fast"}, lr=1e-3)


def test_cosine_per_step_matches_the_formula():
    s = cosine_per_step(1e-3, 1e-6, epochs=4, iters_per_epoch=10, warmup_epochs=1, start_warmup_value=1e-6)
    assert len(s) == 40
    np.testing.assert_allclose(s[:10], np.linspace(1e-6, 1e-3, 10))
    i = 17 - 10
    assert s[17] == pytest.approx(1e-6 + 0.5 * (1e-3 - 1e-6) * (1 + math.cos(math.pi * i / 30)))
    assert s[10] == pytest.approx(1e-3) and s[-1] > 1e-6


def test_cosine_per_epoch_matches_timm():
    from timm.scheduler import CosineLRScheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=5e-4)
    sched = CosineLRScheduler(opt, t_initial=30, lr_min=1e-5, warmup_t=5, warmup_lr_init=1e-6, cycle_limit=1)
    ours = cosine_per_epoch(5e-4, 1e-5, epochs=30, warmup_epochs=5, warmup_value=1e-6)
    for e in range(30):
        sched.step(e)
        assert opt.param_groups[0]["lr"] == pytest.approx(ours[e], rel=1e-9), e


def test_epoch_schedule_lags_one_epoch_like_the_official_loop():
    """main.py trains epoch e, then calls scheduler.step(e): epoch 0 runs at the initial warmup lr and
    epoch e >= 1 at the scheduler's value for e - 1."""
    from timm.scheduler import CosineLRScheduler

    from videomamba.engine import load_config
    from videomamba.engine.runner import build_schedules

    cfg = load_config("configs/image_sm/videomamba_tiny_in1k_448.yaml")
    t = cfg.train
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=4e-5)
    sched = CosineLRScheduler(opt, t_initial=t.epochs, lr_min=t.min_lr, warmup_t=t.warmup_epochs,
                              warmup_lr_init=t.warmup_lr, cycle_limit=1)
    official = []
    for epoch in range(t.epochs):
        official.append(opt.param_groups[0]["lr"])   # the lr this epoch trains at
        sched.step(epoch)
    ours, _ = build_schedules(t, 4e-5, steps_per_epoch=3)
    assert list(ours[::3]) == pytest.approx(official, rel=1e-9)
    assert ours[0] == ours[3] == t.warmup_lr


def test_deepspeed_config_from_ours():
    from videomamba.engine import load_config
    from videomamba.engine.runner import deepspeed_config

    cfg = load_config("configs/image_sm/videomamba_tiny_in1k_224.yaml",
                      ["train.accum_steps=2", "+train.deepspeed.config.zero_optimization.overlap_comm=true"])
    conf = deepspeed_config(cfg, world_size=4)
    assert conf["zero_optimization"] == {"stage": 2, "overlap_comm": True}     # deep merge keeps the stage
    assert conf["train_batch_size"] == 512 * 2 * 4 and conf["gradient_accumulation_steps"] == 2
    assert conf["gradient_clipping"] == 5.0 and conf["bf16"] == {"enabled": True}
    for stage in (0, 3):
        with pytest.raises(ValueError, match="ZeRO 1 and 2"):
            deepspeed_config(load_config("configs/image_sm/videomamba_tiny_in1k_224.yaml",
                                         [f"train.deepspeed.stage={stage}"]), 1)


def test_progress_bars_only_on_a_terminal(monkeypatch):
    """A bar redrawn into a log file is noise: bars need a terminal on stderr (and the main rank)."""
    import io
    import sys

    from videomamba.engine.dist import show_progress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not show_progress(True)
    monkeypatch.setattr(sys, "stderr", Tty())
    assert show_progress(True)
    assert not show_progress(False)
