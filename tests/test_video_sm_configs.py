"""Every video_sm config parses and builds its model; one config per MODEL_ZOO row with the official exp
script's hyper-parameters (docs/design.md §3.3) and the MODEL_ZOO number (§5); the launchers."""
import os
import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import torch

import videomamba
from videomamba.engine import load_config
from videomamba.engine.task import model_kwargs
from videomamba.models.zoo import ZOO

ROOT = Path(__file__).parents[1]
CFG_DIR = ROOT / "configs" / "video_sm"
# fine-tuning configs; the masked-pretraining ones (*_mask_pt_*, moving_digits_pretrain) are tested in
# test_video_sm_pretrain_configs.py
CONFIGS = sorted(p for p in CFG_DIR.rglob("*.yaml") if not p.name.startswith("_") and "pretrain" not in p.stem
                 and "_mask_pt_" not in p.stem)
ZOO_SETS = ("k400", "ssv2", "breakfast", "coin")
ROW_CONFIGS = [p for p in CONFIGS if p.parent.name in ZOO_SETS]
LVU_CONFIGS = [p for p in CONFIGS if p.parent.name == "lvu"]
README = ROOT / "video_sm" / "README.md"

# docs/design.md §1.5: parameters of the video model with 400 classes at T=8, 224; embed dims
PARAMS_K400_T8 = {"videomamba_tiny": 7_033_744, "videomamba_small": 25_568_656, "videomamba_middle": 73_875_856}
DIM = {"videomamba_tiny": 192, "videomamba_small": 384, "videomamba_middle": 576}
LETTER = {"videomamba_tiny": "t", "videomamba_small": "s", "videomamba_middle": "m"}
MODEL = {"Ti": "videomamba_tiny", "S": "videomamba_small", "M": "videomamba_middle", "M-mask": "videomamba_middle"}
CLASSES = {"k400": 400, "ssv2": 174, "breakfast": 10, "coin": 180}
VIEWS = {"k400": (4, 3), "ssv2": (2, 3), "breakfast": (4, 3), "coin": (10, 3)}


def _r(gpus, bs, eff_lr, ep, wu, ld, dp, wd, init, acc1, accum=1, aa5=False):
    return dict(gpus=gpus, bs=bs, accum=accum, eff_lr=eff_lr, ep=ep, wu=wu, ld=ld, dp=dp, wd=wd, init=init, acc1=acc1,
                aa5=aa5)


# (data set, model, frames, resolution) -> the exp script's numbers (docs/design.md §3.3; `eff lr` =
# lr x bs x accum x GPUs x 2 / 256, computed by hand where the table gives only the base lr) and §5's top-1.
EXPECTED = {}
_IN1K = {m: f"videomamba_{LETTER[MODEL[m]]}16_in1k_res224.pth" for m in ("Ti", "S", "M")}
for i, T in enumerate((8, 16, 32, 64)):
    EXPECTED["k400", "Ti", T, 224] = _r(8 if T < 64 else 16, {8: 64, 16: 64, 32: 32, 64: 16}[T],
                                        {8: 8e-4, 16: 8e-4, 32: 4e-4, 64: 4e-4}[T], 70, 5, 0.75, 0.1, 0.1, _IN1K["Ti"],
                                        [76.9, 78.1, 78.8, 79.6][i], aa5=True)
    EXPECTED["k400", "S", T, 224] = _r(8 if T == 8 else 16, {8: 64, 16: 32, 32: 16, 64: 8}[T],
                                       {8: 8e-4, 16: 8e-4, 32: 4e-4, 64: 2e-4}[T], 50, 5, 0.75, 0.35, 0.05, _IN1K["S"],
                                       [79.3, 80.8, 81.5, 81.8][i])
    EXPECTED["k400", "M", T, 224] = _r(16, {8: 32, 16: 16, 32: 8, 64: 4}[T], {8: 8e-4, 16: 2e-4, 32: 1e-4, 64: 5e-5}[T],
                                       50, 5, 0.75, 0.8, 0.05, _IN1K["M"], [80.6, 81.9, 82.4, 82.8][i])
    EXPECTED["k400", "M-mask", T, 224] = _r(16, {8: 32, 16: 16, 32: 8, 64: 4}[T], {8: 4e-4, 16: 2e-4, 32: 1e-4, 64: 5e-5}[T],
                                            45, 5, 0.8, 0.4, 0.05, "videomamba_m16_k400_mask_pt_f8_res224.pth",
                                            [82.0, 83.4, 83.9, 84.3][i])
