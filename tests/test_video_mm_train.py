"""video_mm end to end on a tiny slice of the embedded Moving Digits captions: pretraining with all four losses
(videos and images alternating), exact resume of an interrupted run, zero-shot retrieval from the checkpoint
(the same numbers as at the end of training), 2 ranks (training, and evaluation equal to one rank's), and
``videomamba search`` with a reused, incrementally updated index."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parents[1]
CONFIG = ROOT / "configs" / "video_mm" / "moving_digits_masked.yaml"


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    from videomamba.models.clip_teacher import CLIPTeacher, build_clip_vit, convert_clip

    torch.manual_seed(0)
    teacher = CLIPTeacher(build_clip_vit(img_size=32, patch_size=16, width=64, layers=2), torch.randn(64, 64))
    return convert_clip(teacher, tmp_path_factory.mktemp("teacher") / "teacher.pth")


def tiny_opts(out, teacher, epochs=2):
    return [f"output_dir={out}", f"teacher.path={teacher}", f"train.epochs={epochs}", "data.limit=40",
            "data.batch_size=8", "data.input_size=32", "model.vision.kwargs.img_size=32",
            "model.vision.kwargs.patch_size=16", "model.vision.kwargs.embed_dim=64", "model.vision.kwargs.depth=2",
            "model.vision.kwargs.clip_output_dim=64", "model.vision.kwargs.clip_decoder_embed_dim=64",
            "+data.test.digits_val={anno: '{anno_root}/val_video.json', prefix: '{media_root}/videos', media: video, "
            "max_txt_len: 10, limit: 12}", "eval.k_test=6",
            "train.warmup_epochs=1"]   # epoch 0 is all warmup: its lr does not depend on train.epochs (resume test)


def run_pretrain(opts, extra=()):
    from video_mm.pretrain import main

    return main(["--config", str(CONFIG), "--no-progress", *extra, "--opts", *opts])


def steps(out):
    return [json.loads(l) for l in (Path(out) / "train_steps.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, teacher_file):
    out = tmp_path_factory.mktemp("mm") / "run"
    run_pretrain(tiny_opts(out, teacher_file))
    return out


def test_training_runs_all_losses_on_both_media(trained):
    log = [json.loads(l) for l in (trained / "log.txt").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [0, 1]
    for k in ("train_loss_vtc", "train_loss_vtm", "train_loss_mlm", "train_loss_uta", "val_r_mean",
              "val_digits_val_itm_img_mdr", "val_digits_val_itc_txt_r1"):
        assert k in log[-1], k
    assert len(steps(trained)) == 2 * 10                       # 40 videos + 40 images per epoch, batch 8
    res = json.loads((trained / "results.json").read_text())["digits_val"]
    assert res["n_videos"] == 12 and res["n_texts"] == 24
    ck = torch.load(trained / "checkpoint-latest.pth", map_location="cpu", weights_only=False)
    assert ck["extra"]["video_text_model"]["text"]["pool"] == "mean"
    assert any(k.startswith("clip_teacher.") for k in ck["model"])


def test_resume_continues_bit_for_bit(tmp_path, teacher_file, trained):
    out = tmp_path / "resumed"
    run_pretrain(tiny_opts(out, teacher_file, epochs=1))
    run_pretrain(tiny_opts(out, teacher_file, epochs=2))
    assert [s["loss"] for s in steps(out)] == [s["loss"] for s in steps(trained)]
    a = torch.load(out / "checkpoint-latest.pth", map_location="cpu", weights_only=False)["model"]
    b = torch.load(trained / "checkpoint-latest.pth", map_location="cpu", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_zero_shot_from_the_checkpoint_reproduces_the_final_evaluation(tmp_path, teacher_file, trained):
    from video_mm.retrieval import main

    out = tmp_path / "zs"
    main(["--config", str(CONFIG), "--zero-shot", "--no-progress", "--checkpoint", str(trained / "checkpoint-latest.pth"),
          "--opts", *tiny_opts(out, teacher_file), "loss.uta=0"])
    got = json.loads((out / "results.json").read_text())["digits_val"]
    want = json.loads((trained / "results.json").read_text())["digits_val"]
    for kind in ("itm", "itc"):
        for k, v in want[kind].items():
            assert got[kind][k] == pytest.approx(v, abs=1e-9), (kind, k)


def test_zero_shot_takes_the_output_options_from_the_checkpoint(tmp_path, teacher_file, trained, capsys):
    """The run trained with fusion_tokens patches+cls and the ITM on the mean fusion output (the config's);
    evaluated under a config saying otherwise, the checkpoint's options win (with a line saying so) and the
    numbers are the training run's own."""
    from video_mm.retrieval import main

    ck = torch.load(trained / "checkpoint-latest.pth", map_location="cpu", weights_only=False)
    meta = ck["extra"]["video_text_model"]
    assert meta["vision"]["kwargs"]["fusion_tokens"] == "patches+cls" and meta["text"]["itm_pool"] == "mean"
    out = tmp_path / "zs"
    main(["--config", str(CONFIG), "--zero-shot", "--no-progress", "--checkpoint", str(trained / "checkpoint-latest.pth"),
          "--opts", *tiny_opts(out, teacher_file), "loss.uta=0", "model.vision.kwargs.fusion_tokens=patches",
          "model.text.itm_pool=cls"])
    said = capsys.readouterr().out
    assert "model.vision.kwargs.fusion_tokens = patches+cls from " in said and "(the config says patches)" in said
    assert "model.text.itm_pool = mean from " in said and "(the config says cls)" in said
    got = json.loads((out / "results.json").read_text())["digits_val"]["itm"]
    want = json.loads((trained / "results.json").read_text())["digits_val"]["itm"]
    assert got == pytest.approx(want, abs=1e-9)


def _torchrun(args, port, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
                        *args], capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_two_ranks_train_and_evaluate_as_one(tmp_path, teacher_file, trained):
    """2 gloo ranks: training runs (DDP over image and video steps), and the sharded retrieval evaluation of
    the single-process checkpoint gives exactly the single-process numbers."""
    out = tmp_path / "two"
    _torchrun(["-m", "video_mm.retrieval", "--config", str(CONFIG), "--zero-shot", "--no-progress",
               "--checkpoint", str(trained / "checkpoint-latest.pth"), "--opts", *tiny_opts(out, teacher_file),
               "loss.uta=0"], 29631, tmp_path)
    got = json.loads((out / "results.json").read_text())["digits_val"]
    want = json.loads((trained / "results.json").read_text())["digits_val"]
    for kind in ("itm", "itc"):
        for k, v in want[kind].items():
            assert got[kind][k] == pytest.approx(v, abs=1e-6), (kind, k)
    train_out = tmp_path / "two_train"
    _torchrun(["-m", "video_mm.pretrain", "--config", str(CONFIG), "--no-progress", "--opts",
               *tiny_opts(train_out, teacher_file, epochs=1)], 29632, tmp_path)
    log = [json.loads(l) for l in (train_out / "log.txt").read_text().splitlines()]
    assert len(log) == 1 and len(steps(train_out)) == 4       # 40 per media over 2 ranks: 20 each, 2 batches of 8


def test_search_builds_reuses_and_updates_its_index(tmp_path, trained, capsys):
    from videomamba.cli import main
    from videomamba.data.moving_digits import default_root

    videos = tmp_path / "videos"
    videos.mkdir()
    src = sorted((default_root() / "videos" / "test").glob("*.mp4"))[:5]
    for p in src[:4]:
        shutil.copy(p, videos / p.name)
    index = tmp_path / "index"
    ck = str(trained / "checkpoint-latest.pth")
    assert main(["search", "a seven moving left", "--index", str(index), "--videos", str(videos),
                 "--checkpoint", ck, "--json", "--top", "3"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    assert main(["search", "a seven moving left", "--index", str(index), "--json", "--top", "3"]) == 0
    assert json.loads(capsys.readouterr().out) == hits           # the index alone answers the query
    shutil.copy(src[4], videos / src[4].name)
    assert main(["search", "a two zooming in", "--index", str(index), "--videos", str(videos), "--top", "5",
                 "--rerank", "3"]) == 0
    out = capsys.readouterr().out
    assert "5 videos (1 encoded, 4 reused)" in out and "ITM re-ranked" in out
    assert main(["search", "x", "--index", str(tmp_path / "none")]) == 1
    assert "no index.pt" in capsys.readouterr().err
    assert main(["search", "x", "--index", str(tmp_path / "new"), "--videos", str(videos)]) == 1
    assert "building one needs --checkpoint" in capsys.readouterr().err


def test_two_ranks_draw_the_media_order_of_rank_0(tmp_path):
    """Ranks seeded differently still step through the same media order (rank 0's, broadcast)."""
    script = tmp_path / "order.py"
    script.write_text(
        "from videomamba.engine.dist import init_distributed, cleanup\n"
        "from videomamba.engine.multi_loader import AlternatingLoader\n"
        "info = init_distributed(device='cpu')\n"
        "al = AlternatingLoader({'video': [0] * 6, 'image': [1] * 4}, seed=100 * info.rank)\n"
        "import pathlib, sys\n"
        "order = ''.join(n[0] for n in al.order())\n"
        "pathlib.Path(sys.argv[1], f'rank{info.rank}.txt').write_text(order)\n"
        "cleanup()\n")
    # each rank writes its own file: both ranks share one stdout pipe, and CI runs saw their lines interleave
    out = _torchrun([str(script), str(tmp_path)], 29633, tmp_path)
    orders = {r: (tmp_path / f"{r}.txt").read_text() for r in ("rank0", "rank1")
              if (tmp_path / f"{r}.txt").exists()}
    local = alternating_order(seed=0)
    assert orders.get("rank0") == orders.get("rank1") == local, (orders, out)


def alternating_order(seed):
    from videomamba.engine.multi_loader import AlternatingLoader

    return "".join(n[0] for n in AlternatingLoader({"video": [0] * 6, "image": [1] * 4}, seed=seed).order())
