"""The native kernels build for every instruction-set level users have, with vectors as wide as the
target's registers and nothing lowered piecewise; builds are cached per target; a broken build is loud.

How the generated code is checked (kernels/README.md): GCC's ``-Wvector-operation-performance`` reports
every vector operation it has to split or scalarise, so compiling with it as an error proves there is
none; the assembly must also use the target's registers (zmm / ymm / xmm, NEON ``v*.4s``) and name the
ISA the kernel reports at run time.
"""
import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from videomamba.ops import _build

KERNELS = ["cpu/selective_scan.cpp", "cpu/causal_conv1d.cpp", "cpu/fused_mixer.cpp"]
# -march level -> (ISA the kernel reports, register the hot loops must use, registers they must not use)
X86_LEVELS = {
    "x86-64": ("SSE2", "xmm", ("ymm", "zmm")),
    "x86-64-v2": ("SSE4", "xmm", ("ymm", "zmm")),
    "x86-64-v3": ("AVX2+FMA", "ymm", ("zmm",)),
    "x86-64-v4": ("AVX-512", "zmm", ()),
}


def _is_gcc(cxx: str) -> bool:
    out = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    return "Free Software Foundation" in out


def compile_to_asm(cmd_prefix: list[str], src: Path, out: Path, extra: list[str]) -> str:
    cmd = [*cmd_prefix, "-O3", "-std=c++17", "-S", "-o", str(out), str(src), *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=src.parent)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stderr[-3000:]}"
    return out.read_text(errors="replace")


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="platform: x86-64 levels need an x86-64 compiler")
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("level", list(X86_LEVELS))
def test_x86_levels_compile_with_native_width_vectors(kernel, level, tmp_path):
    cxx = _build.compiler()
    assert cxx is not None, "no C++ compiler"
    isa, reg, forbidden = X86_LEVELS[level]
    strict = ["-Werror=vector-operation-performance"] if _is_gcc(cxx) else []
    asm = compile_to_asm([cxx], _build.kernel_source(kernel), tmp_path / "k.s",
                         [f"-march={level}", "-fopenmp", *strict])
    assert f'"{isa}"' in asm
    assert re.search(rf"%{reg}\d", asm), f"no {reg} registers in the {level} build"
    for bad in forbidden:
        assert not re.search(rf"%{bad}\d", asm), f"{bad} registers in the {level} build"


def aarch64_compiler() -> list[str]:
    """Debian's cross-compiler when installed (apt install g++-aarch64-linux-gnu), else zig's clang from
    the ziglang wheel (part of the dev extra), so the ARM build is checked on every machine."""
    if shutil.which("aarch64-linux-gnu-g++"):
        return ["aarch64-linux-gnu-g++", "-march=armv8-a", "-fopenmp", "-Werror=vector-operation-performance"]
    try:
        import ziglang  # noqa: F401
    except ImportError:
        pytest.fail("no aarch64 cross-compiler: apt install g++-aarch64-linux-gnu, or pip install ziglang "
                    "(in the dev extra)")
    return [sys.executable, "-m", "ziglang", "c++", "-target", "aarch64-linux-gnu", "-mcpu=generic",
            "-Wno-unused-command-line-argument", "-Wno-unknown-pragmas"]


@pytest.mark.parametrize("kernel", KERNELS)
def test_aarch64_build_uses_neon(kernel, tmp_path):
    asm = compile_to_asm(aarch64_compiler(), _build.kernel_source(kernel), tmp_path / "k.s", [])
    assert '"NEON"' in asm
    assert re.search(r"fmla\s+v\d+\.4s", asm), "no 4-lane NEON multiply-adds in the aarch64 build"


def test_build_cache_is_keyed_by_target(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDEOMAMBA_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setattr(_build, "_libs", {})
    for arch in ("x86-64-v2", "x86-64-v3") if os.uname().machine == "x86_64" else ("native",):
        lib = _build.load_native("cpu/causal_conv1d.cpp", arch=arch, strict=True)
        assert lib is not None
    names = sorted(p.name for p in tmp_path.glob("*.so"))
    if os.uname().machine == "x86_64":
        assert [n.split("-x86-64-")[1][:2] for n in names] == ["v2", "v3"], names
    assert not list(tmp_path.glob("*.o")) and not list(tmp_path.glob("tmp*")), "build leftovers in the cache"


def test_kernels_share_torch_openmp_runtime():
    """One OpenMP runtime for torch and the kernels: the kernels' threads are torch's intra-op threads, so
    a kernel between two torch ops never competes with a second, spinning pool for the cores. (Checked in
    a fresh process: other packages, e.g. scikit-learn, bring their own runtime into this one.)"""
    code = ("import torch\n"
            "from videomamba.ops import selective_scan_cpu, causal_conv1d\n"
            "from videomamba.ops._build import torch_openmp_runtime\n"
            "assert selective_scan_cpu.available() and causal_conv1d.native_available()\n"
            "maps = open('/proc/self/maps').read().splitlines()\n"
            "print(sorted({l.split()[-1] for l in maps if 'gomp' in l or 'libomp' in l}))\n"
            "print(torch_openmp_runtime())\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, VIDEOMAMBA_REQUIRE_KERNELS="1"))
    assert r.returncode == 0, r.stderr[-2000:]
    loaded, runtime = r.stdout.strip().splitlines()[-2:]
    loaded = ast.literal_eval(loaded)
    assert len(loaded) == 1, f"several OpenMP runtimes loaded: {loaded}"
    if runtime != "None":
        assert loaded == [runtime]


def test_broken_kernel_fails_loudly_when_required(tmp_path, monkeypatch):
    broken = tmp_path / "broken.cpp"
    broken.write_text('extern "C" int f() { return undefined_symbol; }\n')
    monkeypatch.setattr(_build, "kernel_source", lambda rel: broken)
    monkeypatch.setattr(_build, "_libs", {})
    monkeypatch.setenv("VIDEOMAMBA_KERNEL_CACHE", str(tmp_path / "cache"))
    with pytest.raises(_build.KernelBuildError, match="broken.cpp"):
        _build.load_native("cpu/broken.cpp", strict=True)
    with pytest.warns(UserWarning, match="pure-PyTorch path"):
        assert _build.load_native("cpu/broken.cpp", strict=False) is None


def test_the_environment_selects_the_target(monkeypatch):
    from videomamba.ops import selective_scan_cpu

    monkeypatch.setenv(_build.ARCH_ENV, "x86-64-v2" if os.uname().machine == "x86_64" else "native")
    assert _build.cpu_arch() in ("x86-64-v2", "native")
    if os.uname().machine == "x86_64":
        assert selective_scan_cpu.target() == "SSE4, 4 lanes"
    monkeypatch.delenv(_build.ARCH_ENV)
    assert _build.cpu_arch() == "native"