EXPECTED["k400", "Ti", 64, 384] = _r(16, 6, 3.75e-6, 10, 2, 0.75, 0.1, 1e-8, "videomamba_t16_k400_f64_res224.pth", 80.3, aa5=True)
EXPECTED["k400", "S", 64, 384] = _r(32, 2, 5e-6, 6, 1, 0.75, 0.35, 1e-8, "videomamba_s16_k400_f64_res224.pth", 82.7, accum=2)
EXPECTED["k400", "M", 64, 384] = _r(16, 1, 1.25e-6, 6, 1, 0.75, 0.8, 1e-8, "videomamba_m16_k400_f64_res224.pth", 83.3, accum=2)
EXPECTED["k400", "M-mask", 64, 384] = _r(16, 1, 1.25e-6, 6, 1, 0.8, 0.4, 1e-8,
                                         "videomamba_m16_k400_mask_ft_f64_res224.pth", 85.0, accum=2)
for i, T in enumerate((8, 16)):
    EXPECTED["ssv2", "Ti", T, 224] = _r(8, 64, 1.6e-3, 35, 5, 0.75, 0.1, 0.1, _IN1K["Ti"], [65.1, 66.0][i], aa5=True)
    EXPECTED["ssv2", "S", T, 224] = _r(8 if T == 8 else 16, 64 if T == 8 else 32, 1.6e-3, 30, 5, 0.75, 0.35, 0.05,
                                       _IN1K["S"], [66.6, 67.7][i])
    EXPECTED["ssv2", "M", T, 224] = _r(16, 32 if T == 8 else 16, 1.6e-3 if T == 8 else 8e-4, 30, 5, 0.75, 0.8, 0.05,
                                       _IN1K["M"], [67.3, 68.3][i])
    EXPECTED["ssv2", "M-mask", T, 224] = _r(16, 32 if T == 8 else 16, 4e-4 if T == 8 else 2e-4, 30, 5, 0.8, 0.4, 0.05,
                                            "videomamba_m16_ssv2_mask_pt_f8_res224.pth", [70.2, 71.0][i])
EXPECTED["ssv2", "Ti", 16, 288] = _r(16, 32, 2e-5, 10, 2, 0.75, 0.1, 1e-8, "videomamba_t16_ssv2_f16_res224.pth", 66.2, aa5=True)
EXPECTED["ssv2", "S", 16, 288] = _r(16, 12, 7.5e-6, 10, 2, 0.75, 0.35, 1e-8, "videomamba_s16_ssv2_f16_res224.pth", 68.1)
EXPECTED["ssv2", "M", 16, 288] = _r(16, 6, 3.75e-6, 10, 2, 0.75, 0.8, 1e-8, "videomamba_m16_ssv2_f16_res224.pth", 68.4)
EXPECTED["ssv2", "M-mask", 16, 288] = _r(16, 6, 3.75e-6, 10, 2, 0.8, 0.4, 1e-8,
                                         "videomamba_m16_ssv2_mask_ft_f16_res224.pth", 71.4)
_LONG = {"breakfast": {"Ti": [94.3, 94.3], "S": [95.3, 97.4], "M": [94.8, 95.8], "M-mask": [97.9, 96.9]},
         "coin": {"Ti": [86.2, 87.0], "S": [88.4, 88.7], "M": [88.3, 89.5], "M-mask": [89.6, 90.4]}}
