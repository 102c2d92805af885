#!/usr/bin/env bash
# Build mamba-ssm's CUDA selective scan (the `selective_scan_cuda` extension + the mamba_ssm Python package) from
# its PyPI sdist, for one GPU architecture, on a machine without network, into a folder of its own: nothing of
# the system Python changes. Then `videomamba` can run with VIDEOMAMBA_SCAN_BACKEND=mamba_ssm (docs/gpu.md).
#
#   scripts/build_mamba_ssm.sh [--dry-run | --check] [SDIST]
#
# --dry-run: unpack, patch and check the tools, print the build command, stop before the compile.
# --check: no build; the import check (and, on a GPU, one small scan against mamba-ssm's reference) of
# an earlier build in $BUILD_DIR/site.
#
# SDIST: the mamba_ssm-*.tar.gz (default: the newest .gpu_wheels/mamba_ssm-*.tar.gz of the repository root).
# Fetch it, and the build helpers, on any machine with network and a pip whose Python has torch:
#
#   mkdir -p .gpu_wheels && cd .gpu_wheels
#   MAMBA_SKIP_CUDA_BUILD=TRUE pip download --no-deps --no-build-isolation --no-binary :all: mamba-ssm
#   pip download --no-deps --only-binary :all: wheel ninja packaging setuptools einops
#
# (.gpu_wheels/ and .gpu_build/ are git-ignored: a remote runner must be told to carry .gpu_wheels.)
#
# Environment: PYTHON (default python3: the Python whose torch the extension is built against), CUDA_ARCH
# (default 90: sm_90, H100; e.g. 80 for A100), MAX_JOBS (default 16), BUILD_DIR (default .gpu_build).
#
# What it does, and why:
# * mamba-ssm's setup.py hard-codes its -gencode list (sm_75 .. sm_121 with CUDA 13: nine architectures) and
#   reads no variable to choose them (TORCH_CUDA_ARCH_LIST is ignored once -gencode flags are given), so the
#   extracted copy of setup.py is patched to keep sm_$CUDA_ARCH only: ~9x less compile work.
# * Its setup.py pins -std=c++17; torch >= 2.13's headers need C++20 (torch's own default), so where torch's
#   ATen.h says so the copy gets -std=c++20 (a torch whose headers accept C++17 keeps c++17).
# * MAMBA_FORCE_BUILD=TRUE: otherwise setup.py first tries to download a prebuilt wheel from GitHub; without
#   network that raises URLError, which it does not catch.
# * causal-conv1d is not built or needed: it is an optional extra of mamba-ssm and its import is guarded;
#   videomamba has its own conv.
# * setup.py imports torch, packaging, setuptools and wheel (wheel.bdist_wheel) and compiles with ninja;
#   those missing from $PYTHON are taken from .gpu_wheels/*.whl into $BUILD_DIR/tools (never into the system).
# * Importing mamba_ssm.ops.selective_scan_interface runs mamba_ssm/__init__.py, which also imports its Mamba
#   2/3 modules: that needs einops, triton and transformers (with huggingface_hub) at run time, but not tilelang,
#   quack-kernels, apache-tvm-ffi or causal-conv1d (all imported under try/except).
#
# Output: $BUILD_DIR/site (pip install --target); use it with  PYTHONPATH=$BUILD_DIR/site:$PYTHONPATH.
# The compiler's output is in $BUILD_DIR/build.log.
set -euo pipefail

DRY_RUN=0
CHECK_ONLY=0
SDIST=""
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY_RUN=1 ;;
        --check) CHECK_ONLY=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "build_mamba_ssm.sh: unknown option $arg" >&2; exit 2 ;;
        *) SDIST="$arg" ;;
    esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
CUDA_ARCH="${CUDA_ARCH:-90}"
MAX_JOBS="${MAX_JOBS:-16}"
BUILD_DIR="${BUILD_DIR:-$ROOT/.gpu_build}"
WHEELS="$ROOT/.gpu_wheels"
say() { echo "build_mamba_ssm: $*"; }
die() { echo "build_mamba_ssm: error: $*" >&2; exit 1; }

check_import() {   # the build in $1 imports (torch first: the extension links against torch's libc10.so)
    PYTHONPATH="$1${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -c "
import torch
import mamba_ssm, selective_scan_cuda
from mamba_ssm.ops.selective_scan_interface import selective_scan_fn, selective_scan_ref
msg = f'mamba_ssm {mamba_ssm.__version__} from {mamba_ssm.__file__.rsplit(\"/\", 2)[0]}'
if torch.cuda.is_available():   # one small scan on the GPU against mamba-ssm's own reference
    g = torch.Generator(device='cuda').manual_seed(0)
    r = lambda *s: torch.randn(*s, device='cuda', generator=g)
    u, dt, B, C, z = r(2, 8, 77), r(2, 8, 77).sigmoid(), r(2, 4, 77), r(2, 4, 77), r(2, 8, 77)
    A, D, bias = -r(8, 4).exp(), r(8), r(8)
    got = selective_scan_fn(u, dt, A, B, C, D, z, bias, True)
    ref = selective_scan_ref(u, dt, A, B, C, D, z, bias, True)
    msg += f'; scan on {torch.cuda.get_device_name()}: max |cuda - ref| {(got - ref).abs().max().item():.2e}'
print('build_mamba_ssm: import ok:', msg)
"
}

