"""The native CPU kernels, built for every instruction-set level this machine can run, against fp64 oracles.

Each test runs once per build (``kernel_target``): ``native`` (AVX-512 here: 16 lanes), ``x86-64-v3``
(AVX2+FMA: 8 lanes) and ``x86-64-v2`` (SSE4: 4 lanes, the NEON width). Both sides of every comparison
are exact enough for tight tolerances: the kernel computes in fp32 and is compared with the reference run
in fp64 on the same (rounded) inputs; only bf16 outputs and gradients get bf16 tolerances.
"""
import platform
from pathlib import Path

import pytest
import torch

from videomamba.ops import causal_conv1d_fn, causal_conv1d_ref, selective_scan_fn, selective_scan_ref
from videomamba.ops import causal_conv1d, rms_norm_cpu, selective_scan_cpu
from videomamba.ops._build import ARCH_ENV, load_native

from test_selective_scan_ref import stepwise_scan


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _targets() -> list[tuple[str, str | None]]:
    """(-march level, the ISA the kernel must report for it)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return [("native", None)]
    flags = _cpu_flags()
    out = [("native", "AVX-512" if "avx512f" in flags else "AVX2+FMA" if {"avx2", "fma"} <= flags else None)]
    if {"avx2", "fma"} <= flags:
        out.append(("x86-64-v3", "AVX2+FMA"))
    out.append(("x86-64-v2", "SSE4"))
    return out


TARGETS = _targets()
LANES = {"AVX-512": 16, "AVX2+FMA": 8, "SSE4": 4}


@pytest.fixture(params=TARGETS, ids=[t for t, _ in TARGETS])
def kernel_target(request, monkeypatch):
    """Build (strictly: a failed build fails the test) and select the kernels for one -march level."""
    arch, isa = request.param
    monkeypatch.setenv(ARCH_ENV, arch)
    for src in ("cpu/selective_scan.cpp", "cpu/causal_conv1d.cpp", "cpu/fused_mixer.cpp", "cpu/rms_norm.cpp"):
        assert load_native(src, arch=arch, strict=True) is not None
    if isa is not None:
        assert selective_scan_cpu.target() == f"{isa}, {LANES[isa]} lanes"
        assert causal_conv1d.native_target() == f"{isa}, {LANES[isa]} lanes"
        assert rms_norm_cpu.target() == f"{isa}, {LANES[isa]} lanes"
    return arch


def scan_inputs(N, groups, dtype, L=37, batch=2, dim=4, seed=0):
    g = torch.Generator().manual_seed(seed + 100 * N + L)
    bc = (batch, N, L) if groups == 1 else (batch, groups, N, L)
    t = dict(u=torch.randn(batch, dim, L, generator=g), delta=0.5 * torch.rand(batch, dim, L, generator=g),
             A=-0.5 - torch.rand(dim, N, generator=g), B=torch.randn(*bc, generator=g),
             C=torch.randn(*bc, generator=g), D=torch.randn(dim, generator=g),
             z=torch.randn(batch, dim, L, generator=g), delta_bias=0.5 * torch.rand(dim, generator=g))
    return {k: v.to(dtype) if k in ("u", "delta", "B", "C", "z") else v for k, v in t.items()}


def _grads(fn, inputs, g_out, g_last):
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in inputs.items()}
    out, last = fn(leaves)
    loss = (out.double() * g_out).sum() + (last.double() * g_last).sum()
    return out.detach(), last.detach(), dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))


def _close(actual, expected, rtol, atol, msg):
    """assert_close with the absolute tolerance scaled to the size of the expected values (gradients of
    A, B, C, D are sums over many terms)."""
    scale = max(1.0, expected.abs().max().item())
    torch.testing.assert_close(actual.double(), expected.double(), rtol=rtol, atol=atol * scale, msg=msg)


@pytest.mark.parametrize("N", [1, 5, 16, 17, 32, 40])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_scan_kernel_values_and_gradients(kernel_target, N, reverse, groups, dtype):
    """Every output and every gradient, with random upstream gradients on the output AND the last state."""
    t = scan_inputs(N, groups, dtype)
    batch, dim, L = t["u"].shape
    gen = torch.Generator().manual_seed(N)
    g_out = torch.randn(batch, dim, L, generator=gen, dtype=torch.float64)
    g_last = torch.randn(batch, dim, N, generator=gen, dtype=torch.float64)

    def kernel(x):
        return selective_scan_fn(**x, delta_softplus=True, return_last_state=True, reverse=reverse, backend="cpu")

    def oracle(x):   # the reference in fp64 on the same (possibly bf16-rounded) inputs
        x64 = {k: v.double() for k, v in x.items()}
        return selective_scan_ref(**x64, delta_softplus=True, return_last_state=True, reverse=reverse)

    out, last, grads = _grads(kernel, t, g_out, g_last)
    e_out, e_last, e_grads = _grads(oracle, t, g_out, g_last)
    assert out.dtype == dtype and last.dtype == torch.float32
    if dtype == torch.float32:
        rtol, atol = 1e-5, 1e-5
    else:   # bf16 outputs / input gradients: one bf16 rounding (2^-8 relative) on top of fp32 math
        rtol, atol = 1e-2, 1e-2
    _close(out, e_out, rtol, atol, "out")
    _close(last, e_last, 1e-5, 1e-5, "last state")   # fp32 whatever the input dtype
    for name, g in grads.items():
        assert g.dtype == t[name].dtype, name
        _close(g, e_grads[name], rtol, atol, f"d{name}")


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("L", [1, 2, 17, 33])
def test_scan_kernel_matches_the_stepwise_oracle(kernel_target, reverse, L):
    """Kernel against the textbook per-step recurrence in fp64, both directions, last state included."""
    t = scan_inputs(16, 2, torch.float32, L=L)
    out, last = selective_scan_fn(**t, delta_softplus=True, return_last_state=True, reverse=reverse, backend="cpu")
    e_out, e_last = stepwise_scan(**{k: v.double() for k, v in t.items()}, delta_softplus=True, reverse=reverse)
    _close(out, e_out, 1e-5, 1e-5, "out")
    _close(last, e_last, 1e-5, 1e-5, "last")


def test_scan_kernel_at_a_model_length(kernel_target):
    """A long row (state blocks, thread split and the backward's per-thread dB/dC sums at scale)."""
    t = scan_inputs(16, 1, torch.float32, L=1569, batch=1, dim=8)
    g_out = torch.randn(1, 8, 1569, dtype=torch.float64)
    g_last = torch.randn(1, 8, 16, dtype=torch.float64)
    out, last, grads = _grads(lambda x: selective_scan_fn(**x, delta_softplus=True, return_last_state=True,
                                                          backend="cpu"), t, g_out, g_last)
    e_out, e_last, e_grads = _grads(lambda x: selective_scan_ref(**{k: v.double() for k, v in x.items()},
                                                                 delta_softplus=True, return_last_state=True),
                                    t, g_out, g_last)
    _close(out, e_out, 1e-5, 1e-5, "out")
    _close(last, e_last, 1e-5, 1e-5, "last")
    for name, g in grads.items():
        _close(g, e_grads[name], 1e-5, 2e-5, f"d{name}")


@pytest.mark.parametrize("K", [2, 3, 4])
@pytest.mark.parametrize("reverse", [False, True], ids=["causal", "anticausal"])
@pytest.mark.parametrize("L", [1, 5, 17, 2000])
@pytest.mark.parametrize("silu", [True, False], ids=["silu", "linear"])
def test_conv_kernel_values_and_gradients(kernel_target, K, reverse, L, silu):
    """Random upstream gradients (an all-ones one hides index errors), against fp64 PyTorch conv1d."""
    g = torch.Generator().manual_seed(K * 1000 + L)
    x = torch.randn(2, 6, L, generator=g)
    w = torch.randn(6, K, generator=g)
    b = torch.randn(6, generator=g)
    dy = torch.randn(2, 6, L, generator=g, dtype=torch.float64)
    act = "silu" if silu else None

    def run(fn, dtype):
        xs, ws, bs = (v.detach().to(dtype).requires_grad_(True) for v in (x, w, b))
        y = fn(xs, ws, bs)
        return (y.detach(), *torch.autograd.grad(y, (xs, ws, bs), dy.to(dtype)))

    got = run(lambda *a: causal_conv1d_fn(*a, act, reverse=reverse, backend="cpu"), torch.float32)
    expect = run(lambda *a: causal_conv1d_ref(*a, act, reverse=reverse), torch.float64)
    for name, a, e in zip(("y", "dx", "dw", "dbias"), got, expect):
        assert a.dtype == torch.float32
        _close(a, e, 1e-5, 1e-5, name)


def test_conv_kernel_bf16_inputs(kernel_target):
    x = torch.randn(2, 6, 50).bfloat16().requires_grad_(True)
    w = torch.randn(6, 4).requires_grad_(True)
    y = causal_conv1d_fn(x, w, None, "silu", backend="cpu")
    assert y.dtype == torch.bfloat16
    expect = causal_conv1d_ref(x.detach().double(), w.detach().double(), None, "silu")
    _close(y, expect, 1e-2, 1e-2, "y")
    dy = torch.randn_like(y)
    dx, dw = torch.autograd.grad(y, (x, w), dy)
    x64, w64 = x.detach().double().requires_grad_(True), w.detach().double().requires_grad_(True)
    ex, ew = torch.autograd.grad(causal_conv1d_ref(x64, w64, None, "silu"), (x64, w64), dy.double())
    _close(dx, ex, 1e-2, 1e-2, "dx")
    _close(dw, ew, 1e-2, 1e-2, "dw")


def test_flush_denormals_covers_torch_ops_on_every_thread():
    from videomamba.ops import flush_denormals

    flush_denormals(False)   # the training engine turns it on for its process (earlier tests)
    tiny = torch.full((1 << 20,), 1e-39)   # subnormal; large enough for torch to split it over threads
    assert tiny.count_nonzero().item() == tiny.numel()
    try:
        assert flush_denormals(True)
        assert (tiny * 1.0).count_nonzero().item() == 0      # DAZ: read as 0 on every thread
    finally:
        flush_denormals(False)
    assert (tiny * 1.0).count_nonzero().item() == tiny.numel()
