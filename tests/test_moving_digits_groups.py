"""The (digit, motion) group labels of the video-text pipeline's video stage (data.name moving_digits_groups),
checked against the motion variant's own labels and the digit images' targets."""
from pathlib import Path

from sklearn.datasets import load_digits

from videomamba.data.moving_digits import DIGIT_WORDS, default_root, make_group_variant


def test_each_video_is_labelled_with_its_digit_and_its_motion():
    groups = make_group_variant()
    names = (groups / "classes.txt").read_text().splitlines()
    assert len(names) == len(set(names)) == 80
    videos = default_root() / "videos"
    motions = (videos / "classes.txt").read_text().splitlines()
    target = load_digits().target
    for split in ("train", "val", "test"):
        motion_of = dict(line.split(",") for line in (videos / f"{split}.csv").read_text().split())
        rows = [line.split(",") for line in (groups / f"{split}.csv").read_text().split()]
        assert [rel for rel, _ in rows] == list(motion_of)          # the same videos in the same order
        for rel, label in rows:
            digit = DIGIT_WORDS[target[int(Path(rel).stem.split("_")[0])]]
            assert names[int(label)] == f"{digit} {motions[int(motion_of[rel])]}", rel


def test_the_registered_source_reads_the_groups(tmp_path):
    from videomamba.data.video_classification import resolve_files
    from videomamba.engine.config import load_config

    cfg = load_config("configs/video_sm/moving_digits_groups.yaml", [f"output_dir={tmp_path}"])
    files, names = resolve_files(cfg)
    assert len(names) == cfg.model.num_classes == 80
    assert files["test"].read_text() == (make_group_variant() / "test.csv").read_text()
    assert Path(cfg.data.prefix) == default_root() / "videos"


def test_the_class_factors_are_each_groups_digit_and_motion():
    import json

    from videomamba.data.moving_digits import MOTIONS

    groups = make_group_variant()
    names = (groups / "classes.txt").read_text().splitlines()
    factors = json.loads((groups / "class_factors.json").read_text())
    assert set(factors) == {"digit", "motion"}
    for c, name in enumerate(names):
        word, motion = name.split(" ", 1)
        assert DIGIT_WORDS[factors["digit"][c]] == word and MOTIONS[factors["motion"][c]] == motion, name
    assert sorted(set(factors["digit"])) == list(range(10)) and sorted(set(factors["motion"])) == list(range(8))