case "$CUDA_ARCH" in (*[!0-9]*|"") die "CUDA_ARCH must be digits like 90 (sm_90), got '$CUDA_ARCH'" ;; esac
mkdir -p "$BUILD_DIR"
BUILD_DIR="$(cd "$BUILD_DIR" && pwd)"
if [ "$CHECK_ONLY" = 1 ]; then
    [ -d "$BUILD_DIR/site/mamba_ssm" ] || die "no build in $BUILD_DIR/site: run without --check first"
    check_import "$BUILD_DIR/site"
    exit 0
fi

# ------------------------------------------------------------------ the sdist
if [ -z "$SDIST" ]; then
    SDIST="$(ls -1 "$WHEELS"/mamba_ssm-*.tar.gz 2>/dev/null | sort -V | tail -n 1 || true)"
    [ -n "$SDIST" ] || die "no $WHEELS/mamba_ssm-*.tar.gz; fetch it first (see the top of this script) or pass its path"
fi
[ -f "$SDIST" ] || die "$SDIST: no such file"
LISTING="$(tar -tzf "$SDIST")" || die "$SDIST: not a readable .tar.gz"
TOP="${LISTING%%$'\n'*}"
TOP="${TOP%%/*}"
for need in setup.py csrc/selective_scan/selective_scan.cpp mamba_ssm/ops/selective_scan_interface.py; do
    grep -qx "$TOP/$need" <<<"$LISTING" || die "$SDIST has no $TOP/$need: not a mamba-ssm source release?"
done
NCU="$(grep -c "^$TOP/csrc/selective_scan/.*\.cu$" <<<"$LISTING" || true)"
say "sdist $SDIST ($TOP, $NCU CUDA sources in csrc/selective_scan)"

SRC="$BUILD_DIR/src/$TOP"
rm -rf "$BUILD_DIR/src"
mkdir -p "$BUILD_DIR/src"
tar -xzf "$SDIST" -C "$BUILD_DIR/src"

# ------------------------------------------------------------------ keep one architecture (and a C++ standard torch takes)
"$PYTHON" - "$SRC/setup.py" "$CUDA_ARCH" <<'PY'
import os, re, sys
path, arch = sys.argv[1], sys.argv[2]
text = open(path).read()
try:   # torch >= 2.13's headers refuse C++17 ("C++20 or later compatible compiler is required to use ATen")
    import logging
    logging.disable(logging.WARNING)   # (its CUDA_HOME guess at import; the build below sets CUDA_HOME)
    import torch.utils.cpp_extension as ce
    aten = open(os.path.join(ce.include_paths()[0], "ATen", "ATen.h")).read()
except Exception:
    aten = ""
if "C++20 or later" in aten and "-std=c++17" in text:
    text = text.replace("-std=c++17", "-std=c++20")
    print("build_mamba_ssm: torch's headers need C++20: setup.py's -std=c++17 -> -std=c++20")
marker = "# build_mamba_ssm.sh: keep one architecture"
if marker not in text:
    m = re.search(r"^([ \t]*)ext_modules\.append\(", text, re.M)
    if m is None or "extra_compile_args" not in text[:m.start()]:
        sys.exit("build_mamba_ssm: error: setup.py has no 'extra_compile_args ... ext_modules.append(' to patch; "
                 "this script knows mamba-ssm 2.x")
    ind = m.group(1)
    keep = f"arch=compute_{arch},code=sm_{arch}"
    patch = (f"{ind}{marker}: drop every -gencode pair but sm_{arch}\n"
             f"{ind}_vm_flags, _vm_out = list(extra_compile_args['nvcc']), []\n"
             f"{ind}while _vm_flags:\n"
             f"{ind}    _vm_f = _vm_flags.pop(0)\n"
             f"{ind}    if _vm_f == '-gencode' and _vm_flags:\n"
             f"{ind}        _vm_a = _vm_flags.pop(0)\n"
             f"{ind}        if _vm_a == {keep!r}:\n"
             f"{ind}            _vm_out += [_vm_f, _vm_a]\n"
             f"{ind}    else:\n"
             f"{ind}        _vm_out.append(_vm_f)\n"
             f"{ind}if {keep!r} not in _vm_out:\n"
             f"{ind}    _vm_out += ['-gencode', {keep!r}]\n"
             f"{ind}extra_compile_args['nvcc'] = _vm_out\n"
             f"{ind}print('build_mamba_ssm: nvcc architectures:', [f for f in _vm_out if f.startswith('arch=')])\n")
    text = text[:m.start()] + patch + text[m.start():]
open(path, "w").write(text)
print(f"build_mamba_ssm: patched {path}: -gencode arch=compute_{arch},code=sm_{arch} only")
PY

