"""Correctness of every GPU backend on a CUDA device, against fp64 references computed on the same device.

    python scripts/check_gpu.py [--part ours|mamba_ssm|all] [--smoke]
                                           # one ok / FAIL line per check; exit 1 when any fails

``--part ours``: our kernels and the model on them; ``--part mamba_ssm``: mamba-ssm's scan and the model on
that backend (scripts/check_gpu.sh runs the first while mamba-ssm compiles, the second after).

1. The Triton scan (and mamba-ssm's CUDA scan when it imports): outputs and every gradient vs the fp64
   reference scan, fp32 and bf16 inputs, both directions, two B/C groups, lengths that end in a partial
   chunk; our scan also with an initial state, the last state's gradient and the output its backward
   emits; every configuration of the autotuner's space once; two backward runs bitwise equal.
2. The Triton causal conv (+ SiLU) vs the fp64 reference conv, forward and gradients, both directions.
3. A VideoMamba: logits and gradients on the triton backend vs the reference backend (fp32), on the
   mamba_ssm backend vs triton (when it imports), and logits under torch.compile (default and
   reduce-overhead) vs eager.
"""
from __future__ import annotations

import os
import sys

import torch

FAILED: list[str] = []
SMOKE = False   # --smoke: tiny shapes on CPU tensors in Triton's interpreter, to test this script without a GPU


def report(name: str, value: float, limit: float) -> None:
    ok = value <= limit
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {value:.3g} (limit {limit:g})", flush=True)
    if not ok:
        FAILED.append(name)


def rel(a: torch.Tensor, e: torch.Tensor) -> float:
    return ((a.double() - e.double()).abs().max() / e.double().abs().max().clamp_min(1e-12)).item()


def scan_inputs(b, d, L, N, G, dev, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).to(dev)  # noqa: E731
    return dict(u=r(b, d, L), delta=r(b, d, L) * 0.5,
                A=(-torch.rand(d, N, generator=g, dtype=torch.float64) * 2 - 0.05).to(dev),
                B=r(b, G, N, L), C=r(b, G, N, L), D=r(d), z=r(b, d, L), delta_bias=r(d) * 0.3)


def run_scan(backend, t, dtype, reverse, h0=None, g_out=None, g_last=None):
    from videomamba.ops import selective_scan_fn

    x = {k: (v.to(dtype) if k not in ("A", "D", "delta_bias") else (v if dtype == torch.float64 else v.float()))
         .requires_grad_() for k, v in t.items()}
    h = None if h0 is None else h0.to(torch.float64 if dtype == torch.float64 else torch.float32).requires_grad_()
    out, last = selective_scan_fn(**x, delta_softplus=True, return_last_state=True, reverse=reverse,
                                  backend=backend, initial_state=h)
    loss = (out.double() * g_out).sum() + (last.double() * g_last).sum()
    wrt = list(x.values()) + ([h] if h is not None else [])
    return [out, last, *torch.autograd.grad(loss, wrt)]


