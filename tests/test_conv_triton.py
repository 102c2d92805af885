"""The Triton causal depthwise conv (``videomamba/ops/causal_conv1d_triton.py``) and its dispatch.

Without a GPU the kernels run in Triton's interpreter on CPU tensors (conftest sets TRITON_INTERPRET=1), so
shapes are tiny and block sizes are forced small (``_config``) so that every shape crosses sequence-block
and channel-block boundaries. The oracle is an fp64 loop over taps written here (autograd through it for
the gradients), independent of ``causal_conv1d_ref`` and of the code under test.
"""
import itertools
import os

import pytest
import torch

pytest.importorskip("triton", reason="platform: no triton package for this platform")

from videomamba.ops import causal_conv1d as C  # noqa: E402
from videomamba.ops import causal_conv1d_fn  # noqa: E402
from videomamba.ops import causal_conv1d_triton as T  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SMALL = dict(BLOCK_C=4, BLOCK_L=16, num_warps=1)   # dim 6 -> blocks of 4 + 2; L 37 -> 16 + 16 + 5
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.bfloat16: dict(rtol=1e-2, atol=1e-3),
       torch.float16: dict(rtol=2e-3, atol=1e-4)}


def loop_conv(x, w, b, silu, reverse):
    """fp64, one tap at a time: tap k reads x[t - (K-1-k)] (reverse: x[t + (K-1-k)]), zero outside [0, L)."""
    x, w = x.double(), w.double().reshape(w.shape[0], -1)
    L, K = x.shape[-1], w.shape[1]
    y = torch.zeros(x.shape, dtype=torch.float64, device=x.device)
    if b is not None:
        y = y + b.double()[:, None]
    for k in range(K):
        s = K - 1 - k
        if s >= L:
            continue
        if reverse:
            y[..., :L - s] += w[:, k, None] * x[..., s:]
        else:
            y[..., s:] += w[:, k, None] * x[..., :L - s]
    return y * torch.sigmoid(y) if silu else y


def expected(x, w, b, dy, silu, reverse):
    """fp64 ``(y, dx, dw, dbias)`` from the same (possibly bf16-rounded) inputs."""
    leaves = [t.detach().double().requires_grad_(True) if t is not None else None for t in (x, w, b)]
    y = loop_conv(*leaves, silu, reverse)
    present = [t for t in leaves if t is not None]
    grads = torch.autograd.grad(y, present, dy.double())
    return y.detach(), grads[0], grads[1], (grads[2] if b is not None else None)


def inputs(batch, dim, L, K, dtype, bias, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, dim, L, generator=g).to(dtype).to(DEVICE)
    w = (torch.randn(dim, K, generator=g) * 0.7).to(dtype).to(DEVICE)
    b = torch.randn(dim, generator=g).to(dtype).to(DEVICE) if bias else None
    dy = torch.randn(batch, dim, L, generator=g).to(dtype).to(DEVICE)
    return x, w, b, dy


def check_kernels(batch, dim, L, K, dtype, bias, silu, reverse, config):
    x, w, b, dy = inputs(batch, dim, L, K, dtype, bias, seed=L * 100 + K)
    y = T.conv_fwd(x, w, b, silu, reverse, _config=config)
    dx, dw, db = T.conv_bwd(dy, x, w, b, silu, reverse, _config=config)
    ey, edx, edw, edb = expected(x, w, b, dy, silu, reverse)
    assert y.dtype == dx.dtype == dtype and dw.dtype == w.dtype and y.is_contiguous()
    assert dw.shape == w.shape and (db is None) == (b is None)
    tol = TOL[dtype]
    torch.testing.assert_close(y.double(), ey, **tol, msg="y")
    torch.testing.assert_close(dx.double(), edx, **tol, msg="dx")
    torch.testing.assert_close(dw.double(), edw, **tol, msg="dweight")
    if b is not None:
        assert db.dtype == b.dtype and db.shape == b.shape
        torch.testing.assert_close(db.double(), edb, **tol, msg="dbias")


def test_triton_backend_is_available_here():
    """Never skipped: without a GPU the interpreter must be on and the backend usable on CPU tensors."""
    if DEVICE == "cpu":
        assert os.environ.get("TRITON_INTERPRET") == "1"
    assert C.triton_available(DEVICE)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("silu", [True, False], ids=["silu", "linear"])
