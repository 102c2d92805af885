"""The video-text configs and launchers: the official UMT recipes of VideoMamba-M (docs/design.md §4) for the
5M/17M/25M corpora in two stages, the zero-shot retrieval protocol per data set, the MODEL_ZOO rows (docs/design.md
§5) each with a config and an eval command per checkpoint. Config files and text only: no model is built."""
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from videomamba.engine import load_config

ROOT = Path(__file__).parents[1]
CFG = ROOT / "configs" / "video_mm"
EXP = ROOT / "video_mm" / "exp"
CORPORA = ("5m", "17m", "25m")
CKPT_TAG = {"5m": "5M", "17m": "17M", "25m": "25M"}
IMAGES = {  # name -> official configs/data.py annotation file (anno_pretrain)
    "cc3m": "cc3m_train.json", "coco": "coco.json", "vg": "vg.json", "sbu": "sbu.json", "cc12m": "cc12m_train.json"}
TRAIN = {
    "5m": {"webvid_2m": ("webvid_train.json", "video"), "cc3m": ("cc3m_train.json", "image")},
    "17m": {"webvid_2m": ("webvid_train.json", "video"), **{k: (v, "image") for k, v in IMAGES.items()}},
    "25m": {"webvid_10m": ("webvid10m_train.json", "video"), **{k: (v, "image") for k, v in IMAGES.items()}},
}
# data set -> (test key, VINDLU annotation file, max_txt_len, paragraph, trim_seconds)
ZERO_SHOT = {
    "msrvtt": ("msrvtt_1k", "msrvtt_ret_test1k.json", 32, False, None),
    "didemo": ("didemo_test", "didemo_ret_test.json", 64, True, 30),
    "anet": ("anet_val", "anet_ret_val.json", 150, True, None),
    "lsmdc": ("lsmdc_test_1000", "lsmdc_ret_test_1000.json", 96, False, None),
    "msvd": ("msvd_test", "msvd_ret_test.json", 64, False, None),
}
# docs/design.md §5, video_mm MODEL_ZOO: (data set, direction) -> 5M, 17M, 25M R@1/R@5/R@10
PAPER = {
    ("MSRVTT", "T2V"): ("32.0/53.1/63.6", "34.7/58.9/68.0", "35.6/58.1/69.5"),
    ("MSRVTT", "V2T"): ("28.2/47.6/56.5", "29.5/49.9/60.1", "29.1/51.6/62.2"),
    ("DiDeMo", "T2V"): ("36.6/61.7/70.3", "42.0/67.3/76.8", "43.1/68.1/77.7"),
    ("DiDeMo", "V2T"): ("38.3/64.7/73.3", "42.3/68.2/76.9", "43.8/69.7/77.8"),
    ("ActivityNet", "T2V"): ("35.9/61.1/72.3", "40.1/65.7/76.1", "41.0/67.5/77.8"),
    ("ActivityNet", "V2T"): ("32.8/58.8/69.9", "34.2/61.8/73.2", "37.1/65.0/75.1"),
    ("LSMDC", "T2V"): ("18.0/36.1/43.4", "18.4/35.3/43.0", "20.4/37.1/45.7"),
    ("LSMDC", "V2T"): ("15.9/31.0/39.2", "16.5/32.1/40.0", "17.9/34.6/42.1"),
    ("MSVD", "T2V"): ("38.0/68.6/79.0", "40.3/70.0/79.7", "42.0/71.6/81.2"),
    ("MSVD", "V2T"): ("57.5/79.9/85.4", "61.8/81.0/87.0", "62.7/82.8/87.6"),
}
ZOO_NAME = {"MSRVTT": "msrvtt", "DiDeMo": "didemo", "ActivityNet": "anet", "LSMDC": "lsmdc", "MSVD": "msvd"}
ALL = sorted(CFG.rglob("*.yaml"))
PAPER_CFGS = ([CFG / "_base_pretrain.yaml"]
              + [CFG / f"pretrain_{c}_{s}.yaml" for c in CORPORA for s in ("masked", "unmasked")]
              + [CFG / "zero_shot" / f"{d}.yaml" for d in ZERO_SHOT])


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def raw(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_every_recipe_and_data_set_has_a_config():
    names = {rel(p) for p in ALL}
    assert {rel(p) for p in PAPER_CFGS} <= names
    assert {p.stem for p in (CFG / "zero_shot").glob("*.yaml")} == set(ZERO_SHOT)


@pytest.mark.parametrize("path", ALL, ids=rel)
def test_every_config_loads(path):
    cfg = load_config(path)
    assert cfg.output_dir.startswith("outputs/video_mm/")
    if path in PAPER_CFGS:    # the paper's model: VideoMamba-M with BERT-base fusion from layer 9
        assert cfg.model.vision.variant == "videomamba_middle" and cfg.model.text.fusion_layer == 9
    for name, entry in {**cfg.data.train, **cfg.data.test}.items():
        assert entry.anno.startswith("{anno_root}/") and entry.prefix.startswith("{media_root}/"), name
        assert entry.media in ("video", "image"), name
    for entry in cfg.data.test.values():
        assert entry.media == "video" and isinstance(entry.max_txt_len, int)


def _common_recipe(cfg):
    t, d = cfg.train, cfg.data
    assert (t.betas, t.weight_decay, t.eps, t.clip_grad, t.lr_scale_batch) == ([0.9, 0.999], 0.05, 1e-8, None, None)
    assert (t.sched_per, t.layer_decay, t.amp, t.accum_steps) == ("step", None, "bf16", 1)
    assert t.min_lr == pytest.approx(t.lr * 0.01)     # min_lr_multi 0.01
    assert (d.num_frames, d.sample_train, d.sample_test, d.input_size, d.max_txt_len) == (8, "rand", "middle", 224, 32)
    assert d.scale == [0.5, 1.0] and d.hflip == 0.5
    k = cfg.model.vision.kwargs
    assert (k.num_frames, k.img_size, k.drop_path_rate, k.clip_output_dim, k.clip_decoder_embed_dim) == (8, 224, 0.25, 512, 576)
    assert (cfg.model.embed_dim, cfg.model.temp, cfg.model.mlm_prob, cfg.eval.k_test) == (512, 0.07, 0.5, 128)
    assert list(d.test) == ["msrvtt_1k"] and cfg.eval.select == "msrvtt_1k"
    test = d.test.msrvtt_1k
    assert (test.anno, test.max_txt_len, test.media) == ("{anno_root}/anno_downstream/msrvtt_test1k.json", 32, "video")
    assert "trim_seconds" not in test and not test.get("paragraph")


@pytest.mark.parametrize("corpus", CORPORA)
def test_masked_stage_is_the_official_recipe(corpus):
    path = CFG / f"pretrain_{corpus}_masked.yaml"
    assert raw(path)["_base_"] == "_base_pretrain.yaml"
    cfg = load_config(path)
    _common_recipe(cfg)
    t = cfg.train
    assert (t.epochs, t.warmup_epochs, t.lr, t.min_lr, t.warmup_lr) == (10, 1, 4e-4, 4e-6, 0.0)
    assert cfg.data.batch_size == 128 and cfg.data.num_workers == 12
    assert cfg.mask.video == {"type": "attention", "ratio": 0.8} and cfg.mask.image == {"type": "attention", "ratio": 0.5}
    assert cfg.loss == {"vtc": 1.0, "vtm": 1.0, "mlm": 1.0, "uta": 1.0}
    assert cfg.teacher.path is None and "REQUIRED" in path.read_text()   # given on the command line
    assert cfg.model.vision.pretrained == "videomamba_m16_k400_mask_pt_f8_res224.pth" and cfg.model.pretrained is None
    assert cfg.output_dir == f"outputs/video_mm/pretrain_{corpus}_masked"
    train = {name: (Path(e.anno).name, e.media) for name, e in cfg.data.train.items()}
    assert train == TRAIN[corpus]
    assert list(cfg.data.train) == list(TRAIN[corpus])          # the official corpus order
    for e in cfg.data.train.values():
        assert e.anno.startswith("{anno_root}/anno_pretrain/")
    gpus = {"5m": "2 nodes x 8 GPUs", "17m": "4 nodes x 8 GPUs", "25m": "4 nodes x 8 GPUs"}[corpus]
    assert gpus in path.read_text()
    if corpus == "25m":
        assert "f-prefix" in path.read_text()                   # the official webvid_10m path bug is noted


@pytest.mark.parametrize("corpus", CORPORA)
def test_unmasked_stage_continues_the_masked_one(corpus):
    path = CFG / f"pretrain_{corpus}_unmasked.yaml"
    assert raw(path)["_base_"] == f"pretrain_{corpus}_masked.yaml"
    cfg, masked = load_config(path), load_config(CFG / f"pretrain_{corpus}_masked.yaml")
    _common_recipe(cfg)
    t = cfg.train
    assert (t.epochs, t.warmup_epochs, t.lr, t.min_lr) == (1, 0.2, 8e-5, 8e-7)
    assert cfg.data.batch_size == 64
    assert cfg.teacher.path is None and cfg.loss.uta == 0 and (cfg.loss.vtc, cfg.loss.vtm, cfg.loss.mlm) == (1, 1, 1)
    assert cfg.mask.video.type == "none" and cfg.mask.image.type == "none"
    assert cfg.model.vision.pretrained is None
    assert cfg.model.pretrained == f"{masked.output_dir}/checkpoint-latest.pth"
    assert cfg.output_dir == f"outputs/video_mm/pretrain_{corpus}_unmasked" != masked.output_dir
    assert f"videomamba_m16_{CKPT_TAG[corpus]}_masked_pt_f8_res224.pth" in path.read_text()   # the official start
    assert cfg.data.train == masked.data.train and cfg.data.test == masked.data.test
    # only the stage keys differ from the masked stage
    changed = {k for k in t if t[k] != masked.train[k]}
    assert changed == {"epochs", "warmup_epochs", "lr", "min_lr"}


@pytest.mark.parametrize("name", sorted(ZERO_SHOT))
def test_zero_shot_protocol(name):
    path = CFG / "zero_shot" / f"{name}.yaml"
    assert raw(path)["_base_"] == "../_base_pretrain.yaml"
    cfg = load_config(path)
    key, anno, max_len, paragraph, trim = ZERO_SHOT[name]
    d = cfg.data
    assert (d.num_frames, d.sample_test, d.input_size, d.eval_batch_size) == (8, "middle", 224, 64)
    assert cfg.model.vision.kwargs.num_frames == 8 and cfg.model.vision.kwargs.img_size == 224
    assert list(d.test) == [key] and cfg.eval.select == key and cfg.eval.k_test == 128
    test = d.test[key]
    assert test.anno == f"{{anno_root}}/anno_downstream/{anno}" and test.media == "video"
    assert test.max_txt_len == max_len and d.max_txt_len == max_len
    assert bool(test.get("paragraph", False)) is paragraph
    assert test.get("trim_seconds") == trim
    assert d.train == {}
    assert cfg.model.vision.pretrained is None and cfg.model.pretrained is None and cfg.teacher.path is None
    assert cfg.loss.uta == 0 and cfg.mask.video.type == "none"
    assert cfg.output_dir == f"outputs/video_mm/zero_shot/{name}"


@pytest.mark.parametrize("name", sorted(ZERO_SHOT))
def test_zero_shot_header_gives_a_command_per_checkpoint_and_the_paper_numbers(name):
    text = (CFG / "zero_shot" / f"{name}.yaml").read_text()
    header = text.split("\n_base_:")[0]
    for tag in CKPT_TAG.values():
        cmd = (f"python -m video_mm.retrieval --config configs/video_mm/zero_shot/{name}.yaml --zero-shot \\\n"
               f"#       --checkpoint $VIDEOMAMBA_HOME/videomamba_m16_{tag}_f8_res224.pth")
        assert cmd in header
    assert header.count("model.text.path=/models/bert-base-uncased") >= 3
    zoo = next(n for n, k in ZOO_NAME.items() if k == name)
    for direction in ("T2V", "V2T"):
        line = next(ln for ln in header.splitlines() if ln.startswith(f"#   {direction} "))
        assert re.findall(r"\d+\.\d/\d+\.\d/\d+\.\d", line) == list(PAPER[(zoo, direction)])


def _video_text_section() -> str:
    text = (ROOT / "MODEL_ZOO.md").read_text()
    start = text.index("## Video-text (VideoMamba-M, zero-shot R@1/R@5/R@10)")
    return text[start:text.index("\n## ", start + 1)]


def _rows(section: str, first: str):
    lines = section.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith(f"| {first} |"))
    rows = []
    for ln in lines[head + 2:]:
        if not ln.startswith("|"):
            break
        rows.append([c.strip() for c in ln.strip().strip("|").split("|")])
    return rows