for ds, acc in _LONG.items():
    coin = ds == "coin"
    for i, T in enumerate((32, 64)):
        # Ti: both the f32 and the f64 script start from the Ti K400 f32 checkpoint (as the scripts have it)
        EXPECTED[ds, "Ti", T, 224] = _r(8 if T == 32 else 16, 32 if T == 32 else 16, 4e-4, 40 if coin else 70, 5, 0.75, 0.1,
                                        0.1, "videomamba_t16_k400_f32_res224.pth", acc["Ti"][i], aa5=True)
        EXPECTED[ds, "S", T, 224] = _r(16, 16 if T == 32 else 8, 4e-4 if T == 32 else 2e-4, 35 if coin else 50, 5, 0.75, 0.4,
                                       0.05, f"videomamba_s16_k400_f{T}_res224.pth", acc["S"][i])
        EXPECTED[ds, "M", T, 224] = _r(8, 8 if T == 32 else 4, 1e-4 if T == 32 else 5e-5, 30 if coin else 50, 5, 0.8, 0.8,
                                       0.05, f"videomamba_m16_k400_f{T}_res224.pth", acc["M"][i])
        EXPECTED[ds, "M-mask", T, 224] = _r(8, 8 if T == 32 else 4, 1e-4 if T == 32 else 5e-5, 30 if coin else 45, 5, 0.8,
                                            0.4, 0.05, f"videomamba_m16_k400_mask_ft_f{T}_res224.pth", acc["M-mask"][i])

# The released fine-tuned checkpoint of each K400 / SSv2 row (docs/design.md §5; Breakfast/COIN have none).
def released_file(ds, model, T, res):
    if ds not in ("k400", "ssv2"):
        return None
    letter = LETTER[MODEL[model]] + "16"
    mask = "_mask_ft" if model == "M-mask" else ""
    return f"videomamba_{letter}_{ds}{mask}_f{T}_res224{'' if res == 224 else f'to{res}'}.pth"


LVU_TASKS = {"relation": 4, "speak": 5, "scene": 6, "director": 10, "genre": 4, "writer": 10, "year": 9}
LVU_REGRESSION = ("like", "view")


@pytest.fixture(autouse=True)
def _fast_meta_init(monkeypatch):
    """Weights on the meta device hold no values: skip the official init (trunc-normal on meta is slow)."""
    from videomamba.models.vision_mamba import VisionMamba

    monkeypatch.setattr(VisionMamba, "_init_official_weights", lambda self, *a, **k: None, raising=False)


def row_key(path, cfg):
    model = {v: k for k, v in MODEL.items() if k != "M-mask"}[cfg.model.name]
    if "mask" in (cfg.model.finetune or ""):
        model = "M-mask"
    return path.parent.name, model, cfg.data.num_frames, cfg.data.input_size


def header(path) -> str:
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return "\n".join(lines)


def header_gpus(path) -> tuple[int, int]:
    m = re.search(r"(\d+) GPUs x batch (\d+)", header(path))
    assert m, f"{path.name}: the header must say 'N GPUs x batch B' (the official run)"
    return int(m.group(1)), int(m.group(2))


def factor(cfg, gpus):
    return cfg.data.batch_size * cfg.data.num_sample * gpus * cfg.train.accum_steps / cfg.train.lr_scale_batch


def build_meta(cfg):
    kw = model_kwargs(cfg, img_size=cfg.data.input_size, num_frames=cfg.data.num_frames, kernel_size=cfg.data.tubelet_size)
    with torch.device("meta"):
        return videomamba.create_model(kw.pop("name"), **kw)