@pytest.mark.parametrize("reverse", [False, True], ids=["causal", "reverse"])
def test_forward_and_gradients_across_blocks(reverse, silu, bias, dtype):
    """3 sequence blocks (the last partial), 2 channel blocks (the last partial), K = 4 as in the models."""
    check_kernels(2, 6, 37, 4, dtype, bias, silu, reverse, SMALL)


@pytest.mark.parametrize("K,L", [(4, 1), (4, 3), (3, 2), (2, 17), (1, 9), (8, 19)])
@pytest.mark.parametrize("reverse", [False, True], ids=["causal", "reverse"])
def test_short_sequences_and_other_tap_counts(reverse, K, L):
    """L < K (the halo is longer than the sequence), and K from 1 to 8, with blocks of 8 positions."""
    check_kernels(1, 3, L, K, torch.float32, True, True, reverse, dict(BLOCK_C=2, BLOCK_L=8))


@pytest.mark.parametrize("config,shape", [(dict(BLOCK_C=1, BLOCK_L=2), (1, 3, 13)),
                                          (dict(BLOCK_C=8, BLOCK_L=32), (2, 10, 40)),
                                          (None, (2, 5, 23))], ids=["1x2", "8x32", "default"])
@pytest.mark.parametrize("reverse", [False, True], ids=["causal", "reverse"])
def test_other_block_sizes(reverse, config, shape):
    """Sequence blocks shorter than the halo (BLOCK_L=2 < K-1: a halo spans two blocks), one channel per
    program, larger blocks, and the default config (autotuned on CUDA)."""
    check_kernels(*shape, 4, torch.float32, True, True, reverse, config)


def test_fp16_inputs_with_fp32_weight():
    """Mixed dtypes as under autocast: fp16 activations, fp32 parameters; grads come back in each dtype."""
    x, _, _, dy = inputs(2, 6, 37, 4, torch.float16, False)
    _, w, b, _ = inputs(2, 6, 37, 4, torch.float32, True)
    y = T.conv_fwd(x, w, b, True, True, _config=SMALL)
    dx, dw, db = T.conv_bwd(dy, x, w, b, True, True, _config=SMALL)
    assert (y.dtype, dx.dtype, dw.dtype, db.dtype) == (torch.float16, torch.float16, torch.float32, torch.float32)
    ey, edx, edw, edb = expected(x, w, b, dy, True, True)
    for name, got, exp in (("y", y, ey), ("dx", dx, edx), ("dw", dw, edw), ("db", db, edb)):
        torch.testing.assert_close(got.double(), exp, **TOL[torch.float16], msg=name)


def test_autotuned_path(monkeypatch):
    """The host code's autotune branch (on CUDA), driven here with a fake timer that prefers the last config
    and small spaces; the backward's partial-sum buffers must not depend on the config chosen."""
    ticks = itertools.count()

    def fake_bench(kernel_call, quantiles):
        kernel_call()
        t = 100.0 - next(ticks)
        return [t, t, t]

    spaces = {"fwd": [(2, 8, 1), (4, 16, 1)], "bwd": [(2, 1), (4, 1)]}
    monkeypatch.setattr(T, "_tuned", lambda which: T._autotuner(which, spaces[which], do_bench=fake_bench))
    monkeypatch.setattr(T, "_use_autotune", lambda x, config: config is None)
    monkeypatch.setattr(T, "_bwd_block_l", lambda L: 16)
    for reverse in (False, True):
        check_kernels(1, 5, 21, 4, torch.float32, True, True, reverse, None)


