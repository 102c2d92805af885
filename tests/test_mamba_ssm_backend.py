"""The ``mamba_ssm`` scan backend on every model path, on CPU, against a stand-in for mamba-ssm.

mamba-ssm's kernel needs CUDA, so a stub package is put in ``sys.modules`` as ``mamba_ssm`` whose
``ops.selective_scan_interface.selective_scan_fn`` has mamba-ssm's documented signature and contract (checked
from its 2.x source: ``selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None,
delta_softplus=False, return_last_state=False)``; u/delta/z (batch, dim, L), B/C (batch, N, L) or
(batch, G, N, L) in u's dtype, A (dim, N), D and delta_bias (dim,) in fp32; no initial state, no reverse flag)
and computes the scan with its own fp64 loop, written here independently of ``selective_scan_ref``. It records
every call. The model, run with ``VIDEOMAMBA_SCAN_BACKEND=mamba_ssm``, must give the reference backend's
logits (no-grad path, long enough that chunked inference would apply) and gradients (training step).
"""
import inspect
import sys
import types

import pytest
import torch
import torch.nn.functional as F

import videomamba
from videomamba.ops import selective_scan as ss
from videomamba.ops import selective_scan_fn

DOC_SIGNATURE = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias", "delta_softplus", "return_last_state"]


