"""Where the fused CPU mixer kernel spends its time: conv + SiLU, x_proj, dt (dt_proj + softplus), the scan
recurrence and the gate, in ns per channel and position, for each kernel build.

It compiles an instrumented copy of ``kernels/cpu/fused_mixer.cpp`` (time-stamp counters around the five
phases of a sub-chunk; the shipped kernel is not touched) with a small C++ driver at VideoMamba-Ti's sizes
(d_inner 384, d_state 16, dt_rank 24, conv 4) and runs one direction on one thread, so the phases add up to
the wall time. The shares come from the counters, the total from the wall clock (median of ``--repeats``).

    python scripts/profile_fused_mixer.py --arch native x86-64-v3 --length 3137 --sub 64 512
    python scripts/profile_fused_mixer.py --length 3137 197 --sub 256 --against 97bc17f   # before / after

3137 tokens = 16 frames at 224 px (1569 = 8 frames, 197 = an image). Run it on a quiet machine. With
``--against REV`` it also builds the kernel of git revision REV (instrumented by this script as it was at REV)
and runs the two alternately, ``--rounds`` times, printing the median of the rounds for each: a before/after
comparison that a drifting machine skews less than two separate runs.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KERNEL = ROOT / "kernels" / "cpu" / "fused_mixer.cpp"
PHASES = ("conv", "x_proj", "dt", "scan", "gate")

# (anchor in the kernel source, its instrumented replacement): each phase i between TIC(i) and TOC(i)
PATCHES = [
    ("namespace {\n\nusing namespace vm;",
     "namespace {\n\nusing namespace vm;\n#include <x86intrin.h>\nuint64_t g_ticks[8];\n"
     "#define TIC(i) const uint64_t tic_##i = __rdtsc();\n#define TOC(i) g_ticks[i] += __rdtsc() - tic_##i;\n"),
    ("        conv_silu(s, dir, x, bi, d0, d1, c0, m, tb.pad, buf.xc);",
     "        {TIC(0) conv_silu(s, dir, x, bi, d0, d1, c0, m, tb.pad, buf.xc); TOC(0)}"),
    ("        project_x(s, dir, buf.xc, j0, j1, m, buf.x_dbl, buf.Bt, buf.Ct);",
     "        {TIC(1) project_x(s, dir, buf.xc, j0, j1, m, buf.x_dbl, buf.Bt, buf.Ct); TOC(1)}"),
    ("            for (int64_t t = 0; t < tw; t += W) transpose_block(buf.xc",
     "            TIC(2) for (int64_t t = 0; t < tw; t += W) transpose_block(buf.xc"),
    ("            for (int64_t n0 = 0; n0 < NP; n0 += W) {\n", "            TOC(2) TIC(3)\n            for (int64_t n0 = 0; n0 < NP; n0 += W) {\n"),
    ("            for (int64_t t = 0; t < tw; t += W) transpose_block(tb.yT",
     "            TOC(3) TIC(4)\n            for (int64_t t = 0; t < tw; t += W) transpose_block(tb.yT"),
    ("                           gate, scale);\n        }\n    }\n}",
     "                           gate, scale);\n            TOC(4)\n        }\n    }\n}"),
    ("VM_EXPORT_TARGET_INFO(vm_fused_mixer)",
     "VM_EXPORT_TARGET_INFO(vm_fused_mixer)\nextern \"C\" uint64_t* vm_profile_ticks() { return g_ticks; }\n"),
]

DRIVER = r"""
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>
extern "C" uint64_t* vm_profile_ticks();
extern "C" int vm_fused_mixer_fwd(const float*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                                  int64_t, int64_t, const float* const*, const float* const*, const float*,
                                  const float*, float, float*, float*, int64_t, int);
