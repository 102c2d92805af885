"""Every fast scan backend against the reference, forward and gradients of every input.

fp32 kernels are compared with the reference computed in fp64 on the same inputs, at 1e-5 (relative, and
absolute scaled to the largest expected value); half-precision inputs keep mamba-ssm's tolerances
(3e-2 / 5e-2). Shapes follow its test practice: batch 2, dim 4, dstate 8, odd lengths.
"""
import os

import pytest
import torch

from videomamba.ops import selective_scan_fn, selective_scan_ref
from videomamba.ops.selective_scan import backend_available, resolve_backend

CPU_KERNEL = backend_available("cpu", "cpu")   # raises when the build fails (conftest: VIDEOMAMBA_REQUIRE_KERNELS)
TRITON = backend_available("triton", "cpu")   # CPU tensors: conftest sets TRITON_INTERPRET=1

FP32_VS_FP32 = 5e-5   # both sides in fp32, different summation orders
TOL = {torch.float32: (1e-5, 1e-5), torch.bfloat16: (3e-2, 5e-2), torch.float16: (3e-2, 5e-2)}


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


def _close(a, b, rtol, atol, msg):
    scale = max(1.0, b.abs().max().item())
    torch.testing.assert_close(a.double(), b.double(), rtol=rtol, atol=atol * scale, msg=msg)


def check_backend(backend, L, groups, dtype, with_extras):
    t = make(L, groups, dtype, with_extras)
    t64 = {k: v.detach().double().requires_grad_(True) for k, v in t.items()}
    kw = dict(delta_softplus=with_extras, return_last_state=True)
    out, last = selective_scan_fn(**t, backend=backend, **kw)
    ref_out, ref_last = selective_scan_ref(**t64, **kw)
    rtol, atol = TOL[dtype]
    assert out.dtype == dtype and last.dtype == torch.float32
    _close(out, ref_out, rtol, atol, "out")
    _close(last, ref_last, 1e-5, 1e-5, "last")
    g_out = torch.randn_like(ref_out)
    g_last = torch.randn_like(ref_last)
    grads = torch.autograd.grad((out.double() * g_out).sum() + (last.double() * g_last).sum(), list(t.values()))
    ref = torch.autograd.grad((ref_out * g_out).sum() + (ref_last * g_last).sum(), list(t64.values()))
    for name, a, b in zip(t, grads, ref):
        assert a.dtype == t[name].dtype, name
        _close(a, b, rtol, atol, f"d{name}")


LENGTHS = [1, 7, 128, 372, 784, 1134]