def check_scan(dev, ours: bool, mamba_ssm: bool):
    from videomamba.ops import selective_scan_triton as S

    shapes = ((1, 12, 40, 16, 2),) if SMOKE else ((2, 200, 300, 16, 1), (1, 96, 129, 16, 2))
    for (b, d, L, N, G) in shapes:
        t = scan_inputs(b, d, L, N, G, dev)
        h0 = torch.randn(b, d, N, device=dev, dtype=torch.float64)
        g_out = torch.randn(b, d, L, device=dev, dtype=torch.float64)
        g_last = torch.randn(b, d, N, device=dev, dtype=torch.float64)
        for reverse in (False, True):
            ref = run_scan("reference", t, torch.float64, reverse, h0, g_out, g_last)
            # mamba-ssm takes no initial state and its backward ignores the last state's gradient
            no_last = torch.zeros_like(g_last)
            ref0 = run_scan("reference", t, torch.float64, reverse, None, g_out, no_last) if mamba_ssm else None
            for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 3e-2)):
                tag = f"({b},{d},{L},{N}) G={G} {str(dtype)[6:]} reverse={reverse}"
                if ours:
                    got = run_scan("triton", t, dtype, reverse, h0, g_out, g_last)
                    report(f"triton scan {tag}, worst of out/last/every gradient (rel)",
                           max(rel(a, e) for a, e in zip(got, ref)), tol)
                if mamba_ssm:
                    theirs = run_scan("mamba_ssm", t, dtype, reverse, None, g_out, no_last)
                    worst = max(rel(a, e) for a, e in zip(theirs, ref0))
                    report(f"mamba_ssm scan {tag}, worst of out/last/every gradient (rel)", worst, tol)
        if not ours:
            continue
        # what the lean paths call directly: the output emitted by the backward
        x = {k: v.float() for k, v in t.items()}
        args = [x[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
        for reverse in (False, True):
            out, _ = S.scan_fwd(*args, True, reverse)
            emitted = S.scan_bwd(torch.randn_like(out), *args, True, reverse=reverse, return_out=True)[-1]
            # (the backward's chunks are shorter than the forward's: rounding differs, the math does not)
            report(f"triton backward's emitted output vs its forward (reverse={reverse}) (rel)",
                   rel(emitted, out), 1e-5)
    if not ours:
        return
    # every configuration of the autotuner's space, once, at a shape with partial blocks and chunks
    b, d, L = (1, 12, 40) if SMOKE else (2, 100, 333)
    t = scan_inputs(b, d, L, 16, 2, dev, seed=1)
    g_out = torch.randn(b, d, L, device=dev, dtype=torch.float64)
    g_last = torch.randn(b, d, 16, device=dev, dtype=torch.float64)
    ref = run_scan("reference", t, torch.float64, False, None, g_out, g_last)
    x = {k: v.float() for k, v in t.items()}
    args = [x[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    for kind, configs in (("fwd", S._configs("fwd")), ("bwd", S._configs("bwd"))):
        for c in configs:
            cfg = dict(c.kwargs, num_warps=c.num_warps)
            if kind == "fwd":
                out, last = S.scan_fwd(*args, True, _config=cfg)
                err = max(rel(out, ref[0]), rel(last, ref[1]))
            else:
                grads = S.scan_bwd(g_out.float(), *args, True, dlast=g_last.float(), _config=cfg)
                err = max(rel(a, e) for a, e in zip(grads[:8], ref[2:]))
            report(f"triton scan {kind} with {cfg}, worst rel err", err, 1e-4)
    # the carry composed 2 chunks at a time (several groups, a partial last one), forward and backward
    cfg = dict(T=32, CARRY_GROUP=2)
    out, last = S.scan_fwd(*args, True, _config=cfg)
    grads = S.scan_bwd(g_out.float(), *args, True, dlast=g_last.float(), _config=cfg)
    report("triton scan with the carry in groups of 2 chunks, worst rel err",
           max([rel(out, ref[0]), rel(last, ref[1])] + [rel(a, e) for a, e in zip(grads[:8], ref[2:])]), 1e-4)
    if not SMOKE:   # past 2^31 elements (64-bit offsets): the last batch element alone gives the same output
        big = [torch.randn(128, 1536, 10923, device=dev, dtype=torch.bfloat16) for _ in range(2)]
        bc = [torch.randn(128, 16, 10923, device=dev, dtype=torch.bfloat16) for _ in range(2)]
        A, D, bias = -torch.rand(1536, 16, device=dev) - 0.1, torch.randn(1536, device=dev), \
            torch.randn(1536, device=dev) * 0.1
        full, _ = S.scan_fwd(big[0], big[1], A, bc[0], bc[1], D, None, bias, True)
        alone, _ = S.scan_fwd(big[0][-1:], big[1][-1:], A, bc[0][-1:], bc[1][-1:], D, None, bias, True)
        report("triton scan at batch x dim x L = 2.15e9 (64-bit offsets): last element vs scanned alone (rel)",
               rel(full[-1:], alone), 1e-6)
        del big, bc, full, alone
        torch.cuda.empty_cache()
    # both directions in one output pass vs the fp64 reference of each direction, summed and gated
    t_b = scan_inputs(b, d, L, 16, 2, dev, seed=2)
    keys = ("u", "delta", "A", "B", "C", "D", "delta_bias")
    ref_f = run_scan("reference", {k: t[k] for k in (*keys, "z")}, torch.float64, False, None, g_out, g_last)[0]
    t_bz = dict({k: t_b[k] for k in keys}, z=t["z"])
    ref_b = run_scan("reference", t_bz, torch.float64, True, None, g_out, g_last)[0]
    for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 3e-2)):
        cast = lambda src: {k: (src[k].to(dtype) if k not in ("A", "D", "delta_bias") else src[k].float())  # noqa: E731
                            for k in keys}
        pair = S.scan_fwd_pair(cast(t), cast(t_b), z=t["z"].to(dtype), delta_softplus=True)
        report(f"triton scan, both directions in one output pass, {str(dtype)[6:]} (rel)", rel(pair, ref_f + ref_b),
               tol)
    # deterministic: no atomics in the result path
    a = S.scan_bwd(g_out.float(), *args, True, dlast=g_last.float())
    b = S.scan_bwd(g_out.float(), *args, True, dlast=g_last.float())
    report("triton scan backward run twice, number of gradients not bitwise equal",
           sum(not torch.equal(p, q) for p, q in zip(a, b) if p is not None), 0)


def check_conv(dev):
    from videomamba.ops.causal_conv1d import causal_conv1d_fn

    g = torch.Generator(device="cpu").manual_seed(2)
    d, L = (8, 70) if SMOKE else (384, 1000)
    x = torch.randn(2, d, L, generator=g, dtype=torch.float64).to(dev)
    w = torch.randn(d, 4, generator=g, dtype=torch.float64).to(dev)
    bias = torch.randn(d, generator=g, dtype=torch.float64).to(dev)
    dy = torch.randn(2, d, L, generator=g, dtype=torch.float64).to(dev)
    for reverse in (False, True):
        res = {}
        for name, dtype, backend in (("ref", torch.float64, "reference"), ("fp32", torch.float32, "triton"),
                                     ("bf16", torch.bfloat16, "triton")):
            xs = x.to(dtype).requires_grad_()
            ws, bs = w.to(torch.float64 if dtype == torch.float64 else torch.float32).requires_grad_(), \
                bias.to(torch.float64 if dtype == torch.float64 else torch.float32).requires_grad_()
            y = causal_conv1d_fn(xs, ws, bs, "silu", reverse=reverse, backend=backend)
            res[name] = [y, *torch.autograd.grad((y.double() * dy).sum(), [xs, ws, bs])]
        for name, tol in (("fp32", 1e-5), ("bf16", 3e-2)):
            report(f"triton conv+SiLU {name} reverse={reverse}, worst of y/dx/dw/db (rel)",
                   max(rel(a, e) for a, e in zip(res[name], res["ref"])), tol)


def check_model(dev, ours: bool, mamba_ssm: bool):
    from videomamba.models.vision_mamba import VisionMamba

    torch.manual_seed(0)
    size, dim, frames = (32, 16, 2) if SMOKE else (112, 192, 8)
    m = VisionMamba(img_size=size, patch_size=16, depth=2 if SMOKE else 4, embed_dim=dim, num_classes=10,
                    num_frames=frames, drop_path_rate=0.0).to(dev)
    x = torch.randn(2, 3, frames, size, size, device=dev)
    results = {}
    backends = (["reference", "triton"] if ours else ["triton"]) + (["mamba_ssm"] if mamba_ssm else [])
    for backend in backends:
        os.environ["VIDEOMAMBA_SCAN_BACKEND"] = backend
        m.zero_grad(set_to_none=True)
        m.train()
        out = m(x)
        out.logsumexp(-1).sum().backward()
        results[backend] = (out.detach(), {n: p.grad.clone() for n, p in m.named_parameters()})
    os.environ.pop("VIDEOMAMBA_SCAN_BACKEND")
    pairs = ([("triton", "reference")] if ours else []) + ([("mamba_ssm", "triton")] if mamba_ssm else [])
    for backend, anchor in pairs:
        out, grads = results[backend]
        e_out, e_grads = results[anchor]
        report(f"VideoMamba training forward on {backend} vs {anchor} backend, logits (rel)", rel(out, e_out), 1e-4)
        report(f"VideoMamba gradients on {backend} vs {anchor} backend, worst parameter (rel)",
               max(rel(grads[n], g) for n, g in e_grads.items()), 1e-3)
    if not ours:
        return
    m.eval()
    with torch.no_grad():
        eager = m(x)
        for mode in (() if SMOKE else ("default", "reduce-overhead")):   # (inductor on CPU: minutes)
            compiled = torch.compile(m, mode=mode)
            for _ in range(3):   # reduce-overhead records its CUDA graph on a later call
                got = compiled(x)
            report(f"VideoMamba logits under torch.compile(mode={mode!r}) vs eager (rel)", rel(got, eager), 1e-4)
            torch._dynamo.reset()


def main(argv=None) -> int:
    global SMOKE
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=["ours", "mamba_ssm", "all"], default="all")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on CPU in Triton's interpreter")
    args = ap.parse_args(argv)
    SMOKE = args.smoke
    if SMOKE:   # the script's logic on CPU: Triton's interpreter, the tests' faster interpreter scan
        os.environ["TRITON_INTERPRET"] = "1"
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
        from triton_interpreter import install

        install()
    elif not torch.cuda.is_available():
        print("check_gpu: no CUDA device (--smoke runs tiny shapes on CPU)")
        return 2
    from videomamba.ops.selective_scan import backend_available

    dev = torch.device("cpu" if SMOKE else "cuda")
    mamba_ssm = backend_available("mamba_ssm", dev.type)
    name = "CPU (smoke test, Triton interpreter)" if SMOKE else torch.cuda.get_device_name()
    print(f"device: {name}, torch {torch.__version__}; mamba_ssm "
          f"{'imports' if mamba_ssm else 'does not import (its checks are skipped)'}", flush=True)
    torch.backends.cuda.matmul.allow_tf32 = False   # fp32 comparisons: no TF32 matmuls in the model checks
    torch.backends.cudnn.allow_tf32 = False
    ours = args.part in ("ours", "all")
    if args.part == "mamba_ssm" and not mamba_ssm:
        report("mamba_ssm imports (scripts/build_mamba_ssm.sh builds it)", 1, 0)
    mamba_ssm = mamba_ssm and args.part in ("mamba_ssm", "all")
    check_scan(dev, ours, mamba_ssm)
    if ours:
        check_conv(dev)
    check_model(dev, ours, mamba_ssm)
    print("FAILED: " + ", ".join(FAILED) if FAILED else "all checks passed", flush=True)
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