@pytest.mark.parametrize("reverse", [False, True], ids=["causal", "reverse"])
def test_dispatch_eager_autograd(monkeypatch, reverse):
    """``backend="triton"`` (and the env var) in eager mode: the autograd.Function route, a (dim, 1, K)
    weight and a non-contiguous x; gradients reach every leaf."""
    monkeypatch.setattr(T, "_FIXED", SMALL)
    x0, w, b, dy = inputs(2, 6, 37, 4, torch.float32, True)
    xt = x0.transpose(1, 2).contiguous().requires_grad_(True)   # (batch, L, dim) leaf
    x = xt.transpose(1, 2)                                       # (batch, dim, L), not contiguous
    w3 = w.reshape(6, 1, 4).clone().requires_grad_(True)
    bb = b.clone().requires_grad_(True)
    y = causal_conv1d_fn(x, w3, bb, "silu", reverse=reverse, backend="triton")
    assert "EagerTritonConv" in type(y.grad_fn).__name__
    dx, dw, db = torch.autograd.grad(y, (xt, w3, bb), dy)
    ey, edx, edw, edb = expected(x0, w, b, dy, True, reverse)
    torch.testing.assert_close(y.double(), ey, **TOL[torch.float32])
    torch.testing.assert_close(dx.transpose(1, 2).double(), edx, **TOL[torch.float32])
    assert dw.shape == (6, 1, 4)
    torch.testing.assert_close(dw.reshape(6, 4).double(), edw, **TOL[torch.float32])
    torch.testing.assert_close(db.double(), edb, **TOL[torch.float32])
    monkeypatch.setenv(C.ENV_VAR, "triton")
    y2 = causal_conv1d_fn(x, w3, bb, "silu", reverse=reverse)
    assert "EagerTritonConv" in type(y2.grad_fn).__name__
    torch.testing.assert_close(y2, y, rtol=0, atol=0)


@pytest.mark.parametrize("reverse", [False, True], ids=["causal", "reverse"])
def test_custom_op_passes_opcheck(reverse):
    x, w, b, _ = inputs(2, 5, 11, 4, torch.float32, True)
    args = (x.requires_grad_(True), w.requires_grad_(True), b.requires_grad_(True), True, reverse)
    result = torch.library.opcheck(torch.ops.videomamba.causal_conv1d_triton.default, args)
    assert all(v == "SUCCESS" for v in result.values()), result


def test_torch_compile_and_export_use_the_custom_op(monkeypatch):
    monkeypatch.setattr(T, "_FIXED", SMALL)
    x0, w, b, dy = inputs(2, 6, 37, 4, torch.float32, True)

    def f(x, w, b):
        return causal_conv1d_fn(x, w, b, "silu", reverse=True, backend="triton")

    leaves = [t.clone().requires_grad_(True) for t in (x0, w, b)]
    y = torch.compile(f, backend="aot_eager", fullgraph=True)(*leaves)
    grads = torch.autograd.grad(y, leaves, dy)
    ey, *egrads = expected(x0, w, b, dy, True, True)
    torch.testing.assert_close(y.double(), ey, **TOL[torch.float32])
    for got, exp in zip(grads, egrads):
        torch.testing.assert_close(got.double(), exp, **TOL[torch.float32])

    class M(torch.nn.Module):
        def forward(self, x):
            return f(x, w, b)

    ep = torch.export.export(M(), (x0,))
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert any("videomamba.causal_conv1d_triton" in t for t in targets), targets


def test_dispatch_rules(monkeypatch):
    monkeypatch.delenv(C.ENV_VAR, raising=False)
    x, w, b, _ = inputs(1, 3, 9, 4, torch.float32, True)
    xc, wc, bc = x.cpu(), w.cpu(), b.cpu()

    def no_triton(*a, **k):
        raise AssertionError("the Triton kernel ran for CPU tensors without being asked for")

    monkeypatch.setattr(C, "_triton_conv", no_triton)
    for backend in (None, "auto", "cpu", "reference"):   # CPU tensors: as before the Triton backend existed
        causal_conv1d_fn(xc, wc, bc, "silu", backend=backend)
    if DEVICE == "cuda":   # auto picks the Triton kernel for CUDA tensors
        with pytest.raises(AssertionError, match="Triton kernel ran"):
            causal_conv1d_fn(x, w, b, "silu")
    monkeypatch.undo()
    with pytest.raises(RuntimeError, match="Triton kernel needs"):   # fp64 is not a kernel dtype
        causal_conv1d_fn(x.double(), w.double(), None, backend="triton")
    with pytest.raises(RuntimeError, match="Triton kernel needs"):   # K > 8
        causal_conv1d_fn(x, torch.randn(3, 9, device=x.device), None, backend="triton")
    with pytest.raises(ValueError, match="backend must be one of"):
        causal_conv1d_fn(x, w, None, backend="nonsense")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)   # CPU tensors need the interpreter
    with pytest.raises(RuntimeError, match="Triton kernel needs"):
        causal_conv1d_fn(xc, wc, None, backend="triton")