def test_model_zoo_video_text_rows_have_config_and_commands():
    rows = _rows(_video_text_section(), "data set")
    assert {(r[0], r[1]): tuple(r[2:5]) for r in rows} == PAPER and len(rows) == len(PAPER)
    for r in rows:
        cfg = r[5].strip("`")
        assert cfg == f"configs/video_mm/zero_shot/{ZOO_NAME[r[0]]}.yaml" and (ROOT / cfg).is_file()
        cmds = r[6].split("<br>")
        assert len(cmds) == 3
        for cmd, tag in zip(cmds, CKPT_TAG.values()):
            assert cmd.startswith("`python -m video_mm.retrieval ") and f"--config {cfg} --zero-shot" in cmd
            assert f"--checkpoint $VIDEOMAMBA_HOME/videomamba_m16_{tag}_f8_res224.pth" in cmd


def test_model_zoo_lists_the_pretraining_configs_per_corpus():
    rows = _rows(_video_text_section(), "corpus")
    assert [r[0] for r in rows] == ["5M", "17M", "25M"]
    for r, corpus in zip(rows, CORPORA):
        for stage, cell in (("masked", r[3]), ("unmasked", r[4])):
            cfg = f"configs/video_mm/pretrain_{corpus}_{stage}.yaml"
            assert f"`{cfg}`" in cell and (ROOT / cfg).is_file()
        assert f"videomamba_m16_{r[0]}_masked_pt_f8_res224.pth" in r[3] and f"videomamba_m16_{r[0]}_f8_res224.pth" in r[4]
        assert r[2] == ("2×8" if corpus == "5m" else "4×8")
        assert f"-- configs/video_mm/pretrain_{corpus}_masked.yaml" in r[5] and "teacher.path=" in r[5]