def _fake_selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                            return_last_state=False):
    """mamba-ssm's contract, an fp64 loop for the math (``h_t = exp(dt A) h_{t-1} + dt B_t u_t``,
    ``y_t = <C_t, h_t> + D u_t``, gated by silu(z))."""
    args = dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias,
                delta_softplus=delta_softplus, return_last_state=return_last_state)
    CALLS.append(args)
    batch, dim, L = u.shape
    N = A.shape[1]
    assert u.dtype in (torch.float32, torch.float16, torch.bfloat16)
    assert A.dtype == torch.float32 and tuple(A.shape) == (dim, N)
    assert delta.dtype == u.dtype and delta.shape == u.shape
    for t in (B, C):
        assert t.dtype == u.dtype and t.dim() in (3, 4), (t.dtype, t.shape)
        assert t.shape[0] == batch and tuple(t.shape[-2:]) == (N, L) and (t.dim() == 3 or dim % t.shape[1] == 0)
    for t in (D, delta_bias):
        assert t is None or (t.dtype == torch.float32 and tuple(t.shape) == (dim,))
    assert z is None or (z.dtype == u.dtype and z.shape == u.shape)

    f = torch.float64
    dt = delta.to(f) + (0 if delta_bias is None else delta_bias.to(f)[:, None])
    if delta_softplus:
        dt = F.softplus(dt)

    def per_channel(t):   # (batch, N, L) or (batch, G, N, L) -> (batch, dim, N, L)
        t = t.to(f)
        t = t[:, None] if t.dim() == 3 else t
        return t.repeat_interleave(dim // t.shape[1], dim=1)

    Bc, Cc, Af, uf = per_channel(B), per_channel(C), A.to(f), u.to(f)
    h = torch.zeros(batch, dim, N, dtype=f)
    ys = []
    for t in range(L):
        h = torch.exp(dt[:, :, t, None] * Af) * h + (dt[:, :, t] * uf[:, :, t])[..., None] * Bc[..., t]
        ys.append((h * Cc[..., t]).sum(-1))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + D.to(f)[:, None] * uf
    if z is not None:
        y = y * F.silu(z.to(f))
    out = y.to(u.dtype)
    return (out, h.float()) if return_last_state else out


CALLS: list[dict] = []


@pytest.fixture
def fake_mamba_ssm(monkeypatch):
    """The stub package, and ``mamba_ssm`` available for CPU tensors.

    The one patch to the library: ``backend_available('mamba_ssm', ...)`` also requires CUDA tensors (the real
    kernel is CUDA-only), which a CPU test cannot give; the wrapper answers for 'mamba_ssm' with the library's
    own import check (uncached, so it goes through the stub and leaves the real cache alone) and passes every
    other backend to the real function."""
    pkg, ops, iface = (types.ModuleType(n) for n in ("mamba_ssm", "mamba_ssm.ops",
                                                      "mamba_ssm.ops.selective_scan_interface"))
    iface.selective_scan_fn = _fake_selective_scan_fn
    pkg.ops, ops.selective_scan_interface = ops, iface
    pkg.__path__, ops.__path__ = [], []
    for m in (pkg, ops, iface):
        monkeypatch.setitem(sys.modules, m.__name__, m)
    real = ss.backend_available

    def available(name, device_type="cpu"):
        if name == "mamba_ssm":
            return ss._mamba_ssm_importable.__wrapped__()
        return real(name, device_type)

    monkeypatch.setattr(ss, "backend_available", available)
    CALLS.clear()
    yield CALLS
    CALLS.clear()
    ss._mamba_ssm_importable.cache_clear()


def _scan_inputs(batch=2, dim=6, N=4, L=9, groups=None):
    g = torch.Generator().manual_seed(1)
    bc = (batch, N, L) if groups is None else (batch, groups, N, L)
    t = dict(u=torch.randn(batch, dim, L, generator=g), delta=0.5 * torch.rand(batch, dim, L, generator=g),
             A=-torch.rand(dim, N, generator=g) - 0.1, B=torch.randn(*bc, generator=g),
             C=torch.randn(*bc, generator=g), D=torch.randn(dim, generator=g),
             z=torch.randn(batch, dim, L, generator=g), delta_bias=0.3 * torch.rand(dim, generator=g))
    return {k: v.requires_grad_(True) for k, v in t.items()}


def test_stub_matches_the_documented_signature():
    assert list(inspect.signature(_fake_selective_scan_fn).parameters) == DOC_SIGNATURE


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("groups", [None, 2])
def test_call_contract_and_reverse_as_flipped_tensors(fake_mamba_ssm, reverse, groups):
    t = _scan_inputs(groups=groups)
    names = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
    out, last = selective_scan_fn(*(t[k] for k in names), delta_softplus=True, return_last_state=True,
                                  reverse=reverse, backend="mamba_ssm")
    assert len(fake_mamba_ssm) == 1
    call = fake_mamba_ssm[0]
    assert call["delta_softplus"] is True and call["return_last_state"] is True
    flip = (lambda x: x.flip(-1)) if reverse else (lambda x: x)
    for k in ("u", "delta", "B", "C", "z"):         # along L: flipped copies for the reverse direction
        torch.testing.assert_close(call[k], flip(t[k]), rtol=0, atol=0, msg=k)
    for k in ("A", "D", "delta_bias"):              # per channel: as they are
        torch.testing.assert_close(call[k], t[k], rtol=0, atol=0, msg=k)

    ref_out, ref_last = selective_scan_fn(*(t[k] for k in names), delta_softplus=True, return_last_state=True,
                                          reverse=reverse, backend="reference")
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(last, ref_last.float(), rtol=1e-5, atol=1e-5)
    got = torch.autograd.grad(out.square().sum(), [t[k] for k in names])
    want = torch.autograd.grad(ref_out.square().sum(), [t[k] for k in names])
    for k, a, b in zip(names, got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=k)


def test_no_initial_state_and_kernel_dtypes_only(fake_mamba_ssm):
    t = {k: v.detach() for k, v in _scan_inputs().items()}
    with pytest.raises(NotImplementedError, match="initial_state"):
        selective_scan_fn(t["u"], t["delta"], t["A"], t["B"], t["C"], backend="mamba_ssm",
                          initial_state=torch.zeros(2, 6, 4))
    with pytest.raises(ValueError, match="mamba_ssm"):   # fp64: its kernel has no such dtype
        selective_scan_fn(t["u"].double(), t["delta"].double(), t["A"].double(), t["B"].double(),
                          t["C"].double(), backend="mamba_ssm")
    assert not fake_mamba_ssm


def _tiny(**kw):
    torch.manual_seed(0)
    return videomamba.VisionMamba(img_size=16, patch_size=8, depth=2, embed_dim=16, num_classes=3, num_frames=4,
                                  drop_path_rate=0.0, **kw)   # 1 + 4 * 4 = 17 tokens


@pytest.mark.parametrize("memory", ["fast", "low"])
def test_no_grad_forward_with_chunking_on(fake_mamba_ssm, monkeypatch, memory):
    """17 tokens, chunks of 4: the reference backend runs the chunked lean path; mamba_ssm must give the same
    logits without ever being asked to start from a state (each mixer is one chunk over all 17 tokens)."""
    from videomamba.modules.mixer_chunked import chunked_inference_applies, mixer_chunked

    m = _tiny(inference_chunk=4, inference_memory=memory).eval()
    x = torch.randn(2, 3, 4, 16, 16)
    h = torch.randn(2, 17, 16)
    out = {}
    for name in ("reference", "mamba_ssm"):
        monkeypatch.setenv("VIDEOMAMBA_SCAN_BACKEND", name)
        with torch.no_grad():
            assert chunked_inference_applies(m.layers[0].mixer, h) == (name == "reference")
            out[name] = (m(x), m.layers[0].mixer(h),
                         mixer_chunked(m.layers[0].mixer, h, out=torch.empty_like(h), chunk=4, memory=memory))
    for a, b, what in zip(out["mamba_ssm"], out["reference"], ("logits", "mixer", "mixer_chunked")):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=what)
    calls = fake_mamba_ssm
    k = 3 if memory == "low" else 2     # scans per mixer_chunked: "low" scans the backward direction twice
    assert len(calls) == m.depth * k + 2 + k   # model (lean loop), plain mixer, mixer_chunked
    assert all(c["u"].shape[-1] == 17 for c in calls)   # never a chunk: never a state to carry


def test_training_step_gradients(fake_mamba_ssm, monkeypatch):
    """Training with mamba_ssm takes the plain autograd path (no recompute: its kernel's backward does not give
    the output back) and must give the reference backend's loss and gradients."""
    from videomamba.modules.mixer_recompute import recompute_applies

    x = torch.randn(2, 3, 4, 16, 16)
    res = {}
    for name in ("reference", "mamba_ssm"):
        monkeypatch.setenv("VIDEOMAMBA_SCAN_BACKEND", name)
        m = _tiny().train()
        assert recompute_applies(m.layers[0], torch.randn(1, 17, 16)) == (name == "reference")
        loss = m(x).square().sum()
        loss.backward()
        res[name] = (loss.detach(), {n: p.grad.clone() for n, p in m.named_parameters()})
    assert len(fake_mamba_ssm) == 2 * 2   # depth 2, two directions, one training forward
    torch.testing.assert_close(res["mamba_ssm"][0], res["reference"][0], rtol=1e-5, atol=1e-6)
    for n, g in res["reference"][1].items():
        torch.testing.assert_close(res["mamba_ssm"][1][n], g, rtol=1e-4, atol=1e-5, msg=n)
