"""The shipped Kinetics-400 class list and the label-file loader."""
from pathlib import Path

import pytest

import videomamba.data.labels as labels
from videomamba.data.labels import available_label_sets, load_label_names

# Indices as in the reference label maps (mmaction2 label_map_k400.txt / PyTorchVideo kinetics_classnames.json).
KNOWN = {
    "abseiling": 0, "air drumming": 1, "archery": 5, "bowling": 31, "dancing ballet": 84,
    "massaging person's head": 196, "passing American football (in game)": 208, "playing guitar": 232,
    "riding a bike": 267, "skiing (not slalom or crosscountry)": 308, "tai chi": 346, "yoga": 398, "zumba": 399,
}


def test_kinetics400_list():
    names = load_label_names("kinetics400")
    assert len(names) == 400 and len(set(names)) == 400
    assert names[0] == "abseiling" and names[-1] == "zumba"
    for name, idx in KNOWN.items():
        assert names[idx] == name, (name, idx, names[idx])
    # The annotation files index the classes in sorted order of the official names.
    assert names == sorted(names)
    assert all(n == n.strip() and "_" not in n and '"' not in n for n in names)
    assert "kinetics400" in available_label_sets()


def test_shipped_file_is_package_data():
    txt = Path(labels.__file__).with_name("kinetics400.txt")
    raw = txt.read_bytes()
    assert raw.endswith(b"\n") and b"\r" not in raw and raw.count(b"\n") == 400
    setup = (Path(__file__).parents[1] / "setup.py").read_text()
    assert '"videomamba.data.labels": ["*.txt"]' in setup


def test_load_from_a_path(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("walking\n  running \njumping\n")
    assert load_label_names(path) == ["walking", "running", "jumping"]
    assert load_label_names(str(path)) == ["walking", "running", "jumping"]
    path.write_bytes(b"\xef\xbb\xbfwalking\r\nrunning")  # BOM, CRLF, no final newline
    assert load_label_names(path) == ["walking", "running"]


@pytest.mark.parametrize("text,line,word", [
    ("walking\n\nrunning\n", 2, "blank line"),
    ("walking\nrunning\n   \n", 3, "blank line"),
    ("walking\nrunning\nwalking\n", 3, "duplicate"),
])
def test_bad_label_files_name_file_and_line(tmp_path, text, line, word):
    path = tmp_path / "classes.txt"
    path.write_text(text)
    with pytest.raises(ValueError) as e:
        load_label_names(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}:{line}: ") and word in msg and "\n" not in msg


def test_empty_or_unknown(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("")
    with pytest.raises(ValueError, match="no class names"):
        load_label_names(path)
    with pytest.raises(FileNotFoundError, match="kinetics400"):
        load_label_names("kinetics_400_typo")
