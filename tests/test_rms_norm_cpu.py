"""The block loop's residual add + RMSNorm kernel (kernels/cpu/rms_norm.cpp) against an fp64 computation written
here, for every instruction-set build, and its place in the model (the lean forward against the plain one)."""
import pytest
import torch
import torch.nn as nn

from videomamba.ops import RMSNorm, add_norm_into, rms_norm_cpu

from test_kernels_cpu import kernel_target  # noqa: F401  (the per-ISA fixture)


def expected(stream, add, weight, eps):
    s = stream.double() + (0.0 if add is None else add.double())
    return s, s * torch.rsqrt(s.pow(2).mean(-1, keepdim=True) + eps) * weight.double()


@pytest.mark.parametrize("rows,cols", [(1, 1), (3, 7), (197, 192), (5, 33), (2, 16), (0, 8), (1400, 192)])
@pytest.mark.parametrize("with_add", [False, True], ids=["norm", "add+norm"])
@pytest.mark.parametrize("threads", [1, 2])
def test_add_and_norm_match_fp64(kernel_target, rows, cols, with_add, threads):
    """Column counts below, at and between the vector widths; 1400 x 192 takes the parallel branch."""
    g = torch.Generator().manual_seed(rows * 31 + cols)
    stream = 3 * torch.randn(rows, cols, generator=g)
    add = torch.randn(rows, cols, generator=g) if with_add else None
    weight = torch.randn(cols, generator=g)
    want_stream, want = expected(stream, add, weight, 1e-5)
    out = torch.full_like(stream, float("nan"))
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert rms_norm_cpu.add_rms_norm_(stream, add, weight, 1e-5, out)
    finally:
        torch.set_num_threads(old)
    torch.testing.assert_close(stream.double(), want_stream, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-5)


def test_the_output_may_be_the_addend(kernel_target):
    """The block loop writes a mixer's output where the next norm's result goes."""
    g = torch.Generator().manual_seed(1)
    stream, add, weight = torch.randn(2, 50, 24, generator=g), torch.randn(2, 50, 24, generator=g), torch.rand(24)
    want_stream, want = expected(stream, add, weight, 1e-6)
    assert rms_norm_cpu.add_rms_norm_(stream, add, weight, 1e-6, add)
    torch.testing.assert_close(stream.double(), want_stream, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(add.double(), want, rtol=1e-5, atol=1e-5)


def test_other_inputs_take_the_torch_ops():
    """Not applicable (fp64, non-contiguous, mismatched shapes, a graph to record): False and nothing touched;
    add_norm_into then gives the same result by the torch ops, LayerNorm included."""
    x = torch.randn(4, 8)
    w = torch.ones(8)
    for args in ((x.double(), None, w.double(), x.double().clone()), (x.t(), None, w, torch.zeros(8, 4)),
                 (x, torch.randn(4, 7), w, x.clone()), (x, None, w, torch.zeros(4, 9))):
        before = [a.clone() if a is not None else None for a in args]
        assert not rms_norm_cpu.add_rms_norm_(args[0], args[1], args[2], 1e-5, args[3])
        assert all(b is None or torch.equal(a, b) for a, b in zip(args, before))
    assert not rms_norm_cpu.add_rms_norm_(torch.empty(3, 0), None, torch.empty(0), 1e-5, torch.empty(3, 0))
    leaf = torch.randn(4, 8, requires_grad=True)
    assert not rms_norm_cpu.add_rms_norm_(leaf, None, w, 1e-5, torch.empty(4, 8))
    ln = nn.LayerNorm(8)
    stream, add = torch.randn(3, 8), torch.randn(3, 8)
    summed = stream + add
    with torch.no_grad():
        want = ln(summed)
        got = add_norm_into(ln, stream, add, torch.empty(3, 8))
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(stream, summed)   # (the stream updated in place)
    norm = RMSNorm(8)
    s64 = torch.randn(3, 8, dtype=torch.float64)
    norm.double()
    _, want64 = expected(s64, None, norm.weight, norm.eps)
    with torch.no_grad():
        torch.testing.assert_close(add_norm_into(norm, s64.clone(), None, torch.empty_like(s64)), want64)


def test_the_lean_image_forward_equals_the_plain_one(monkeypatch):
    """The no-gradient block loop (add + norm by the kernel) against the plain
    forward in fp64 (chunking off: every intermediate kept, torch ops, the unfused mixer), on a small image model."""
    from videomamba.factory import create_model

    calls, native = [], rms_norm_cpu.add_rms_norm_

    def spy(*args):   # records whether each call took the kernel
        calls.append(native(*args))
        return calls[-1]

    monkeypatch.setattr(rms_norm_cpu, "add_rms_norm_", spy)
    torch.manual_seed(0)
    m = create_model("videomamba_tiny", img_size=32, patch_size=8, depth=3, num_classes=5).eval()
    for p in m.parameters():   # (trained-looking norms and biases: not the ones and zeros of initialisation)
        p.data.add_(0.05 * torch.randn_like(p))
    x = torch.randn(2, 3, 32, 32)
    chunk = m.inference_chunk
    with torch.no_grad():
        m.set_inference_chunk(0)
        want = m.double()(x.double())
        m.float()
        m.set_inference_chunk(chunk)
    calls.clear()
    with torch.inference_mode():
        got = m(x)
    assert calls == [True] * 3, "each block's norm should take the kernel"
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)
