"""Check the lean paths on a CUDA GPU (the Triton scan compiled, not interpreted) and print their figures.

    python scripts/check_gpu_lean.py            # needs a CUDA device; prints one line per check

1. The Triton scan with an initial state and with its output emitted by the backward, against the fp64
   reference (outputs and every gradient).
2. A VideoMamba forward without gradients, chunked (in-place residual loop) against the plain block loop.
3. A training step with the recomputing norm + mixer function against plain autograd (fp32 and bf16 autocast).
4. Peak CUDA memory of VideoMamba-Ti at 64 frames: inference chunked vs plain, training recompute vs plain.
Exits non-zero when a comparison is off.
"""
from __future__ import annotations

import sys

import torch

from videomamba import create_model
from videomamba.models.vision_mamba import VisionMamba
from videomamba.ops import selective_scan_fn

FAILED = []


def report(name, value, limit):
    ok = value <= limit
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {value:.3g} (limit {limit:g})", flush=True)
    if not ok:
        FAILED.append(name)


def check_scan(dev):
    g = torch.Generator(device="cpu").manual_seed(0)
    b, d, L, N = 2, 128, 300, 16
    t = dict(u=torch.randn(b, d, L, generator=g), delta=torch.randn(b, d, L, generator=g) * 0.5,
             A=-torch.rand(d, N, generator=g) * 2, B=torch.randn(b, N, L, generator=g),
             C=torch.randn(b, N, L, generator=g), D=torch.randn(d, generator=g), z=torch.randn(b, d, L, generator=g),
             delta_bias=torch.randn(d, generator=g) * 0.1)
    h0 = torch.randn(b, d, N, generator=g)
    g_out, g_last = torch.randn(b, d, L, generator=g), torch.randn(b, d, N, generator=g)
    for reverse in (False, True):
        res = {}
        for name, dtype, device, backend in (("triton", torch.float32, dev, "triton"),
                                             ("ref", torch.float64, "cpu", "reference")):
            x = {k: v.to(device, dtype).requires_grad_() for k, v in t.items()}
            h = h0.to(device, dtype).requires_grad_()
            out, last = selective_scan_fn(**x, delta_softplus=True, return_last_state=True, reverse=reverse,
                                          backend=backend, initial_state=h)
            loss = (out * g_out.to(device, dtype)).sum() + (last * g_last.to(device, dtype)).sum()
            grads = torch.autograd.grad(loss, [*x.values(), h])
            res[name] = [out, last, *grads]
        worst = max(((a.double().cpu() - e.double()).abs().max() / (e.abs().max() + 1e-12)).item()
                    for a, e in zip(res["triton"], res["ref"]))
        report(f"triton scan with initial state vs fp64 reference (reverse={reverse}), max rel err", worst, 1e-4)
    from videomamba.ops import selective_scan_triton as k

    x = {key: v.to(dev) for key, v in t.items()}
    for reverse in (False, True):
        out, _ = k.scan_fwd(*x.values(), True, reverse)
        emitted = k.scan_bwd(torch.randn_like(out), *x.values(), True, reverse=reverse, return_out=True)[-1]
        report(f"triton backward's emitted output vs forward (reverse={reverse})", (emitted - out).abs().max().item(),
               1e-5)


def check_model(dev):
    torch.manual_seed(0)
    m = VisionMamba(img_size=64, depth=4, embed_dim=96, num_classes=10, num_frames=8, drop_path_rate=0.0).to(dev)
    x = torch.randn(2, 3, 8, 64, 64, device=dev)
    m.eval()
    with torch.no_grad():
        m.set_inference_chunk(0)
        plain = m(x)
        m.set_inference_chunk(100)
        lean = m(x)
    report("chunked no-grad forward vs plain block loop, max |diff| of logits", (lean - plain).abs().max().item(), 1e-5)
    m.train()
    for amp in (False, True):
        grads = {}
        for mode in ("none", "block"):
            m.zero_grad(set_to_none=True)
            m.set_recompute(mode)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                out = m(x)
            out.float().logsumexp(-1).sum().backward()
            grads[mode] = {n: p.grad.clone() for n, p in m.named_parameters()}
        worst = max(((grads["block"][n] - g).abs().max() / (g.abs().max() + 1e-12)).item()
                    for n, g in grads["none"].items())
        report(f"recomputed training gradients vs plain autograd ({'bf16 autocast' if amp else 'fp32'}), "
               f"max rel err", worst, 2e-2 if amp else 1e-4)


def memory_at_64_frames(dev):
    x = torch.randn(1, 3, 64, 224, 224, device=dev)
    m = create_model("videomamba_tiny", num_frames=64, num_classes=400).to(dev)

    def peak(fn):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2 ** 20

    m.eval()
    for chunk in (0, 1024):
        m.set_inference_chunk(chunk)
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            mb = peak(lambda: m(x))
        print(f"info inference 64x224 bf16 autocast, inference_chunk={chunk}: peak {mb:.0f} MB", flush=True)
    m.train()
    for mode in ("none", "block"):
        m.set_recompute(mode)

        def step():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = m(x).float().logsumexp(-1).mean()
            loss.backward()
            m.zero_grad(set_to_none=True)

        step()
        print(f"info training step 64x224 bf16 autocast, recompute={mode}: peak {peak(step):.0f} MB", flush=True)


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 2
    dev = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    check_scan(dev)
    check_model(dev)
    memory_at_64_frames(dev)
    print("FAILED: " + ", ".join(FAILED) if FAILED else "all checks passed")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