def test_model_zoo_says_the_whole_video_text_model_loads():
    text = (ROOT / "MODEL_ZOO.md").read_text()
    row = next(ln for ln in text.splitlines() if ln.startswith("| video-text ("))
    assert "videomamba.checkpoint.video_text.load_video_text_checkpoint" in row
    assert "`text_encoder.bert.*`" in row and "`clip_teacher.*`" in row and "`VisionMamba`" in row


LAUNCHERS = ("pretrain.sh", "pretrain_slurm.sh", "zero_shot.sh", "pretrain_two_stage.sh")


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launchers_parse_and_are_executable(name):
    path = EXP / name
    assert path.stat().st_mode & stat.S_IXUSR
    assert "set -euo pipefail" in path.read_text()
    subprocess.run(["bash", "-n", str(path)], check=True)


@pytest.fixture
def fake_python(tmp_path):
    """An interpreter stand-in for scripts/launch/torchrun.sh: logs its arguments and writes the
    checkpoint-latest.pth of the output_dir it was given (what a finished stage leaves)."""
    log = tmp_path / "calls.txt"
    exe = tmp_path / "python"
    exe.write_text(f"""#!/usr/bin/env bash
echo "$*" >> {log}
for a in "$@"; do case "$a" in output_dir=*) d=${{a#output_dir=}}; mkdir -p "$d"; touch "$d/checkpoint-latest.pth";; esac; done
""")
    exe.chmod(0o755)
    return exe, log


