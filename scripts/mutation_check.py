"""Do the kernel tests catch broken kernels? Plant one bug at a time in a copy of ``kernels/`` and run
the kernel tests against it (``VIDEOMAMBA_KERNEL_SOURCES`` points the build at the copy; a fresh cache).
Bugs in the Triton kernels (``videomamba/ops/*_triton.py``) go into a copy of the package that the test run
imports instead of the checkout's (and run the Triton tests, in Triton's interpreter on CPU).

    python scripts/mutation_check.py            # every mutation; exit 1 if any survives
    python scripts/mutation_check.py --list

Each mutation is a bug a kernel change could plausibly introduce, several of them invisible to the
tests this project had before issue 9 (an all-ones conv gradient, N=8 only, no reverse last state).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TRITON_SCAN = "videomamba/ops/selective_scan_triton.py"
TRITON_CONV = "videomamba/ops/causal_conv1d_triton.py"

# (name, file under kernels/ or the package, exact text, replacement)
MUTATIONS = [
    ("scan bwd: dB misses the u factor", "cpu/selective_scan.cpp",
     "gn * (dtt * ut)", "gn * dtt"),
    ("scan bwd: gradient of the last state ignored", "cpu/selective_scan.cpp",
     "gst[k] = dlast ? load(dlast + (bi * a.dim + d) * NP + k * W) : splat(0.0f);", "gst[k] = splat(0.0f);"),
    ("scan bwd: ddelta row sums written in the wrong order", "cpu/selective_scan.cpp",
     "ddt_sum(ddelta + row, !a.reverse)", "ddt_sum(ddelta + row, a.reverse)"),
    ("scan bwd: dA accumulated without dt", "cpu/selective_scan.cpp",
     "dA_acc[k] += gh * dtt;", "dA_acc[k] += gh;"),
    ("scan bwd: first step's previous state taken from the buffer", "cpu/selective_scan.cpp",
     "s > 0 ? load(hs + os - NP) : (h0row", "load(hs + (s > 0 ? os - NP : os)) + 0.0f * (h0row"),
    ("scan fwd: last state of the wrong vector", "cpu/selective_scan.cpp",
     "store(last + (bi * a.dim + d) * NP + k * W, h[k]);", "store(last + (bi * a.dim + d) * NP + k * W, h[0]);"),
    ("row sums: partial descending block misplaced", "cpu/simd_math.h",
     "if (descending) dst[first - k] = r[W - 1 - k];", "if (descending) dst[first - k] = r[W - 1];"),
    ("exp2: polynomial coefficient off", "cpu/simd_math.h",
     "5.550332471162809e-2f", "5.560332471162809e-2f"),
    ("conv bwd: anti-causal dx shifted by one", "cpu/causal_conv1d.cpp",
     "reverse ? -(K - 1) + k : (K - 1) - k", "reverse ? -(K - 2) + k : (K - 1) - k"),
    ("conv bwd: dw tap mirrored in the causal direction", "cpu/causal_conv1d.cpp",
     "const int64_t tap = reverse ? K - 1 - k : k;\n                vf acc",
     "const int64_t tap = reverse ? K - 1 - k : K - 1 - k;\n                vf acc"),
    ("conv bwd: SiLU derivative without the second term", "cpu/causal_conv1d.cpp",
     "gv = gv * s * (1.0f + v * (1.0f - s));", "gv = gv * s;"),
    # issue 10: what the chunked / recomputing model paths rely on
    ("scan fwd: initial state ignored", "cpu/selective_scan.cpp",
     "h[k] = h0 ? load(h0 + k * W) : splat(0.0f);", "h[k] = splat(0.0f);"),
    ("scan fwd: addend before the gate ignored", "cpu/selective_scan.cpp",
     "if (add) o += load_n(add + row + t, n);", ""),
    ("scan bwd: initial-state gradient is the last step's adjoint input", "cpu/selective_scan.cpp",
     "store(dh0 + (bi * a.dim + d) * NP + k * W, gst[k]);", "store(dh0 + (bi * a.dim + d) * NP + k * W, dA_acc[k]);"),
    ("scan: reverse blocks of W row sums stored at the forward place", "cpu/selective_scan.cpp",
     "store(ysum + (REV ? L - s - W : s), hsum_rows(acc));", "store(ysum + s, hsum_rows(acc));"),
    ("conv window: causal halo offset by one", "cpu/causal_conv1d.cpp",
     "const int64_t shift = reverse ? 0 : L_in - L_out;",
     "const int64_t shift = reverse ? 0 : L_in - L_out + (L_in > L_out ? 1 : 0);"),
    # issue 21: the chunk-parallel Triton scan and the Triton conv
    ("triton scan: carry not passed across chunks", TRITON_SCAN,
     "leaving = local + decay * carry[None, :]", "leaving = local"),
    ("triton scan: chunks past the end are not identity links of the carry", TRITON_SCAN,
     "p = tl.load(P_ptr + at, mask=both, other=1.0)", "p = tl.load(P_ptr + at, mask=both, other=0.0)"),
    ("triton scan: adjoint carried left to right", TRITON_SCAN,
     "n_chunks - 1 - gi * GROUP, -1,", "n_chunks - 1 - gi * GROUP, 1,"),
    ("triton scan: each chunk starts from the previous chunk's entering state", TRITON_SCAN,
     "hin = tl.load(hin_ptr + carried,", "hin = tl.load(hin_ptr + carried - (tl.program_id(1) > 0) * dim * N,"),
    ("triton scan: chunk summary counts its own step as decayed", TRITON_SCAN,
     "after = total[:, None] - cum ", "after = total[:, None] - cum + dt "),
    ("triton scan: adjoint crosses the chunk end twice", TRITON_SCAN,
     "nmask_t = (npos < L) & (nsteps < (pid_c + 1) * T)", "nmask_t = npos < L"),
    ("triton scan: decayed state not reversed for the adjoint", TRITON_SCAN,
     "decayed_prev = tl.flip(h - b, 2)", "decayed_prev = h - b"),
    ("triton scan: padded steps/channels get a non-zero dt", TRITON_SCAN,
     "return tl.where(mask, dt, 0.0)", "return dt"),
    ("triton scan: softplus derivative dropped", TRITON_SCAN,
     "ddt = tl.where(raw > 20.0, ddt, ddt * _sigmoid(raw))", "ddt = ddt"),
    ("triton scan: B/C gradient shares of two programs collide", TRITON_SCAN,
     "share = ((pid_b * G + g) * n_cb + pid_gd % n_cb) * N", "share = ((pid_b * G + g) * n_cb) * N"),
    ("triton scan pair: reverse output not flipped into position order", TRITON_SCAN,
     "y += tl.flip(yb, 1)", "y += yb"),
    ("triton scan pair: reverse direction reads the mirrored chunk", TRITON_SCAN,
     "_direction_output(n_chunks - 1 - pid_c,", "_direction_output(pid_c,"),
    ("triton conv: causal dx halo shifted by one", TRITON_CONV,
     "pos = offs_t + (K - 1 - j)", "pos = offs_t + (K - 2 - j)"),
    ("triton conv: SiLU derivative without its second term", TRITON_CONV,
     "g = g * s * (1.0 + v * (1.0 - s))", "g = g * s"),
    ("triton conv: weight-gradient partial rows of two programs collide", TRITON_CONV,
     "part = (pid_b * tl.num_programs(0) + pid_l).to(tl.int64) * dim + offs_c",
     "part = (pid_b + pid_l).to(tl.int64) * dim + offs_c"),
]

TESTS = ["tests/test_kernels_cpu.py", "tests/test_lean.py"]
TRITON_TESTS = {TRITON_SCAN: ["tests/test_triton_scan.py"], TRITON_CONV: ["tests/test_conv_triton.py"]}


def run_one(name, rel, old, new, tests) -> bool:
    """True when the tests fail on the mutated kernel (the mutation is caught)."""
    if rel.startswith("videomamba/"):
        return run_one_python(name, rel, old, new, TRITON_TESTS[rel])
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "kernels"
        shutil.copytree(ROOT / "kernels", src)
        path = src / rel
        text = path.read_text()
        if text.count(old) != 1:
            raise SystemExit(f"mutation {name!r}: expected exactly one {old!r} in kernels/{rel}")
        path.write_text(text.replace(old, new))
        env = dict(os.environ, VIDEOMAMBA_KERNEL_SOURCES=str(src), VIDEOMAMBA_KERNEL_CACHE=str(Path(tmp) / "cache"))
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                           cwd=ROOT, env=env, capture_output=True, text=True)
        return r.returncode != 0


def run_one_python(name, rel, old, new, tests) -> bool:
    """A package file mutated in a copy of the checkout's package, imported first by a pytest run in a
    scratch folder that links the tests, kernels and configs of the checkout."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copytree(ROOT / "videomamba", root / "videomamba")
        for linked in ("tests", "kernels", "configs"):
            (root / linked).symlink_to(ROOT / linked)
        path = root / rel
        text = path.read_text()
        if text.count(old) != 1:
            raise SystemExit(f"mutation {name!r}: expected exactly one {old!r} in {rel}")
        path.write_text(text.replace(old, new))
        env = dict(os.environ, PYTHONPATH=str(root))
        where = subprocess.run([sys.executable, "-c", "import videomamba; print(videomamba.__file__)"], cwd=root,
                               env=env, capture_output=True, text=True).stdout.strip()
        if not where.startswith(str(root)):   # else the run would test the checkout, and catch nothing
            raise SystemExit(f"mutation {name!r}: the test run imports {where!r}, not the mutated copy")
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                           cwd=root, env=env, capture_output=True, text=True)
        if r.returncode != 0 and "AssertionError" not in r.stdout:   # a crash is not a test catching a bug
            raise SystemExit(f"mutation {name!r} made the tests crash instead of fail:\n{r.stdout[-2000:]}")
        return r.returncode != 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--list", action="store_true")
    p.add_argument("--tests", nargs="*", default=TESTS, help="tests run against the native-kernel mutations")
    p.add_argument("--match", default="", help="only the mutations whose name contains this text")
    args = p.parse_args()
    if args.list:
        for name, rel, *_ in MUTATIONS:
            print(f"{rel}: {name}")
        return 0
    survived = []
    chosen = [m for m in MUTATIONS if args.match in m[0]]
    for name, rel, old, new in chosen:
        caught = run_one(name, rel, old, new, args.tests)
        print(f"{'caught  ' if caught else 'SURVIVED'}  {rel}: {name}", flush=True)
        if not caught:
            survived.append(name)
    print(f"{len(chosen) - len(survived)}/{len(chosen)} mutations caught")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
