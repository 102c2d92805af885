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