def official_params(name, classes, T, res):
    """§1.5's K400 T=8 count, plus the temporal / spatial position embeddings and the head that change."""
    d = DIM[name]
    return PARAMS_K400_T8[name] + (T - 8) * d + ((res // 16) ** 2 - 196) * d + (classes - 400) * (d + 1)


def test_every_model_zoo_row_has_exactly_one_config():
    found = Counter(row_key(p, load_config(p)) for p in ROW_CONFIGS)
    assert {k: n for k, n in found.items() if n > 1} == {}
    assert sorted(set(EXPECTED) - set(found)) == [], "MODEL_ZOO rows without a config"
    assert sorted(set(found) - set(EXPECTED)) == [], "configs that are no MODEL_ZOO row"
    assert len(EXPECTED) == 20 + 12 + 8 + 8


def test_released_files_are_zoo_entries():
    files = {e.file for e in ZOO.values()}
    for key in EXPECTED:
        f = released_file(*key)
        assert f is None or f in files, f


def test_base_holds_the_official_defaults():
    base = load_config(CFG_DIR / "_base_video.yaml")
    digits = load_config(CFG_DIR / "moving_digits.yaml")
    for section in ("model", "data", "aug", "train", "test"):
        missing = set(digits[section]) - set(base[section])
        assert not missing, f"_base_video.yaml lacks {section}.{sorted(missing)}"
    a, t, d = base.aug, base.train, base.data
    assert (a.mixup, a.cutmix, a.smoothing, a.reprob, a.remode, a.hflip) == (0.8, 1.0, 0.1, 0.25, "pixel", 0.5)
    assert a.auto_augment == "rand-m7-n4-mstd0.5-inc1" and a.scale == [0.08, 1.0]
    assert a.ratio == pytest.approx([3 / 4, 4 / 3])
    assert (d.name, d.data_path, d.num_sample, d.tubelet_size) == ("csv", None, 2, 1)
    assert (t.lr_scale_batch, t.sched_per, t.warmup_lr, t.min_lr, t.amp) == (256, "step", 1e-6, 1e-6, "bf16")
    assert (t.layer_decay, t.layer_decay_mode, t.betas, t.weight_decay) == (0.75, "official", [0.9, 0.999], 0.05)
    assert t.ema_decay is None and t.clip_grad is None and t.weight_decay_end is None
    assert (base.test.num_views, base.test.num_crops, base.test.test_best) == (4, 3, True)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_config_parses_and_builds_its_model(path):
    cfg = load_config(path)
    model = build_meta(cfg)
    n = sum(p.numel() for p in model.parameters())
    assert model.head.out_features == cfg.model.num_classes
    if path.parent.name in ZOO_SETS + ("lvu",):
        assert n == official_params(cfg.model.name, cfg.model.num_classes, cfg.data.num_frames, cfg.data.input_size)


@pytest.mark.parametrize("path", ROW_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_row_config_has_the_official_recipe(path):
    cfg = load_config(path)
    key = row_key(path, cfg)
    want = EXPECTED[key]
    ds, _, T, res = key
    gpus, bs = header_gpus(path)
    t, d, a, m = cfg.train, cfg.data, cfg.aug, cfg.model
    assert (gpus, bs, t.accum_steps) == (want["gpus"], want["bs"], want["accum"]) and d.batch_size == bs
    f = factor(cfg, gpus)
    assert t.lr * f == pytest.approx(want["eff_lr"], rel=1e-9)
    # the official code scales min_lr and warmup_lr by the same factor; ours takes them as given
    assert t.min_lr == pytest.approx(1e-6 * f) and t.warmup_lr == pytest.approx(1e-6 * f)
    stated = re.search(r"effective lr ([0-9.]+e-[0-9]+)", header(path))
    assert stated and float(stated.group(1)) == pytest.approx(want["eff_lr"], rel=1e-9)
    assert (t.epochs, t.warmup_epochs, t.layer_decay, t.weight_decay) == (want["ep"], want["wu"], want["ld"], want["wd"])
    assert m.drop_path_rate == want["dp"] and m.finetune == want["init"]
    assert a.auto_augment == ("rand-m5-n2-mstd0.25-inc1" if want["aa5"] else "rand-m7-n4-mstd0.5-inc1")
    assert cfg.test.paper == {"acc1": want["acc1"]}
    assert (t.layer_decay_mode, t.amp, t.sched_per, t.lr_scale_batch) == ("official", "bf16", "step", 256)
    assert (d.num_sample, d.tubelet_size, d.short_side_size, d.name, d.data_path) == (2, 1, res, "csv", None)
    assert (d.num_frames, d.input_size) == (T, res)
    assert m.num_classes == CLASSES[ds] and (cfg.test.num_views, cfg.test.num_crops) == VIEWS[ds]
    assert (a.mixup, a.cutmix, a.smoothing, a.reprob) == (0.8, 1.0, 0.1, 0.25)
    assert cfg.output_dir == f"outputs/video_sm/{ds}/{path.stem}"
    assert "Deviation" in header(path) and "Official script: exp/" in header(path)
    if ds == "ssv2":
        assert (d.sampler, d.delimiter, a.hflip, cfg.test.num_views) == ("ssv2", " ", 0.0, 2)
    else:
        assert (d.sampler, d.delimiter, a.hflip) == ("sparse", ",", 0.5)
    if res > 224:   # the high-resolution runs continue the 224 model with its head
        assert not m.delete_head and "_f" in m.finetune and "in1k" not in m.finetune
    if ds in ("breakfast", "coin"):
        assert m.delete_head


@pytest.mark.parametrize("path", LVU_CONFIGS, ids=lambda p: p.stem)
def test_lvu_configs(path):
    cfg = load_config(path)
    t, d, a, m = cfg.train, cfg.data, cfg.aug, cfg.model
    gpus, bs = header_gpus(path)
    assert (gpus, bs, d.batch_size) == (8, 8, 8) and t.lr * factor(cfg, gpus) == pytest.approx(2e-4)
    assert (d.sampler, d.trimmed, d.time_stride, d.num_frames, d.input_size, d.delimiter) == ("lvu", 60, 16, 32, 224, ",")
    assert (m.name, m.drop_path_rate, m.finetune, m.delete_head) == (
        "videomamba_tiny", 0.15, "videomamba_t16_k400_f32_res224.pth", True)
    assert (t.epochs, t.warmup_epochs, t.weight_decay, t.layer_decay_mode) == (70, 5, 0.1, "official")
    assert a.auto_augment == "rand-m5-n2-mstd0.25-inc1" and cfg.test.paper is None
    assert f"--config configs/video_sm/lvu/{path.name}" in header(path)   # the documented command
    task = path.stem.split("_")[3]
    if m.get("regression"):
        assert task in LVU_REGRESSION and path.stem.endswith("_regression")
        assert m.num_classes == 1 and (a.mixup, a.cutmix, a.smoothing) == (0.0, 0.0, 0.0)
    else:
        assert m.num_classes == LVU_TASKS[task]


def test_every_lvu_task_has_a_config():
    stems = {p.stem for p in LVU_CONFIGS}
    assert stems == {f"videomamba_tiny_f32_{t}" for t in LVU_TASKS} | {
        f"videomamba_tiny_f32_{t}_regression" for t in LVU_REGRESSION}


def test_readme_lists_every_config_with_its_eval_command():
    text = README.read_text()
    assert "## The embedded default (Moving Digits)" in text
    for p in ROW_CONFIGS:
        cfg = load_config(p)
        rel = p.relative_to(ROOT).as_posix()
        line = next((ln for ln in text.splitlines() if f"`{rel}`" in ln and ln.startswith("|")), None)
        assert line is not None, f"README table lacks {rel}"
        assert f"| {cfg.test.paper['acc1']} |" in line
        f = released_file(*row_key(p, cfg))
        if f:
            assert f"--checkpoint $VIDEOMAMBA_HOME/{f}" in line and f"--config {rel} --eval" in line
    for p in LVU_CONFIGS:
        assert p.relative_to(ROOT).as_posix() in text


LAUNCHERS = sorted((ROOT / "video_sm" / "exp").glob("*.sh")) + sorted((ROOT / "scripts" / "launch").glob("*"))


@pytest.mark.parametrize("path", LAUNCHERS, ids=lambda p: p.name)
def test_launchers_are_executable_and_parse(path):
    subprocess.run(["bash", "-n", str(path)], check=True)
    assert os.access(path, os.X_OK)
    text = path.read_text()
    if path.parent.name == "exp":
        assert "video_sm.finetune" in text or "video_sm.pretrain" in text
    else:   # the task module is the first argument of every shared launcher
        assert re.search(r"^MODULE=\$1; (CONFIG=\$2; shift 2|shift)$", text, re.M)


def test_video_launchers_pass_the_task_module(tmp_path):
    for name, body in (("sbatch", 'printf "%s\\n" "$@"'), ("python", 'printf "%s\\n" "$@"')):
        tool = tmp_path / name
        tool.write_text(f"#!/usr/bin/env bash\n{body}\n")
        tool.chmod(0o755)
    env = dict(os.environ, PATH=f"{tmp_path}:{os.environ['PATH']}")
    env.pop("PYTHON", None)
    r = subprocess.run([str(ROOT / "video_sm/exp/slurm.sh"), "-N", "2", "--", "c.yaml", "--opts", "a=1"],
                       env=env, capture_output=True, text=True, check=True)
    assert r.stdout.split("\n")[:7] == ["-N", "2", str(ROOT / "scripts/launch/slurm_torchrun.sbatch"),
                                        "video_sm.finetune", "c.yaml", "--opts", "a=1"]
    r = subprocess.run([str(ROOT / "video_sm/exp/slurm.sh"), "--", "c.yaml"], env=dict(env, MODE="srun"),
                       capture_output=True, text=True, check=True)
    assert str(ROOT / "scripts/launch/slurm_srun.sbatch") in r.stdout
    r = subprocess.run([str(ROOT / "video_sm/exp/train.sh"), "c.yaml", "--eval"], env=dict(env, NPROC="2"),
                       capture_output=True, text=True, check=True)
    args = r.stdout.split("\n")
    assert "--nproc_per_node=2" in args and args[args.index("video_sm.finetune") - 1] == "-m"
    assert args[args.index("--config") + 1] == "c.yaml" and "--eval" in args


def test_bare_finetune_file_names_are_looked_up_in_videomamba_home(tmp_path, monkeypatch):
    from videomamba.engine.task import resolve_checkpoint

    monkeypatch.setenv("VIDEOMAMBA_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "videomamba_t16_in1k_res224.pth").write_bytes(b"x")
    assert resolve_checkpoint("videomamba_t16_in1k_res224.pth") == str(tmp_path / "videomamba_t16_in1k_res224.pth")
    assert resolve_checkpoint("/abs/elsewhere.pth") == "/abs/elsewhere.pth"   # paths are used as given
    with pytest.raises(FileNotFoundError, match="videomamba_s16_in1k_res224.pth"):
        resolve_checkpoint("videomamba_s16_in1k_res224.pth")


# docs/design.md §8: the official long-video scripts (Breakfast, COIN, LVU) miss --delete_head, and the SSv2
# M-mask 16f->288 script reads SSv2 as Kinetics_sparse (sparse sampling, a training flip). A config that differs
# from its script must say so in its own header, with what it does instead.
@pytest.mark.parametrize("path", [p for p in CONFIGS if p.parent.name in ("breakfast", "coin", "lvu")],
                         ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_headers_state_the_dropped_head(path):
    cfg = load_config(path)
    assert cfg.model.get("delete_head"), f"{path.name}: the K400 head must be dropped for a new label set"
    text = header(path) + "\n" + header(path.parents[1] / f"_base_{path.parent.name}.yaml")
    deviation = re.search(r"Deviations?[^\n]*(\n#  [^\n]*)*", header(path))
    assert deviation, f"{path.name}: no 'Deviation' line in the header"
    assert "none." not in deviation.group(0).split("(")[0], f"{path.name}: says no deviation but drops the head"
    assert re.search(r"head (is )?dropped", text) and "--delete_head" in text


def test_ssv2_mask_288_header_states_sampler_and_flip():
    path = CFG_DIR / "ssv2" / "videomamba_middle_mask_f16_res224to288.yaml"
    cfg, text = load_config(path), header(path)
    assert cfg.data.sampler == "ssv2" and cfg.aug.hflip == 0.0
    assert "Kinetics_sparse" in text and "flip" in text and "data.sampler=sparse aug.hflip=0.5" in text
