"""Every fast scan backend against the reference, forward and gradients of every input.

Tolerances are mamba-ssm's: fp32 rtol 6e-4 / atol 2e-3 (delta's gradient at 5x rtol, 10x atol),
bf16 3e-2 / 5e-2. Shapes follow its test practice: batch 2, dim 4, dstate 8, odd lengths.
"""
import os

import pytest
import torch

from videomamba.ops import selective_scan_fn, selective_scan_ref
from videomamba.ops.selective_scan import backend_available, resolve_backend

CPU_KERNEL = backend_available("cpu", "cpu")
TRITON = backend_available("triton", "cpu")   # CPU tensors: conftest sets TRITON_INTERPRET=1

TOL = {torch.float32: (6e-4, 2e-3), torch.bfloat16: (3e-2, 5e-2), torch.float16: (3e-2, 5e-2)}


def make(L, groups, dtype, with_extras, batch=2, dim=4, N=8, seed=0):
    g = torch.Generator().manual_seed(seed + L)
    bc = (batch, N, L) if groups == 1 else (batch, groups, N, L)
    t = dict(u=torch.randn(batch, dim, L, generator=g), delta=0.5 * torch.rand(batch, dim, L, generator=g),
             A=-0.5 * torch.rand(dim, N, generator=g), B=torch.randn(*bc, generator=g), C=torch.randn(*bc, generator=g))
    if with_extras:
        t.update(D=torch.randn(dim, generator=g), z=torch.randn(batch, dim, L, generator=g),
                 delta_bias=0.5 * torch.rand(dim, generator=g))
    for k in ("u", "delta", "B", "C", "z"):
        if k in t:
            t[k] = t[k].to(dtype)
    return {k: v.requires_grad_(True) for k, v in t.items()}


def check_backend(backend, L, groups, dtype, with_extras):
    t = make(L, groups, dtype, with_extras)
    kw = dict(delta_softplus=with_extras, return_last_state=True)
    out, last = selective_scan_fn(**t, backend=backend, **kw)
    ref_out, ref_last = selective_scan_ref(**t, **kw)
    rtol, atol = TOL[dtype]
    assert out.dtype == ref_out.dtype == dtype
    torch.testing.assert_close(out, ref_out, rtol=rtol, atol=atol)
    torch.testing.assert_close(last, ref_last, rtol=rtol, atol=atol)
    g_out = torch.randn_like(ref_out)
    g_last = torch.randn_like(ref_last)
    names = list(t)
    grads = torch.autograd.grad((out.float() * g_out.float()).sum() + (last * g_last).sum(), list(t.values()))
    ref = torch.autograd.grad((ref_out.float() * g_out.float()).sum() + (ref_last * g_last).sum(), list(t.values()))
    for name, a, b in zip(names, grads, ref):
        r, at = (5 * rtol, 10 * atol) if name == "delta" else (rtol, atol)
        if name in ("A", "D", "delta_bias", "B", "C"):   # sums over many terms: scale the tolerance
            at = at * max(1.0, b.abs().max().item() / 10)
        torch.testing.assert_close(a, b, rtol=r, atol=at, msg=f"d{name}")


LENGTHS = [1, 7, 128, 372, 784, 1134]