def _run(script, args, exe, tmp_path, **env):
    return subprocess.run(["bash", str(EXP / script), *args], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHON": str(exe), "NPROC": "2", **env})


def test_two_stage_launcher_runs_masked_then_unmasked(fake_python, tmp_path):
    exe, log = fake_python
    out = tmp_path / "runs"
    r = _run("pretrain_two_stage.sh", ["17M", "--opts", "data.anno_root=/a", "teacher.path=/t.pth"], exe, tmp_path,
             OUTPUT_ROOT=str(out))
    assert r.returncode == 0, r.stderr
    masked, unmasked = log.read_text().splitlines()
    assert "--nproc_per_node=2 -m video_mm.pretrain --config" in masked
    assert masked.endswith("configs/video_mm/pretrain_17m_masked.yaml --opts data.anno_root=/a teacher.path=/t.pth "
                           f"output_dir={out}/pretrain_17m_masked")
    assert "configs/video_mm/pretrain_17m_unmasked.yaml --opts data.anno_root=/a teacher.path=/t.pth " in unmasked
    assert unmasked.endswith(f"output_dir={out}/pretrain_17m_unmasked "
                             f"model.pretrained={out}/pretrain_17m_masked/checkpoint-latest.pth teacher.path=null")
    # the per-stage output_dir is the launcher's; a bad corpus is refused
    assert _run("pretrain_two_stage.sh", ["5m", "--opts", "output_dir=x"], exe, tmp_path).returncode == 2
    assert _run("pretrain_two_stage.sh", ["10m"], exe, tmp_path).returncode == 2


def test_zero_shot_and_pretrain_launchers(fake_python, tmp_path):
    exe, log = fake_python
    r = _run("zero_shot.sh", ["didemo", "ck.pth", "--opts", "a=1"], exe, tmp_path)
    assert r.returncode == 0, r.stderr
    assert log.read_text().strip().endswith(
        f"-m video_mm.retrieval --config {CFG}/zero_shot/didemo.yaml --zero-shot --checkpoint ck.pth --opts a=1")
    assert _run("zero_shot.sh", ["kinetics", "ck.pth"], exe, tmp_path).returncode == 2
    r = _run("pretrain.sh", ["c.yaml", "4", "--opts", "a=1"], exe, tmp_path)
    assert r.returncode == 0, r.stderr
    assert log.read_text().splitlines()[-1].endswith("--nproc_per_node=4 -m video_mm.pretrain --config c.yaml --opts a=1")


def test_embedded_pipeline_runs_the_variant_only_when_asked_and_the_video_text_stages_on_both_cores(tmp_path):
    log = tmp_path / "calls.txt"
    exe = tmp_path / "python"   # logs "<processes asked for> <OMP threads> <arguments>", finishes every stage
    exe.write_text(f"""#!/usr/bin/env bash
echo "${{VIDEOMAMBA_CPU_PROCESSES:-none}} ${{OMP_NUM_THREADS:-unset}} $*" >> {log}
for a in "$@"; do case "$a" in output_dir=*) d=${{a#output_dir=}}; mkdir -p "$d"; touch "$d/checkpoint-latest.pth" "$d/checkpoint-best.pth";; esac; done
""")
    exe.chmod(0o755)
    env = {"OUTPUTS": str(tmp_path / "out")}

    def stages(*args):
        log.unlink(missing_ok=True)
        r = _run("moving_digits.sh", list(args), exe, tmp_path, **env)
        assert r.returncode == 0, r.stdout + r.stderr
        return [line.split(" ", 2) for line in log.read_text().splitlines()]

    calls = stages()
    pretrain = [c for c in calls if "-m video_mm.pretrain" in c[2]]
    assert [c[2].split("--config ")[1].split()[0] for c in pretrain] == [
        "configs/video_mm/moving_digits_masked.yaml", "configs/video_mm/moving_digits_unmasked.yaml"]
    assert all(c[0] == "2" and c[1] == "unset" for c in pretrain)       # one process per core
    assert not any("no_masked" in c[2] for c in calls)                 # the variant only with --with-variant
    assert any("--random-init" in c[2] for c in calls)
    calls = stages("--with-variant")
    variant = [c for c in calls if "moving_digits_no_masked" in c[2] and "-m video_mm.pretrain" in c[2]]
    assert len(variant) == 2 and all(c[0] == "2" for c in variant)
    r = _run("moving_digits.sh", ["--variant"], exe, tmp_path, **env)
    assert r.returncode == 2 and "usage" in r.stderr


def test_checkpoint_output_options_fill_defaults_and_change_only_what_differs():
    from videomamba.engine.config import Config
    from videomamba.tasks.video_text.recipe import adopt_checkpoint_options, effective_options

    assert effective_options({}) == {"fusion_tokens": "patches", "pool": "cls", "itm_pool": "cls", "keep_temporal": True}
    assert effective_options({"text": {"pool": "mean", "itm_pool": None}})["itm_pool"] == "mean"   # as pool
    said = []
    cfg = Config({"model": {"text": {"pool": "mean"}, "vision": {}}})
    saved = {"text": {"pool": "mean", "itm_pool": "mean"}, "vision": {"kwargs": {"fusion_tokens": "patches"}},
             "keep_temporal": True}
    assert adopt_checkpoint_options(cfg, saved, "ck.pth", said.append) is cfg and said == []   # the same outputs
    saved = {**saved, "keep_temporal": False, "vision": {"kwargs": {"fusion_tokens": "patches+cls"}}}
    adopt_checkpoint_options(cfg, saved, "ck.pth", said.append)
    assert cfg["model"]["vision"]["kwargs"]["fusion_tokens"] == "patches+cls" and cfg["model"]["keep_temporal"] is False
    assert said == ["model.vision.kwargs.fusion_tokens = patches+cls from ck.pth (the config says patches)",
                    "model.keep_temporal = False from ck.pth (the config says True)"]
    assert adopt_checkpoint_options(cfg, None, "official.pth", said.append) is cfg   # official files: no description
