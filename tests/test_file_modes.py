"""Files people share are written with the process umask (0o644 under the usual 0o022), like any other tool,
not with a temporary file's private 0o600: checkpoints, training states, configs, model folders, results."""
import os
import re
import stat
from pathlib import Path

import pytest
import torch

import videomamba
from videomamba.engine import save_config
from videomamba.engine.train_state import save_training_state
from videomamba.utils.files import atomic_write

PACKAGE = Path(__file__).resolve().parents[1] / "videomamba"


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_every_shared_file_gets_the_umask(tmp_path, umask):
    expected = 0o666 & ~umask
    model = videomamba.VisionMamba(img_size=32, patch_size=8, depth=1, embed_dim=16, num_classes=2)
    files = [
        atomic_write(tmp_path / "a.txt", lambda t: Path(t).write_text("x")) or tmp_path / "a.txt",
        videomamba.save_checkpoint(model, tmp_path / "w.safetensors"),
        videomamba.save_checkpoint(model, tmp_path / "w.pth"),
        save_config({"a": 1}, tmp_path / "run" / "config.yaml"),
    ]
    save_training_state(tmp_path / "state.pth", model, epoch=0, step=0)
    files.append(tmp_path / "state.pth")
    folder = model.save_pretrained(tmp_path / "folder")
    files += [folder / "config.json", folder / "model.safetensors", folder / "README.md"]
    for f in files:
        assert mode(f) == expected, f"{f}: {oct(mode(f))}, expected {oct(expected)}"


def test_no_writer_bypasses_the_atomic_write():
    """Private temporary files are made in one place (utils/files.py; the kernel build cache sets its own mode)."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name in ("files.py", "_build.py"):
            continue
        if re.search(r"mkstemp|NamedTemporaryFile\(", path.read_text()):
            offenders.append(str(path.relative_to(PACKAGE)))
    assert not offenders, offenders