@pytest.mark.skipif(not CPU_KERNEL, reason="native CPU kernel could not be built here")
@pytest.mark.parametrize("L", LENGTHS)
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("with_extras", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpu_kernel_matches_reference(L, groups, dtype, with_extras):
    check_backend("cpu", L, groups, dtype, with_extras)


@pytest.mark.skipif(not CPU_KERNEL, reason="native CPU kernel could not be built here")
@pytest.mark.parametrize("N", [1, 5, 16, 17, 40])
def test_cpu_kernel_any_state_size(N):
    t = make(9, 1, torch.float32, True, N=N)
    torch.testing.assert_close(selective_scan_fn(**t, backend="cpu", delta_softplus=True),
                               selective_scan_ref(**t, delta_softplus=True), rtol=6e-4, atol=2e-3)


@pytest.mark.skipif(not CPU_KERNEL, reason="native CPU kernel could not be built here")
def test_custom_op_passes_opcheck():
    t = make(11, 2, torch.float32, True)
    args = (t["u"], t["delta"], t["A"], t["B"], t["C"], t["D"], t["z"], t["delta_bias"], True, True, "cpu")
    result = torch.library.opcheck(torch.ops.videomamba.selective_scan.default, args)
    assert all(v == "SUCCESS" for v in result.values()), result


def test_dispatch_rules(monkeypatch):
    t = make(5, 1, torch.float32, False)
    u, A, B, C = t["u"], t["A"], t["B"], t["C"]
    monkeypatch.delenv("VIDEOMAMBA_SCAN_BACKEND", raising=False)
    assert resolve_backend(None, u, A, B, C) == ("cpu" if CPU_KERNEL else "reference")
    assert resolve_backend(None, u, A, B[0, :, 0].expand(4, 8), C) == "reference"   # constant B
    monkeypatch.setenv("VIDEOMAMBA_SCAN_BACKEND", "reference")
    assert resolve_backend(None, u, A, B, C) == "reference"
    assert resolve_backend("auto", u, A, B, C) == ("cpu" if CPU_KERNEL else "reference")
    monkeypatch.setenv("VIDEOMAMBA_SCAN_BACKEND", "nonsense")
    with pytest.raises(ValueError, match="VIDEOMAMBA_SCAN_BACKEND"):
        resolve_backend(None, u, A, B, C)
    with pytest.raises(RuntimeError, match="mamba_ssm"):
        resolve_backend("mamba_ssm", u, A, B, C)   # CUDA-only


def test_model_uses_the_env_backend(monkeypatch):
    """The model picks the backend up with no code change; both give the same logits."""
    import videomamba

    m = videomamba.VisionMamba(img_size=32, depth=2, embed_dim=32, num_classes=3, num_frames=2).eval()
    x = torch.randn(2, 3, 2, 32, 32)
    outs = {}
    for name in ("reference", "auto"):
        monkeypatch.setenv("VIDEOMAMBA_SCAN_BACKEND", name)
        with torch.no_grad():
            outs[name] = m(x)
    torch.testing.assert_close(outs["auto"], outs["reference"], rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not TRITON, reason="needs triton and TRITON_INTERPRET=1 (CPU) or a GPU")
@pytest.mark.parametrize("L", [1, 7, 33])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("with_extras", [True, False])
def test_triton_kernel_matches_reference_interpreted(L, groups, with_extras):
    assert os.environ.get("TRITON_INTERPRET") == "1"
    check_backend("triton", L, groups, torch.float32, with_extras)


@pytest.mark.skipif(not TRITON, reason="needs triton and TRITON_INTERPRET=1 (CPU) or a GPU")
def test_model_with_triton_backend_matches_reference(monkeypatch):
    import videomamba

    m = videomamba.VisionMamba(img_size=32, depth=1, embed_dim=16, num_classes=3, num_frames=2,
                               drop_path_rate=0.0)
    x = torch.randn(2, 3, 2, 32, 32)
    results = {}
    for name in ("reference", "triton"):
        monkeypatch.setenv("VIDEOMAMBA_SCAN_BACKEND", name)
        m.zero_grad()
        out = m(x)
        out.square().sum().backward()
        results[name] = (out.detach(), {n: p.grad.clone() for n, p in m.named_parameters()})
    torch.testing.assert_close(results["triton"][0], results["reference"][0], rtol=1e-4, atol=1e-5)
    for n, g in results["reference"][1].items():
        torch.testing.assert_close(results["triton"][1][n], g, rtol=1e-3, atol=1e-5, msg=n)


@pytest.mark.skipif(not CPU_KERNEL, reason="native CPU kernel could not be built here")
@pytest.mark.parametrize("L", [1, 7, 372])
@pytest.mark.parametrize("groups", [1, 2])
def test_reverse_scan_equals_flipped_scan(L, groups):
    """reverse=True is flip(scan(flip(x))) in every backend, gradients included."""
    t = make(L, groups, torch.float32, True)
    flip = lambda x: x.flip(-1) if x.dim() >= 3 else x  # noqa: E731
    expect = selective_scan_ref(**{k: flip(v) for k, v in t.items()}, delta_softplus=True).flip(-1)
    for backend in ("reference", "cpu"):
        out = selective_scan_fn(**t, delta_softplus=True, reverse=True, backend=backend)
        torch.testing.assert_close(out, expect, rtol=6e-4, atol=2e-3)
        g = torch.autograd.grad(out.square().sum(), list(t.values()))
        ge = torch.autograd.grad(expect.square().sum(), list(t.values()), retain_graph=True)
        for name, a, b in zip(t, g, ge):
            torch.testing.assert_close(a, b, rtol=6e-4, atol=2e-3 * max(1.0, b.abs().max().item() / 10), msg=name)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("L", [1, 3, 40])
def test_causal_conv_native_matches_reference(reverse, L):
    from videomamba.ops import causal_conv1d_fn, causal_conv1d_ref
    from videomamba.ops.causal_conv1d import native_available

    if not native_available():
        pytest.skip("native CPU kernel could not be built here")
    x = torch.randn(2, 5, L, requires_grad=True)
    w = torch.randn(5, 4, requires_grad=True)
    b = torch.randn(5, requires_grad=True)
    y = causal_conv1d_fn(x, w, b, "silu", reverse=reverse, backend="cpu")
    r = causal_conv1d_ref(x, w, b, "silu", reverse=reverse)
    torch.testing.assert_close(y, r, rtol=1e-5, atol=1e-5)
    for a, e in zip(torch.autograd.grad(y.sum(), (x, w, b)), torch.autograd.grad(r.sum(), (x, w, b))):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)
    result = torch.library.opcheck(torch.ops.videomamba.causal_conv1d.default, (x, w, b, True, reverse))
    assert all(v == "SUCCESS" for v in result.values()), result


@pytest.mark.skipif(not CPU_KERNEL, reason="native CPU kernel could not be built here")
@pytest.mark.parametrize("L", [7, 372])
def test_cpu_kernel_fp16_inputs(L):
    check_backend("cpu", L, 2, torch.float16, True)
