"""Build the native CPU kernel on first use and cache it.

The kernel is plain C++ with a C ABI, compiled straight with the system compiler and loaded with
ctypes: it does not include torch headers, so it builds in about a second and can never break on a
torch C++ ABI change (the top install complaint about mamba-ssm). The cache key covers the source,
the flags, the compiler and this CPU's feature flags (the build uses -march=native).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

_lock = threading.Lock()
_libs: dict[str, ctypes.CDLL | None] = {}

FLAGS = ["-O3", "-march=native", "-fopenmp", "-fPIC", "-shared", "-std=c++17"]


def kernel_source(relpath: str) -> Path:
    """Locate a source under ``kernels/``: the repository folder (source checkout, editable install)
    or the copy packaged as ``videomamba/_kernels``."""
    here = Path(__file__).resolve().parent.parent
    for root in (here.parent / "kernels", here / "_kernels"):
        if (root / relpath).is_file():
            return root / relpath
    raise FileNotFoundError(f"kernel source kernels/{relpath} not found next to the package")


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "videomamba" / "kernels"
    return Path(os.environ.get("VIDEOMAMBA_KERNEL_CACHE", default))


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _compiler() -> str | None:
    for cand in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if cand and shutil.which(cand):
            return cand
    return None


def load_native(relpath: str) -> ctypes.CDLL | None:
    """Compile (once) and load ``kernels/<relpath>``; ``None`` with one warning if that fails."""
    with _lock:
        if relpath in _libs:
            return _libs[relpath]
        lib = None
        try:
            lib = _build_and_load(relpath)
        except Exception as err:  # no compiler, compile error, unwritable cache, ...
            warnings.warn(f"videomamba: native kernel {relpath} unavailable ({str(err).splitlines()[0][:200]}); "
                          "using the pure-PyTorch path", stacklevel=3)
        _libs[relpath] = lib
        return lib


def _build_and_load(relpath: str) -> ctypes.CDLL:
    src = kernel_source(relpath)
    cxx = _compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set CXX)")
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    headers = [h.read_text() for h in sorted(src.parent.glob("*.h"))]   # local includes count too
    key = hashlib.sha256("\n".join([src.read_text(), *headers, " ".join(FLAGS), *version, _cpu_flags()])
                         .encode()).hexdigest()[:16]
    out = cache_dir() / f"{src.stem}-{key}.so"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
        os.close(fd)
        try:
            proc = subprocess.run([cxx, *FLAGS, "-o", tmp, str(src)], capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"compiling {src} failed: {proc.stderr.strip()[:500]}")
            os.replace(tmp, out)   # atomic: concurrent builders never load half a file
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return ctypes.CDLL(str(out))
