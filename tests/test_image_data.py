"""Image data: the Moving Digits image variant and meta-file / ImageFolder readers with clear errors."""
import pytest

from videomamba.data.image_dataset import DataError, build_image_dataset, read_meta_file
from videomamba.data.moving_digits import make_image_variant


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return make_image_variant(tmp_path_factory.mktemp("md"), canvas=32)


def test_moving_digits_splits_are_disjoint_and_deterministic(digits, tmp_path):
    ids = {}
    for split in ("train", "val", "test"):
        lines = (digits / f"{split}.txt").read_text().splitlines()
        ids[split] = {line.split("/")[2].split("_")[0] for line in lines}
        assert {int(line.split()[1]) for line in lines} == set(range(10))
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    again = make_image_variant(tmp_path / "again", canvas=32)
    assert (again / "val.txt").read_text() == (digits / "val.txt").read_text()
    assert (again / "val" / "3").exists()


def test_meta_and_folder_readers_agree(digits):
    meta = build_image_dataset(digits, digits / "val.txt", num_classes=10)
    folder = build_image_dataset(digits / "val", num_classes=10)
    assert len(meta) == len(folder)
    img, label = meta[0]
    assert img.size == (32, 32) and 0 <= label < 10


def test_bad_meta_lines_name_file_and_line(digits, tmp_path):
    bad = tmp_path / "bad.txt"
    first = (digits / "val.txt").read_text().splitlines()[0]
    bad.write_text(f"{first}\nval/0/missing.png 0\n")
    with pytest.raises(DataError, match=r"bad.txt:2: image not found"):
        read_meta_file(bad, digits)
    bad.write_text(f"{first.split()[0]} 12\n")
    with pytest.raises(DataError, match=r"bad.txt:1: label 12 out of range \[0, 10\)"):
        read_meta_file(bad, digits, num_classes=10)
    bad.write_text("no_label_here\n")
    with pytest.raises(DataError, match=r"bad.txt:1: expected"):
        read_meta_file(bad, digits)


def test_unreadable_image_is_named(digits, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    meta = tmp_path / "m.txt"
    meta.write_text("# comment\nbroken.png 1\n")
    ds = build_image_dataset(tmp_path, meta, num_classes=10)
    with pytest.raises(DataError, match=r"cannot read image .*broken.png \(listed in .*m.txt:2\)"):
        ds[0]


def test_video_scale_images_hold_the_digit_at_the_videos_size(digits, tmp_path):
    """The video-text pipeline's images: a 64 px canvas with the digit at most 32 px (24-32 px rendered; the
    bright part of a blurred 8x8 digit is a little smaller), the same digit split as the default variant, whose
    settings stamp (and so every existing cache) is unchanged."""
    import json

    import numpy as np
    from PIL import Image

    from videomamba.data.moving_digits import make_video_scale_images

    root = make_video_scale_images(tmp_path)
    sides = []
    for line in (root / "val.txt").read_text().splitlines()[:60]:
        img = np.asarray(Image.open(root / line.split()[0]).convert("L"))
        assert img.shape == (64, 64)
        ys, xs = np.nonzero(img > 128)            # the noise (sigma 10 grey levels) never reaches 128
        sides.append(max(ys.max() - ys.min(), xs.max() - xs.min()) + 1)
    assert max(sides) <= 32 and np.mean(sides) >= 16, sides
    for split in ("train", "val", "test"):
        ids = lambda folder: {l.split("/")[2].split("_")[0] for l in (folder / f"{split}.txt").read_text().splitlines()}
        assert ids(root) == ids(digits)
    assert "scale" not in json.loads((digits / "settings.json").read_text())
    assert json.loads((root / "settings.json").read_text())["scale"] == [0.375, 0.5]


def test_video_scale_images_need_the_videos_canvas():
    from pathlib import Path

    from videomamba.data.image_classification import image_datasets
    from videomamba.engine import load_config

    cfg = load_config(Path(__file__).parents[1] / "configs/image_sm/moving_digits_video_scale.yaml",
                      ["data.img_size=32"])
    with pytest.raises(ValueError, match="img_size must be 64"):
        image_datasets(cfg)
