"""The recomputing training mixer's hand-written backward (``_backward_in_workspace`` in
videomamba/modules/mixer_recompute.py): its gradients against an fp64 oracle -- the same weights in float64,
where every op runs its PyTorch reference and plain autograd differentiates it -- on every ISA build of the
kernels, with both output scalings, batches 1 and 2, frozen parameters and an input that needs no gradient;
that it is the path taken; and that its buffers are allocated once, not step after step."""
import copy

import pytest
import torch

import videomamba.modules.mixer_recompute as mr
from test_kernels_cpu import kernel_target  # noqa: F401  (the per-ISA fixture)
from videomamba.models import VisionMamba


def model(divide: bool, depth: int = 2, seed: int = 0) -> VisionMamba:
    torch.manual_seed(seed)
    m = VisionMamba(img_size=32, depth=depth, embed_dim=32, num_classes=5, num_frames=4, drop_path_rate=0.0,
                    divide_output=divide)
    with torch.no_grad():   # away from the initialisation's symmetries (zero biases, equal A rows)
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def fp64_oracle(m: VisionMamba, x: torch.Tensor, upstream: torch.Tensor, input_grad: bool = True):
    """Gradients of ``(m(x) * upstream).sum()`` by plain autograd on a float64 copy (reference ops)."""
    m64 = copy.deepcopy(m).double()
    m64.set_recompute("none")
    xx = x.double().requires_grad_(input_grad)
    out = m64(xx)
    assert out.dtype == torch.float64
    out.backward(upstream.double())
    return {k: p.grad for k, p in m64.named_parameters() if p.grad is not None}, xx.grad


def manual(m: VisionMamba, x: torch.Tensor, upstream: torch.Tensor, monkeypatch, input_grad: bool = True):
    """Gradients from the recomputing blocks, counting the manual backward's calls."""
    calls = []
    original = mr._backward_in_workspace
    monkeypatch.setattr(mr, "_backward_in_workspace", lambda *a, **k: (calls.append(1), original(*a, **k))[1])
    m.zero_grad(set_to_none=True)
    m.set_recompute("block")
    xx = x.clone().requires_grad_(input_grad)
    m(xx).backward(upstream)
    return {k: p.grad for k, p in m.named_parameters() if p.grad is not None}, xx.grad, len(calls)


def close(actual, expected, what):
    scale = expected.abs().max().item() + 1e-12
    err = (actual.double() - expected).abs().max().item()
    assert err <= 2e-5 * scale + 1e-9, f"{what}: max error {err:.3g} against max |grad| {scale:.3g}"


def plain_and_recomputed(m, x, upstream, seed=None):
    """``(output, parameter gradients, input gradient)`` of ``m`` under ``upstream``, with ``recompute="none"``
    and then ``"block"`` (the same random draws when ``seed`` is given)."""
    results = []
    for mode in ("none", "block"):
        m.zero_grad(set_to_none=True)
        m.set_recompute(mode)
        if seed is not None:
            torch.manual_seed(seed)
        xx = x.clone().requires_grad_()
        out = m(xx)
        out.backward(upstream)
        results.append((out.detach(), {k: p.grad.clone() for k, p in m.named_parameters()}, xx.grad))
    return results


@pytest.mark.parametrize("divide", [False, True], ids=["sum", "halved"])
@pytest.mark.parametrize("batch", [1, 2])
def test_gradients_equal_the_fp64_oracle(kernel_target, divide, batch, monkeypatch):
    m = model(divide)
    x = torch.randn(batch, 3, 4, 32, 32, generator=torch.Generator().manual_seed(2))
    upstream = torch.randn(batch, 5, generator=torch.Generator().manual_seed(3))
    expected, x_expected = fp64_oracle(m, x, upstream)
    got, x_got, calls = manual(m, x, upstream, monkeypatch)
    assert calls == m.depth, "the manual backward did not run for every block"
    assert got.keys() == expected.keys() and len(got) == len(list(m.parameters()))
    for k in expected:
        close(got[k], expected[k], k)
    close(x_got, x_expected, "input gradient")


def test_frozen_parameters_and_an_input_without_gradient(monkeypatch):
    """Frozen tensors get no gradient; the others still equal the oracle's."""
    m = model(False)
    frozen = ("layers.0.mixer.in_proj.weight", "layers.1.mixer.A_b_log", "layers.1.norm.weight", "patch_embed.proj.weight",
              "patch_embed.proj.bias", "cls_token", "pos_embed", "temporal_pos_embedding")
    for name, p in m.named_parameters():
        p.requires_grad_(name not in frozen)
    x = torch.randn(1, 3, 4, 32, 32, generator=torch.Generator().manual_seed(4))
    upstream = torch.randn(1, 5, generator=torch.Generator().manual_seed(5))
    expected, _ = fp64_oracle(m, x, upstream, input_grad=False)
    got, x_got, calls = manual(m, x, upstream, monkeypatch, input_grad=False)
    assert calls == m.depth and x_got is None
    assert set(got) == set(expected) and not set(got) & set(frozen)
    for k in expected:
        close(got[k], expected[k], k)