int main(int argc, char** argv) {
    const int64_t L = atoll(argv[1]), sub = atoll(argv[2]), repeats = atoll(argv[3]);
    const int64_t Di = 384, K = 4, R = 24, N = 16;
    std::mt19937 g(0);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    auto randn = [&](int64_t n, float scale) {
        std::vector<float> v(n);
        for (auto& e : v) e = normal(g) * scale;
        return v;
    };
    auto x = randn(Di * L, 1.0f), conv_w = randn(Di * K, 0.5f), conv_b = randn(Di, 0.1f);
    auto x_proj = randn((R + 2 * N) * Di, 0.05f), dt_proj = randn(Di * R, 0.2f), dt_bias = randn(Di, 0.5f);
    auto a_log = randn(Di * N, 0.5f), D = randn(Di, 1.0f);
    std::vector<float> out(Di * L);
    const float* dir[9] = {conv_w.data(), conv_b.data(), x_proj.data(), dt_proj.data(), dt_bias.data(),
                           a_log.data(), D.data(), nullptr, nullptr};
    auto call = [&] { return vm_fused_mixer_fwd(x.data(), 1, Di, L, 0, L, K, R, N, N, dir, nullptr, nullptr, nullptr,
                                                1.0f, out.data(), nullptr, sub, 1); };
    if (call() != 0) { std::fprintf(stderr, "kernel failed\n"); return 1; }
    std::vector<double> walls;
    uint64_t* ticks = vm_profile_ticks();
    std::memset(ticks, 0, 8 * sizeof(uint64_t));
    for (int64_t r = 0; r < repeats; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        call();
        walls.push_back(std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(walls.begin(), walls.end());
    const double per = walls[walls.size() / 2] / double(L * Di);
    uint64_t total = 0;
    for (int i = 0; i < 5; ++i) total += ticks[i];
    std::printf("%.3f", per);
    for (int i = 0; i < 5; ++i) std::printf(" %.3f", per * double(ticks[i]) / double(total ? total : 1));
    std::printf("\n");
}
"""


def instrumented_source() -> str:
    text = KERNEL.read_text()
    for anchor, replacement in PATCHES:
        if text.count(anchor) != 1:
            sys.exit(f"{KERNEL}: the profiler's anchor {anchor.splitlines()[0].strip()!r} is not in the kernel "
                     "exactly once; update PATCHES in scripts/profile_fused_mixer.py")
        text = text.replace(anchor, replacement)
    return text


def build(work: Path, arch: str) -> Path:
    for header in KERNEL.parent.glob("*.h"):
        shutil.copy(header, work / header.name)
    (work / "fused_mixer_profiled.cpp").write_text(instrumented_source())
    (work / "driver.cpp").write_text(DRIVER)
    exe = work / f"profile-{arch}"
    cmd = ["g++", "-O3", "-fopenmp", "-std=c++17", f"-march={arch}", "-o", str(exe),
           str(work / "fused_mixer_profiled.cpp"), str(work / "driver.cpp")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"building the profiled kernel for -march={arch} failed:\n{proc.stderr[:2000]}")
    return exe


def at_revision(rev: str, work: Path):
    """This script as it was at git revision ``rev``, pointed at that revision's kernel sources (copied to work)."""
    import importlib.util

    def show(path):
        proc = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{path}"], capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"--against {rev}: git show {rev}:{path} failed: {proc.stderr.strip()}")
        return proc.stdout

    listing = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "--name-only", rev, "kernels/cpu/"],
                             capture_output=True, text=True).stdout.split()
    kernels = work / "kernels" / "cpu"
    kernels.mkdir(parents=True)
    for path in listing:
        if path.endswith((".cpp", ".h")):
            (kernels / Path(path).name).write_text(show(path))
    script = work / "profile_fused_mixer_at_rev.py"
    script.write_text(show("scripts/profile_fused_mixer.py"))
    spec = importlib.util.spec_from_file_location("profile_fused_mixer_at_rev", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.KERNEL = kernels / "fused_mixer.cpp"
    return module


def run(exe: Path, length: int, sub: int, repeats: int) -> list[float]:
    out = subprocess.run([str(exe), str(length), str(sub), str(repeats)], check=True, capture_output=True,
                         text=True).stdout.split()
    return [float(v) for v in out]


def compare(args) -> None:
    """--against: both kernels per build, alternately, the median of --rounds rounds."""
    import statistics

    with tempfile.TemporaryDirectory() as tmp:
        old = at_revision(args.against, Path(tmp) / "rev")
        exes = {}
        for arch in args.arch:
            for tag, module in ((args.against, old), ("now", sys.modules[__name__])):
                work = Path(tmp) / f"{tag}-{arch}"
                work.mkdir()
                exes[(arch, tag)] = module.build(work, arch)
        for length in args.length:
            for sub in args.sub:
                results = {key: [] for key in exes}
                for _ in range(args.rounds):
                    for key, exe in exes.items():
                        results[key].append(run(exe, length, sub, args.repeats))
                for (arch, tag), rows in results.items():
                    total, *parts = (statistics.median(col) for col in zip(*rows))
                    print(f"{arch:>10s} {tag:>9s} {length:6d} {sub:5d} {total:7.2f} "
                          + " ".join(f"{v:7.2f}" for v in parts))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", nargs="+", default=["native", "x86-64-v3"])
    ap.add_argument("--length", type=int, nargs="+", default=[3137], help="tokens (3137 = 16 frames at 224)")
    ap.add_argument("--sub", type=int, nargs="+", default=[512], help="positions per sub-chunk")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--against", metavar="REV", help="also the kernel of this git revision, run alternately")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds with --against")
    args = ap.parse_args(argv)
    print("fused mixer, one direction, one thread, d_inner 384, d_state 16: ns per channel and position")
    if args.against:
        print(f"{'build':>10s} {'kernel':>9s} {'tokens':>6s} {'sub':>5s} {'total':>7s} "
              + " ".join(f"{p:>7s}" for p in PHASES))
        compare(args)
        return
    print(f"{'build':>10s} {'tokens':>6s} {'sub':>5s} {'total':>7s} " + " ".join(f"{p:>7s}" for p in PHASES))
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.arch:
            exe = build(Path(tmp), arch)
            for length in args.length:
                for sub in args.sub:
                    out = subprocess.run([str(exe), str(length), str(sub), str(args.repeats)], check=True,
                                         capture_output=True, text=True).stdout.split()
                    total, *parts = (float(v) for v in out)
                    print(f"{arch:>10s} {length:6d} {sub:5d} {total:7.2f} " + " ".join(f"{v:7.2f}" for v in parts))


if __name__ == "__main__":
    main()
