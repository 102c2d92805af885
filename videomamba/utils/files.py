"""Atomic file writes: readers (and a resumed run) never see half a file. Files get the permissions any tool
gives a new file (``0o666`` less the process umask), not the private ``0o600`` of a temporary file."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _umask() -> int:
    """The process umask. Linux reports it in /proc (a read, safe with other threads creating files); elsewhere
    it can only be read by setting it, so it is put straight back."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def umask_mode(base: int = 0o666) -> int:
    """``base`` less the process umask: the mode ``open()`` would give a new file (``0o777`` for executables)."""
    return base & ~_umask()


def atomic_write(path: Path, write_fn) -> None:
    """Write to a temp file in the same folder, fsync, then rename: readers never see half a file. The file
    ends with the umask's permissions, like a plain ``open(path, "w")``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write_fn(tmp)
        os.chmod(tmp, umask_mode())
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