def test_off_switch_and_uncovered_cases_take_the_autograd_recompute(monkeypatch):
    """VIDEOMAMBA_MANUAL_BACKWARD=0 (the module flag) and fp64 (no CPU kernels) run the autograd recompute."""
    x = torch.randn(1, 3, 4, 32, 32)
    m = model(False)
    monkeypatch.setattr(mr, "MANUAL_BACKWARD", False)
    assert manual(m, x, torch.ones(1, 5), monkeypatch)[2] == 0
    monkeypatch.setattr(mr, "MANUAL_BACKWARD", True)
    assert manual(m.double(), x.double(), torch.ones(1, 5, dtype=torch.float64), monkeypatch)[2] == 0


def test_buffers_are_allocated_once_and_reused(monkeypatch):
    """After the first step the workspace neither grows nor replaces a buffer: the same storage serves every
    block of every later step."""
    m = model(False, depth=3)
    x = torch.randn(2, 3, 4, 32, 32)
    ws = mr.training_workspace()
    ws.clear()
    manual(m, x, torch.ones(2, 5), monkeypatch)
    first = {k: (b.data_ptr(), b.numel()) for k, b in ws._buffers.items()}
    assert {"xhat", "h", "x", "z", "dy", "du", "ddelta", "dxc"} <= set(first)
    for _ in range(2):
        manual(m, x, torch.ones(2, 5), monkeypatch)
    assert {k: (b.data_ptr(), b.numel()) for k, b in ws._buffers.items()} == first


def test_drop_path_in_place_draws_and_scales_as_timm(monkeypatch):
    """With drop path on, the recomputing blocks build the stream in the previous output's memory (drop path and
    add in place): the same draws, outputs and gradients as the plain blocks with timm's DropPath."""
    torch.manual_seed(0)
    m = VisionMamba(img_size=32, depth=4, embed_dim=32, num_classes=5, num_frames=4, drop_path_rate=0.5)
    m.train()
    x = torch.randn(3, 3, 4, 32, 32, generator=torch.Generator().manual_seed(6))
    upstream = torch.randn(3, 5, generator=torch.Generator().manual_seed(7))
    (out_p, g_p, x_p), (out_r, g_r, x_r) = plain_and_recomputed(m, x, upstream, seed=11)
    close(out_r, out_p.double(), "output")
    for k in g_p:
        close(g_r[k], g_p[k].double(), k)
    close(x_r, x_p.double(), "input gradient")


def test_a_hooked_block_output_is_not_overwritten():
    """A forward hook that keeps a block's output sees it as it was: the next block does not build its stream in
    that memory when the block has hooks."""
    m = model(False, depth=3)
    m.set_recompute("block")
    kept = []
    m.layers[0].register_forward_hook(lambda mod, args, out: kept.append((out[0], out[0].detach().clone())))
    m(torch.randn(1, 3, 4, 32, 32)).sum().backward()
    tensor, snapshot = kept[0]
    assert torch.equal(tensor.detach(), snapshot)


def test_scan_backward_writes_into_the_given_buffers_and_allocates_none(monkeypatch):
    """``scan_bwd(buffers=...)`` returns the caller's tensors and allocates nothing of the sequence's size beside
    them (the manual backward's memory depends on it); the values equal those of a call without buffers."""
    from videomamba.ops import selective_scan_cpu

    g = torch.Generator().manual_seed(8)
    b, d, L, N = 2, 8, 37, 4
    u, delta, z, dout = (torch.randn(b, d, L, generator=g) for _ in range(4))
    A, B, C = -torch.rand(d, N, generator=g) - 0.5, torch.randn(b, N, L, generator=g), torch.randn(b, N, L, generator=g)
    D, bias = torch.randn(d, generator=g), torch.rand(d, generator=g)
    args = (dout, u, 0.3 * delta, A, B, C, D, z, bias, True)
    expected = selective_scan_cpu.scan_bwd(*args, return_out=True)
    bufs = {k: torch.full((b, d, L), float("nan")) for k in ("du", "ddelta", "dz", "out")}
    sizes = []
    original = torch.empty_like
    monkeypatch.setattr(torch, "empty_like", lambda t, *a, **k: (sizes.append(tuple(t.shape)), original(t, *a, **k))[1])
    got = selective_scan_cpu.scan_bwd(*args, return_out=True, buffers=bufs)
    assert (b, d, L) not in sizes
    for name, i in (("du", 0), ("ddelta", 1), ("dz", 6), ("out", 8)):
        assert got[i] is bufs[name], name
    for e, t in zip(expected, got):
        if e is not None:
            torch.testing.assert_close(t, e, rtol=0, atol=0)
