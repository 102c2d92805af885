#!/usr/bin/env python
"""Show that the reference selective scan is O(L) in forward AND backward.

Times ``selective_scan_ref`` (fwd, fwd+bwd) at B=1, D=384, N=16 over several lengths, and a naive
per-step autograd loop (what mamba-ssm's reference does: index step t, update, stack) as the
quadratic-backward baseline. Prints a table with time per 1k tokens (flat = linear) and writes JSON.

    python scripts/bench_reference_scan.py [--lengths 197 785 1569 3137] [--naive-max-len 1569]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from videomamba.ops import selective_scan_ref


def naive_loop_scan(u, delta, A, B, C, D, z, delta_bias):
    """Per-step autograd loop, indexing the (b, d, L, N) tensors at each step."""
    delta = F.softplus(delta + delta_bias[:, None])
    delta_a = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))
    delta_bu = torch.einsum("bdl,bnl,bdl->bdln", delta, B, u)
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for t in range(u.shape[-1]):
        h = delta_a[:, :, t] * h + delta_bu[:, :, t]
        ys.append(torch.einsum("bdn,bn->bd", h, C[:, :, t]))
    y = torch.stack(ys, dim=2) + u * D[:, None]
    return y * F.silu(z)


def inputs(L, dim=384, N=16):
    g = torch.Generator().manual_seed(0)
    t = [torch.randn(1, dim, L, generator=g), 0.5 * torch.rand(1, dim, L, generator=g),
         -0.5 * torch.rand(dim, N, generator=g), torch.randn(1, N, L, generator=g),
         torch.randn(1, N, L, generator=g), torch.randn(dim, generator=g), torch.randn(1, dim, L, generator=g),
         0.5 * torch.rand(dim, generator=g)]
    return [x.requires_grad_(True) for x in t]


def median_time(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[197, 785, 1569, 3137])
    ap.add_argument("--naive-max-len", type=int, default=785, help="skip the naive loop above this L")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default="reference_scan_bench.json")
    args = ap.parse_args()

    rows = []
    impls = {"reference": lambda t: selective_scan_ref(*t[:5], t[5], t[6], t[7], delta_softplus=True),
             "naive_loop": lambda t: naive_loop_scan(*t)}
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{'impl':12s} {'L':>6s} {'fwd ms':>9s} {'fwd+bwd ms':>11s} {'fwd+bwd ms / 1k tok':>20s}")
    for name, fn in impls.items():
        for L in args.lengths:
            if name == "naive_loop" and L > args.naive_max_len:
                continue
            t = inputs(L)
            with torch.no_grad():
                fwd = median_time(lambda: fn(t), args.repeats)
            fb = median_time(lambda: fn(t).sum().backward(), args.repeats)
            rows.append(dict(impl=name, L=L, fwd_s=fwd, fwd_bwd_s=fb))
            print(f"{name:12s} {L:6d} {fwd * 1e3:9.1f} {fb * 1e3:11.1f} {fb * 1e6 / L:20.1f}")
    with open(args.json, "w") as f:
        json.dump({"torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows}, f, indent=1)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
