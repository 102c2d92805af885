"""Build the native CPU kernels on first use and cache them.

The kernels are plain C++ with a C ABI, compiled straight with the system compiler and loaded with
ctypes: they include no torch headers, so they build in about a second and can never break on a torch
C++ ABI change (the top install complaint about mamba-ssm).

* Target: ``-march=native`` unless ``VIDEOMAMBA_CPU_ARCH`` names another level (``x86-64-v3`` for
  AVX2+FMA machines, ``x86-64-v2``, ``armv8-a``, ...). The kernels' vector width follows the target
  (``kernels/cpu/simd_math.h``).
* OpenMP: the kernels link against the OpenMP runtime torch itself loaded, so a kernel called between
  torch ops reuses torch's intra-op threads instead of starting a second pool that would compete with
  it for the cores (two spinning pools on 2 cores made whole models several times slower).
* Cache: ``$VIDEOMAMBA_KERNEL_CACHE`` or ``~/.cache/videomamba/kernels``; the key covers the sources,
  flags, target, compiler, OpenMP runtime and (for ``native``) this CPU's feature flags.
* Failure: one warning and the pure-PyTorch path, or an error with ``VIDEOMAMBA_REQUIRE_KERNELS=1``
  (the test suite sets it: a kernel that does not build must fail CI, not skip it).
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

from ..utils.files import umask_mode

ARCH_ENV = "VIDEOMAMBA_CPU_ARCH"
REQUIRE_ENV = "VIDEOMAMBA_REQUIRE_KERNELS"

_lock = threading.Lock()
_libs: dict[tuple[str, str], ctypes.CDLL | None] = {}

COMPILE_FLAGS = ["-O3", "-fopenmp", "-fPIC", "-std=c++17"]


class KernelBuildError(RuntimeError):
    """A native kernel could not be compiled or loaded."""


def cpu_arch() -> str:
    """The ``-march`` level kernels are built for: ``$VIDEOMAMBA_CPU_ARCH`` or ``native``."""
    return os.environ.get(ARCH_ENV, "").strip() or "native"


def kernels_required() -> bool:
    return os.environ.get(REQUIRE_ENV, "").strip().lower() in ("1", "true", "yes")


def kernel_source(relpath: str) -> Path:
    """Locate a source under ``kernels/``: ``$VIDEOMAMBA_KERNEL_SOURCES`` (a kernel developer's copy, e.g.
    scripts/mutation_check.py), the repository folder (source checkout, editable install) or the copy
    packaged as ``videomamba/_kernels``."""
    here = Path(__file__).resolve().parent.parent
    override = [Path(os.environ["VIDEOMAMBA_KERNEL_SOURCES"])] if os.environ.get("VIDEOMAMBA_KERNEL_SOURCES") else []
    for root in (*override, here.parent / "kernels", here / "_kernels"):
        if (root / relpath).is_file():
            return root / relpath
    raise FileNotFoundError(f"kernel source kernels/{relpath} not found next to the package")


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "videomamba" / "kernels"
    return Path(os.environ.get("VIDEOMAMBA_KERNEL_CACHE", default))


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def compiler() -> str | None:
    for cand in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if cand and shutil.which(cand):
            return cand
    return None


def torch_openmp_runtime() -> Path | None:
    """The GNU OpenMP runtime torch ships and has loaded into this process (None if torch has none of its
    own, e.g. it uses the system ``libgomp.so.1``, which the plain ``-fopenmp`` link then shares).

    Wheels that bundle it under a hashed name (``libgomp-<hash>.so.1``) would otherwise get a second,
    independent runtime next to the system ``libgomp.so.1`` our kernels link by default.
    """
    import torch

    torch_dir = str(Path(torch.__file__).resolve().parent)
    try:
        maps = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return None
    for line in maps:
        path = line.split()[-1] if line.split() else ""
        if path.startswith(torch_dir) and "/libgomp" in path and Path(path).is_file():
            return Path(path)
    return None


def build_command(cxx: str, src: Path, out: str, arch: str, runtime: Path | None) -> list[list[str]]:
    """The commands that compile ``src`` into the shared library ``out`` (compile, then link)."""
    obj = out + ".o"
    compile_cmd = [cxx, *COMPILE_FLAGS, f"-march={arch}", "-c", "-o", obj, str(src)]
    if runtime is None:
        link = [cxx, "-shared", "-fopenmp", "-o", out, obj]
    else:   # link torch's runtime by path; -fopenmp at link time would add the system libgomp too
        link = [cxx, "-shared", "-o", out, obj, str(runtime), f"-Wl,-rpath,{runtime.parent}"]
    return [compile_cmd, link]


def load_native(relpath: str, arch: str | None = None, strict: bool | None = None) -> ctypes.CDLL | None:
    """Compile (once per target) and load ``kernels/<relpath>``.

    On failure: ``None`` with one warning, or :class:`KernelBuildError` when ``strict`` (default:
    ``VIDEOMAMBA_REQUIRE_KERNELS``).
    """
    arch = arch or cpu_arch()
    strict = kernels_required() if strict is None else strict
    key = (relpath, arch)
    with _lock:
        if key in _libs and (_libs[key] is not None or not strict):
            return _libs[key]
        lib = None
        try:
            lib = _build_and_load(relpath, arch)
        except Exception as err:  # no compiler, compile error, unwritable cache, ...
            if strict:
                raise KernelBuildError(f"native kernel kernels/{relpath} (-march={arch}) did not build: {err}") from err
            warnings.warn(f"videomamba: native kernel {relpath} (-march={arch}) unavailable "
                          f"({str(err).splitlines()[0][:200]}); using the pure-PyTorch path", stacklevel=3)
        _libs[key] = lib
        return lib


def target_info(lib: ctypes.CDLL, prefix: str) -> str:
    """``"AVX2+FMA, 8 lanes"``: what a loaded kernel was compiled for (its exported ``<prefix>_target_isa``)."""
    isa = getattr(lib, f"{prefix}_target_isa")
    isa.restype = ctypes.c_char_p
    return f"{isa().decode()}, {getattr(lib, f'{prefix}_lanes')()} lanes"


def _build_and_load(relpath: str, arch: str) -> ctypes.CDLL:
    src = kernel_source(relpath)
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (install g++ or set CXX)")
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    runtime = torch_openmp_runtime()
    headers = [h.read_text() for h in sorted(src.parent.glob("*.h"))]   # local includes count too
    parts = [src.read_text(), *headers, " ".join(COMPILE_FLAGS), arch, *version, str(runtime)]
    if arch == "native":
        parts.append(_cpu_flags())
    key = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    out = cache_dir() / f"{src.stem}-{arch}-{key}.so"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
        os.close(fd)
        try:
            for cmd in build_command(cxx, src, tmp, arch, runtime):
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    raise RuntimeError(f"compiling {src} failed: {proc.stderr.strip()[:1000]}")
            os.chmod(tmp, umask_mode(0o777))   # a shared cache: readable like any built library
            os.replace(tmp, out)   # atomic: concurrent builders never load half a file
        finally:
            for leftover in (tmp, tmp + ".o"):
                if os.path.exists(leftover):
                    os.unlink(leftover)
    return ctypes.CDLL(str(out))