@pytest.mark.parametrize("L", LENGTHS)
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("with_extras", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpu_kernel_matches_reference(L, groups, dtype, with_extras):
    check_backend("cpu", L, groups, dtype, with_extras)


@pytest.mark.parametrize("N", [1, 5, 16, 17, 40])
def test_cpu_kernel_any_state_size(N):
    t = make(9, 1, torch.float32, True, N=N)
    _close(selective_scan_fn(**t, backend="cpu", delta_softplus=True), selective_scan_ref(**t, delta_softplus=True),
           FP32_VS_FP32, FP32_VS_FP32, "out")


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


@pytest.mark.parametrize("L", [1, 7, 372])
@pytest.mark.parametrize("groups", [1, 2])
def test_reverse_scan_equals_flipped_scan(L, groups):
    """reverse=True is flip(scan(flip(x))) in every backend, gradients included."""
    t = make(L, groups, torch.float32, True)
    flip = lambda x: x.flip(-1) if x.dim() >= 3 else x  # noqa: E731
    expect = selective_scan_ref(**{k: flip(v) for k, v in t.items()}, delta_softplus=True).flip(-1)
    for backend in ("reference", "cpu") + (("triton",) if TRITON and L < 64 else ()):
        out = selective_scan_fn(**t, delta_softplus=True, reverse=True, backend=backend)
        _close(out, expect, FP32_VS_FP32, FP32_VS_FP32, backend)
        g = torch.autograd.grad(out.square().sum(), list(t.values()))
        ge = torch.autograd.grad(expect.square().sum(), list(t.values()), retain_graph=True)
        for name, a, b in zip(t, g, ge):
            _close(a, b, FP32_VS_FP32, FP32_VS_FP32, f"{backend} d{name}")


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("L", [1, 3, 40])
def test_causal_conv_native_matches_reference(reverse, L):
    from videomamba.ops import causal_conv1d_fn, causal_conv1d_ref
    from videomamba.ops.causal_conv1d import native_available

    assert native_available()
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


@pytest.mark.parametrize("L", [7, 372])
def test_cpu_kernel_fp16_inputs(L):
    check_backend("cpu", L, 2, torch.float16, True)


def test_fp64_goes_to_the_reference_and_explicit_kernel_refuses(monkeypatch):
    monkeypatch.delenv("VIDEOMAMBA_SCAN_BACKEND", raising=False)
    t = make(9, 1, torch.float64, True)
    t = {k: v.detach().double().requires_grad_(True) for k, v in t.items()}
    assert resolve_backend(None, t["u"], t["A"], t["B"], t["C"]) == "reference"
    assert torch.autograd.gradcheck(lambda *a: selective_scan_fn(*a, delta_softplus=True),
                                    tuple(t.values()), eps=1e-6, atol=1e-5)
    if CPU_KERNEL:
        with pytest.raises(ValueError, match="fp32/bf16/fp16"):
            selective_scan_fn(**t, backend="cpu")


def test_kernel_gradients_do_not_depend_on_the_default_dtype():
    t = make(13, 2, torch.float32, True)
    expect = torch.autograd.grad(selective_scan_ref(**t, delta_softplus=True).sum(), list(t.values()))
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        got = torch.autograd.grad(selective_scan_fn(**t, delta_softplus=True, backend="cpu").sum(), list(t.values()))
    finally:
        torch.set_default_dtype(old)
    for name, a, b in zip(t, got, expect):
        _close(a, b, FP32_VS_FP32, FP32_VS_FP32, name)


@pytest.mark.parametrize("option", ["D", "z", "delta_bias", "softplus"])
def test_each_optional_input_alone(option):
    t = make(37, 1, torch.float32, True)
    kw = {k: t[k] for k in ("u", "delta", "A", "B", "C")}
    if option == "softplus":
        extra = dict(delta_softplus=True)
    else:
        kw[option] = t[option]
        extra = {}
    out = selective_scan_fn(**kw, **extra, backend="cpu")
    ref = selective_scan_ref(**kw, **extra)
    _close(out, ref, FP32_VS_FP32, FP32_VS_FP32, "out")
    for a, b in zip(torch.autograd.grad(out.sum(), list(kw.values())), torch.autograd.grad(ref.sum(), list(kw.values()))):
        _close(a, b, FP32_VS_FP32, FP32_VS_FP32, "grad")


def test_softplus_is_accurate_for_very_negative_delta():
    """softplus(x) ~ exp(x) for x << 0; log(1 + exp(x)) in fp32 would round it to 0 below about -17."""
    L = 8
    delta = torch.full((1, 1, L), -15.0)
    B = torch.zeros(1, 1, L)
    B[..., 0] = 1.0
    args = (torch.ones(1, 1, L), delta, torch.zeros(1, 1), B, torch.zeros(1, 1, L))
    _, last = selective_scan_fn(*args, delta_softplus=True, return_last_state=True, backend="cpu")
    _, ref = selective_scan_ref(*args, delta_softplus=True, return_last_state=True)
    torch.testing.assert_close(last, ref, rtol=1e-4, atol=0)


def test_reverse_with_constant_bc():
    t = make(6, 1, torch.float32, True)
    B2, C2 = t["B"][0, :, 0].detach().expand(4, 8), t["C"][0, :, 0].detach().expand(4, 8)
    out = selective_scan_fn(t["u"], t["delta"], t["A"], B2, C2, reverse=True)
    expect = selective_scan_ref(t["u"].flip(-1), t["delta"].flip(-1), t["A"], B2, C2).flip(-1)
    torch.testing.assert_close(out, expect)


def test_op_falls_back_to_the_reference_where_its_kernel_cannot_run(monkeypatch):
    """An exported graph keeps its backend name; run where that kernel is missing it must still be right."""
    from videomamba.ops import scan_op

    t = make(11, 2, torch.float32, True)
    monkeypatch.setattr(scan_op, "backend_available", lambda name, dev="cpu": name == "reference")
    out, last = scan_op.selective_scan_op(t["u"], t["delta"], t["A"], t["B"], t["C"], t["D"], t["z"],
                                          t["delta_bias"], True, True, "cpu")
    ref, ref_last = selective_scan_ref(**t, delta_softplus=True, return_last_state=True, reverse=True)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(last, ref_last)
    got = torch.autograd.grad(out.sum() + last.sum(), list(t.values()))
    expect = torch.autograd.grad(ref.sum() + ref_last.sum(), list(t.values()))
    for a, b in zip(got, expect):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_without_a_compiler_the_model_warns_once_and_uses_the_reference(tmp_path):
    import subprocess
    import sys

    code = ("import warnings, torch, videomamba\n"
            "m = videomamba.VisionMamba(img_size=32, depth=1, embed_dim=16, num_classes=3, num_frames=2)\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    y = m(torch.randn(1, 3, 2, 32, 32)); y.sum().backward()\n"
            "from videomamba.ops.selective_scan import resolve_backend\n"
            "t = torch.randn(1, 4, 5)\n"
            "print('backend', resolve_backend(None, t, torch.randn(4, 8), torch.randn(1, 8, 5), torch.randn(1, 8, 5)))\n"
            "print('warnings', sum('native kernel' in str(x.message) for x in w), 'finite', bool(torch.isfinite(y).all()))\n")
    env = {"PATH": str(tmp_path), "CXX": "/nonexistent/c++", "VIDEOMAMBA_KERNEL_CACHE": str(tmp_path / "cache"),
           "HOME": str(tmp_path)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "backend reference" in r.stdout
    assert "finite True" in r.stdout
    n = int(r.stdout.split("warnings ")[1].split()[0])
    assert 1 <= n <= 2   # one per native library (scan, conv), each said once


def test_forward_mode_ad_is_refused_not_silently_zero():
    t = make(5, 1, torch.float32, False)
    u, rest = t["u"].detach(), [t[k].detach() for k in ("delta", "A", "B", "C")]
    with pytest.raises(NotImplementedError, match="reverse-mode"):
        torch.func.jvp(lambda x: selective_scan_fn(x, *rest), (u,), (torch.ones_like(u),))
