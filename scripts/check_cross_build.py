"""Build the CPU kernels for aarch64 (NEON) and check their results under qemu-user.

    apt install g++-aarch64-linux-gnu qemu-user      # Debian / Ubuntu
    python scripts/check_cross_build.py              # exit 0 when every output and gradient matches

The kernels and ``scripts/native/kernel_driver.cpp`` are linked into one static aarch64 program that reads
inputs on stdin and writes outputs on stdout; this script feeds it random inputs for both scan directions,
two groups, and compares the selective scan (outputs, last state, all gradients, last-state gradient
included) and the causal conv (both directions, forward and backward) with the fp64 references.
(The pytest suite compiles the aarch64 build on every machine but cannot run it without an emulator.)
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from videomamba.ops import causal_conv1d_ref, selective_scan_ref  # noqa: E402

LANES = 4   # NEON


def build(cxx: str, out: Path) -> None:
    cmd = [cxx, "-O3", "-march=armv8-a", "-std=c++17", "-fopenmp", "-static", f"-I{ROOT / 'kernels/cpu'}",
           "-Werror=vector-operation-performance", "-o", str(out), str(ROOT / "scripts/native/kernel_driver.cpp"),
           str(ROOT / "kernels/cpu/selective_scan.cpp"), str(ROOT / "kernels/cpu/causal_conv1d.cpp")]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"build failed:\n{r.stderr[-3000:]}")


def check(exe: Path, qemu: str, batch=2, dim=8, L=37, N=16, G=2, K=4, reverse=False) -> list[str]:
    g = torch.Generator().manual_seed(L + reverse)
    NP = -(-N // LANES) * LANES
    t = dict(u=torch.randn(batch, dim, L, generator=g), delta=0.5 * torch.rand(batch, dim, L, generator=g),
             A=-0.5 - torch.rand(dim, N, generator=g), B=torch.randn(batch, G, N, L, generator=g),
             C=torch.randn(batch, G, N, L, generator=g), D=torch.randn(dim, generator=g),
             z=torch.randn(batch, dim, L, generator=g), delta_bias=0.5 * torch.rand(dim, generator=g))
    dout, dlast = torch.randn(batch, dim, L, generator=g), torch.randn(batch, dim, N, generator=g)
    x, w, cb, dy = (torch.randn(batch, dim, L, generator=g), torch.randn(dim, K, generator=g),
                    torch.randn(dim, generator=g), torch.randn(batch, dim, L, generator=g))

    def pad_n(v):   # (..., N) -> (..., NP) with zeros
        return torch.nn.functional.pad(v, (0, NP - N))

    def time_major(v):   # (b, G, N, L) -> (b, G, L, NP)
        return pad_n(v.transpose(-1, -2))

    arrays = [t["u"], t["delta"], pad_n(t["A"]), time_major(t["B"]), time_major(t["C"]), t["D"], t["z"],
              t["delta_bias"], dout, pad_n(dlast), x, w, cb, dy]
    header = np.array([batch, dim, L, NP, G, int(reverse), K], dtype=np.int64).tobytes()
    payload = header + b"".join(a.contiguous().numpy().astype(np.float32).tobytes() for a in arrays)
    r = subprocess.run([qemu, str(exe)], input=payload, capture_output=True)
    if r.returncode != 0:
        raise SystemExit(f"driver failed under {qemu} (code {r.returncode}): {r.stderr.decode()[-2000:]}")
    isa = r.stderr.decode().strip()
    flat = np.frombuffer(r.stdout, dtype=np.float32)
    sizes = dict(out=(batch, dim, L), last=(batch, dim, NP), du=(batch, dim, L), ddelta=(batch, dim, L),
                 dA=(batch, dim, NP), dB=(batch, G, L, NP), dC=(batch, G, L, NP), dD=(batch, dim),
                 dz=(batch, dim, L), dbias=(batch, dim), y=(batch, dim, L), dx=(batch, dim, L), dw=(batch, dim, K),
                 db=(batch, dim))
    got, pos = {}, 0
    for name, shape in sizes.items():
        n = int(np.prod(shape))
        got[name] = torch.from_numpy(flat[pos:pos + n].copy()).reshape(shape).double()
        pos += n
    assert pos == flat.size, "driver output has an unexpected size"

    # fp64 references
    leaves = {k: v.double().requires_grad_(True) for k, v in t.items()}
    out, last = selective_scan_ref(**leaves, delta_softplus=True, return_last_state=True, reverse=reverse)
    grads = torch.autograd.grad((out * dout.double()).sum() + (last * dlast.double()).sum(), list(leaves.values()))
    e = dict(zip(["du", "ddelta", "dA", "dB", "dC", "dD", "dz", "dbias"], grads))
    xs, ws, bs = (v.double().requires_grad_(True) for v in (x, w, cb))
    y = causal_conv1d_ref(xs, ws, bs, "silu", reverse=reverse)
    dx, dw, db = torch.autograd.grad(y, (xs, ws, bs), dy.double())
    pairs = dict(out=(got["out"], out), last=(got["last"][..., :N], last), du=(got["du"], e["du"]),
                 ddelta=(got["ddelta"], e["ddelta"]), dA=(got["dA"][..., :N].sum(0), e["dA"]),
                 dB=(got["dB"][..., :N].transpose(-1, -2), e["dB"]), dC=(got["dC"][..., :N].transpose(-1, -2), e["dC"]),
                 dD=(got["dD"].sum(0), e["dD"]), dz=(got["dz"], e["dz"]), dbias=(got["dbias"].sum(0), e["dbias"]),
                 conv_y=(got["y"], y), conv_dx=(got["dx"], dx), conv_dw=(got["dw"].sum(0), dw),
                 conv_dbias=(got["db"].sum(0), db))
    failures = []
    for name, (a, b) in pairs.items():
        scale = max(1.0, b.abs().max().item())
        err = (a - b.detach()).abs().max().item()
        if err > 1e-5 * scale + 1e-5 * b.detach().abs().max().item():
            failures.append(f"{name}: max abs error {err:.3g} (scale {scale:.3g})")
    direction = "reverse" if reverse else "forward"
    print(f"{isa} build under {qemu}, {direction}: " + ("all outputs and gradients match" if not failures
                                                        else "; ".join(failures)))
    return failures


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cxx", default="aarch64-linux-gnu-g++")
    p.add_argument("--qemu", default="qemu-aarch64")
    args = p.parse_args()
    for tool in (args.cxx, args.qemu):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found (apt install g++-aarch64-linux-gnu qemu-user)")
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "kernel_driver"
        build(args.cxx, exe)
        failures = check(exe, args.qemu, reverse=False) + check(exe, args.qemu, reverse=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