# ------------------------------------------------------------------ tools the build needs
"$PYTHON" -c "import torch" 2>/dev/null || die "$PYTHON has no torch: set PYTHON to the Python that runs videomamba"
"$PYTHON" -m pip --version >/dev/null 2>&1 || die "$PYTHON has no pip"
TORCH_INFO="$("$PYTHON" -c "import torch; print(torch.__version__, torch.version.cuda)")"
TORCH_CUDA="${TORCH_INFO#* }"
[ "$TORCH_CUDA" != "None" ] || die "$PYTHON's torch ($TORCH_INFO) is a CPU build: the extension needs a CUDA torch"

missing=()
for mod in setuptools wheel packaging ninja; do
    "$PYTHON" -c "import $mod" 2>/dev/null || missing+=("$mod")
done
TOOLS="$BUILD_DIR/tools"
if [ "${#missing[@]}" -gt 0 ]; then
    files=()
    for mod in "${missing[@]}"; do
        f="$(ls -1 "$WHEELS"/"$mod"-*.whl 2>/dev/null | sort -V | tail -n 1 || true)"
        [ -n "$f" ] || die "$PYTHON lacks '$mod' and $WHEELS has no $mod-*.whl (pip download --no-deps --only-binary :all: $mod)"
        files+=("$f")
    done
    say "installing ${missing[*]} from $WHEELS into $TOOLS"
    if [ "$DRY_RUN" = 0 ]; then
        rm -rf "$TOOLS"
        "$PYTHON" -m pip install --quiet --no-index --no-deps --target "$TOOLS" "${files[@]}"
    fi
fi
export PYTHONPATH="$TOOLS${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$TOOLS/bin:$PATH"

if [ -z "${CUDA_HOME:-}" ]; then   # a toolkit folder with bin/nvcc and the headers (nvcc on PATH may be a wrapper)
    for c in "$(dirname "$(dirname "$(readlink -f "$(command -v nvcc || echo /nonexistent/bin/nvcc)")")")" /usr/local/cuda; do
        if [ -x "$c/bin/nvcc" ] && [ -f "$c/include/cuda_runtime.h" ]; then CUDA_HOME="$c"; break; fi
    done
    [ -n "${CUDA_HOME:-}" ] || die "no CUDA toolkit found (nvcc on PATH, /usr/local/cuda): set CUDA_HOME"
fi
export CUDA_HOME
NVCC_VERSION="$("$CUDA_HOME/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')"
[ "${NVCC_VERSION%%.*}" = "${TORCH_CUDA%%.*}" ] \
    || die "nvcc $NVCC_VERSION and torch's CUDA $TORCH_CUDA differ in major version: torch refuses to build (use the toolkit torch was built with)"
command -v ninja >/dev/null 2>&1 || die "no ninja executable on PATH (the ninja wheel puts one in $TOOLS/bin)"

export MAMBA_FORCE_BUILD=TRUE          # no prebuilt-wheel download (no network)
export MAMBA_SKIP_CUDA_BUILD=FALSE     # the CUDA extension is the point
export TORCH_CUDA_ARCH_LIST="${CUDA_ARCH:0:${#CUDA_ARCH}-1}.${CUDA_ARCH: -1}"
export MAX_JOBS
SITE="$BUILD_DIR/site"
CMD=("$PYTHON" -m pip install --no-deps --no-build-isolation --no-index --no-cache-dir -v --target "$SITE" "$SRC")
say "python $("$PYTHON" -c 'import sys; print(sys.version.split()[0])'), torch $TORCH_INFO, nvcc $NVCC_VERSION ($CUDA_HOME), ninja $(ninja --version)"
say "MAMBA_FORCE_BUILD=TRUE MAMBA_SKIP_CUDA_BUILD=FALSE TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS ${CMD[*]}"
if [ "$DRY_RUN" = 1 ]; then
    say "dry run: stopping before the compile (the patched source is in $SRC)"
    exit 0
fi

# ------------------------------------------------------------------ build
rm -rf "$SITE"
start=$(date +%s)
if ! "${CMD[@]}" >"$BUILD_DIR/build.log" 2>&1; then
    tail -n 40 "$BUILD_DIR/build.log" >&2
    die "the build failed after $(( $(date +%s) - start )) s (whole log: $BUILD_DIR/build.log)"
fi
say "built in $(( $(date +%s) - start )) s -> $SITE (log: $BUILD_DIR/build.log)"
SO="$(ls -1 "$SITE"/selective_scan_cuda*.so 2>/dev/null | head -n 1 || true)"
[ -n "$SO" ] || die "no selective_scan_cuda*.so in $SITE (see $BUILD_DIR/build.log)"
if command -v cuobjdump >/dev/null 2>&1 || [ -x "$CUDA_HOME/bin/cuobjdump" ]; then
    say "device code in $(basename "$SO"): $("$(command -v cuobjdump || echo "$CUDA_HOME/bin/cuobjdump")" --list-elf "$SO" | sed 's/.*\.\(sm_[0-9a-z]*\)\..*/\1/' | sort -u | tr '\n' ' ')"
fi

# ------------------------------------------------------------------ import check
check_import "$SITE"
say "use it with: export PYTHONPATH=$SITE\${PYTHONPATH:+:\$PYTHONPATH}; VIDEOMAMBA_SCAN_BACKEND=mamba_ssm python ..."
