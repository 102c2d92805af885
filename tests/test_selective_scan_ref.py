"""The reference scan against a direct per-step recurrence (fp64), and its gradients."""
import pytest
import torch
import torch.nn.functional as F

from videomamba.ops import linear_recurrence, selective_scan_fn, selective_scan_ref


def stepwise_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, reverse=False):
    """The textbook recurrence, one time step and one state at a time (the oracle's oracle).

    ``reverse``: the steps visit positions L-1, ..., 0 (the last state is the one after position 0)."""
    batch, dim, L = u.shape
    N = A.shape[1]
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = F.softplus(delta)

    def at(BC, b, d, t):  # B/C value for (batch b, channel d, time t) -> (N,)
        if BC.dim() == 2:
            return BC[d]
        if BC.dim() == 3:
            return BC[b, :, t]
        G = BC.shape[1]
        return BC[b, d // (dim // G), :, t]

    out = torch.empty(batch, dim, L, dtype=u.dtype)
    last = torch.empty(batch, dim, N, dtype=u.dtype)
    for b in range(batch):
        for d in range(dim):
            h = torch.zeros(N, dtype=u.dtype)
            for t in (reversed(range(L)) if reverse else range(L)):
                h = torch.exp(delta[b, d, t] * A[d]) * h + delta[b, d, t] * at(B, b, d, t) * u[b, d, t]
                y = (at(C, b, d, t) * h).sum()
                if D is not None:
                    y = y + D[d] * u[b, d, t]
                if z is not None:
                    y = y * z[b, d, t] * torch.sigmoid(z[b, d, t])
                out[b, d, t] = y
            last[b, d] = h
    return out, last


def make_inputs(batch=2, dim=4, L=7, N=8, groups=None, const_bc=False, dtype=torch.float64,
                requires_grad=False):
    g = torch.Generator().manual_seed(L * 31 + (groups or 0))
    r = lambda *s: torch.rand(*s, generator=g, dtype=dtype)  # noqa: E731
    n = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    if const_bc:
        bc_shape = (dim, N)
    elif groups is None:
        bc_shape = (batch, N, L)
    else:
        bc_shape = (batch, groups, N, L)
    t = dict(u=n(batch, dim, L), delta=0.5 * r(batch, dim, L), A=-0.5 * r(dim, N), B=n(*bc_shape),
             C=n(*bc_shape), D=n(dim), z=n(batch, dim, L), delta_bias=0.5 * r(dim))
    if requires_grad:
        for v in t.values():
            v.requires_grad_(True)
    return t


@pytest.mark.parametrize("L", [1, 2, 7, 33])
@pytest.mark.parametrize("groups", [None, 1, 2])
@pytest.mark.parametrize("with_extras", [True, False])
@pytest.mark.parametrize("reverse", [False, True])
def test_reference_matches_stepwise(L, groups, with_extras, reverse):
    t = make_inputs(L=L, groups=groups)
    kw = dict(D=t["D"], z=t["z"], delta_bias=t["delta_bias"]) if with_extras else {}
    out, last = selective_scan_ref(t["u"], t["delta"], t["A"], t["B"], t["C"], delta_softplus=with_extras,
                                   return_last_state=True, reverse=reverse, **kw)
    exp_out, exp_last = stepwise_scan(t["u"], t["delta"], t["A"], t["B"], t["C"], delta_softplus=with_extras,
                                      reverse=reverse, **kw)
    torch.testing.assert_close(out, exp_out, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(last, exp_last, rtol=1e-10, atol=1e-10)


def test_reference_constant_bc_matches_stepwise():
    t = make_inputs(L=9, const_bc=True)
    out = selective_scan_ref(t["u"], t["delta"], t["A"], t["B"], t["C"], t["D"], t["z"])
    exp, _ = stepwise_scan(t["u"], t["delta"], t["A"], t["B"], t["C"], t["D"], t["z"])
    torch.testing.assert_close(out, exp, rtol=1e-10, atol=1e-10)


def test_each_option_changes_the_output():
    """Guards against an option being silently ignored."""
    t = make_inputs(L=5)
    base = selective_scan_ref(t["u"], t["delta"], t["A"], t["B"], t["C"])
    for kw in (dict(D=t["D"]), dict(z=t["z"]), dict(delta_bias=t["delta_bias"]), dict(delta_softplus=True)):
        assert not torch.allclose(base, selective_scan_ref(t["u"], t["delta"], t["A"], t["B"], t["C"], **kw)), kw


@pytest.mark.parametrize("groups", [None, 2])
def test_reference_gradcheck(groups):
    t = make_inputs(batch=1, dim=4, L=5, N=3, groups=groups, requires_grad=True)

    def f(u, delta, A, B, C, D, z, delta_bias):
        out, last = selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus=True,
                                       return_last_state=True)
        return out, last

    assert torch.autograd.gradcheck(f, tuple(t.values()), eps=1e-6, atol=1e-6)


def test_linear_recurrence_gradcheck_and_values():
    a = torch.rand(6, 2, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, 2, 3, dtype=torch.float64, requires_grad=True)
    h = linear_recurrence(a, b)
    expect, prev = [], torch.zeros(2, 3, dtype=torch.float64)
    for t in range(6):
        prev = a[t] * prev + b[t]
        expect.append(prev)
    torch.testing.assert_close(h, torch.stack(expect))
    assert torch.autograd.gradcheck(linear_recurrence, (a, b))


def test_fp32_state_math_for_low_precision_inputs():
    t = make_inputs(L=16, dtype=torch.float32)
    ref = selective_scan_ref(**{k: v for k, v in t.items()}, delta_softplus=True)
    half = {k: (v.bfloat16() if k in ("u", "delta", "z", "B", "C") else v) for k, v in t.items()}
    out = selective_scan_ref(**half, delta_softplus=True)
    assert out.dtype == torch.bfloat16
    exp = selective_scan_ref(**{k: v.float() for k, v in half.items()}, delta_softplus=True)
    # Same bf16-rounded inputs, fp32 math inside: only the output rounding differs.
    torch.testing.assert_close(out.float(), exp, rtol=1e-2, atol=1e-2)
    assert ref.dtype == torch.float32


def test_backward_is_linear_in_length_memory():
    """The backward graph holds O(L) saved tensors: doubling L doubles (not squares) the work.

    We count autograd nodes instead of timing: a per-step Python loop under autograd would add
    nodes proportional to L."""
    def count_nodes(L):
        t = make_inputs(batch=1, dim=2, L=L, N=2, dtype=torch.float32, requires_grad=True)
        out = selective_scan_ref(t["u"], t["delta"], t["A"], t["B"], t["C"], t["D"], t["z"], t["delta_bias"], True)
        seen, stack = set(), [out.grad_fn]
        while stack:
            n = stack.pop()
            if n is None or n in seen:
                continue
            seen.add(n)
            stack.extend(f for f, _ in n.next_functions)
        return len(seen)
    assert count_nodes(8) == count_nodes(512)


def test_selective_scan_fn_validates_shapes():
    t = make_inputs(L=5)
    with pytest.raises(ValueError, match="A must be"):
        selective_scan_fn(t["u"], t["delta"], t["A"][:2], t["B"], t["C"])
    with pytest.raises(ValueError, match="B must be"):
        selective_scan_fn(t["u"], t["delta"], t["A"], t["B"][:, :, :3], t["C"])
    with pytest.raises(ValueError, match="G \\| dim"):
        selective_scan_fn(t["u"], t["delta"], t["A"], t["B"].unsqueeze(1).repeat(1, 3, 1, 1), t["C"])
    out = selective_scan_fn(t["u"], t["delta"], t["A"], t["B"], t["C"])
    torch.testing.assert_close(out, selective_scan_ref(t["u"], t["delta"], t["A"], t["B"], t["C"]))
