"""The chunk-parallel Triton scan against an fp64 recurrence written here, run by Triton's interpreter on CPU
(conftest sets TRITON_INTERPRET=1 without a GPU).

Small chunks and channel blocks are forced so that every boundary is crossed: several chunks with a partial
last one (the cross-chunk carry of states and of adjoints), channel blocks that do not divide a group
(masked channels), two B/C groups, backward programs summing B/C gradients over several channel blocks,
both directions, an initial state and the last state's gradient, bf16 inputs.
"""
import pytest
import torch
import torch.nn.functional as F

from videomamba.ops.selective_scan import backend_available

S = pytest.importorskip("videomamba.ops.selective_scan_triton")

GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def recurrence(u, delta, A, B, C, D=None, z=None, delta_bias=None, softplus=True, reverse=False, h0=None):
    """``h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t``, ``y_t = C_t . h_t + D u_t``, gated by silu(z): a plain
    loop over positions (last to first when ``reverse``), in the inputs' dtype (fp64 here)."""
    batch, dim, L = u.shape
    Bg = B.unsqueeze(1) if B.dim() == 3 else B
    Cg = C.unsqueeze(1) if C.dim() == 3 else C
    group = torch.arange(dim) // (dim // Bg.shape[1])
    Bd, Cd = Bg[:, group], Cg[:, group]                       # (batch, dim, N, L): each channel's own B/C
    dt = delta if delta_bias is None else delta + delta_bias[:, None]
    dt = F.softplus(dt) if softplus else dt
    h = torch.zeros(batch, dim, A.shape[1], dtype=u.dtype) if h0 is None else h0
    ys = [None] * L
    for t in (range(L - 1, -1, -1) if reverse else range(L)):
        h = torch.exp(dt[..., t, None] * A) * h + (dt[..., t] * u[..., t])[..., None] * Bd[..., t]
        ys[t] = (h * Cd[..., t]).sum(-1) + (0 if D is None else D * u[..., t])
    y = torch.stack(ys, -1)
    return (y if z is None else y * F.silu(z)), h


def make(batch, dim, L, N, groups, seed=0, extras=True):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    bc = (batch, groups, N, L) if groups else (batch, N, L)
    t = dict(u=r(batch, dim, L), delta=r(batch, dim, L) * 0.5,
             A=-torch.rand(dim, N, generator=g, dtype=torch.float64) * 2 - 0.05, B=r(*bc), C=r(*bc))
    if extras:
        t.update(D=r(dim), z=r(batch, dim, L), delta_bias=r(dim) * 0.3)
    return t, r(batch, dim, N)


def rel_err(actual, expected):
    return ((actual.double() - expected).abs().max() / expected.abs().max().clamp_min(1e-12)).item()


def check(batch, dim, L, N, groups, reverse, dtype, config, extras=True, with_h0=True, softplus=True, seed=0):
    t, h0 = make(batch, dim, L, N, groups, seed, extras)
    if dtype != torch.float64:   # the oracle sees the same rounded inputs as the kernel
        t = {k: (v.to(dtype).double() if k not in ("A", "D", "delta_bias") else v) for k, v in t.items()}
    leaves = {k: v.clone().requires_grad_() for k, v in t.items()}
    h0_leaf = h0.clone().requires_grad_() if with_h0 else None
    y, last = recurrence(**leaves, softplus=softplus, reverse=reverse, h0=h0_leaf)
    g = torch.Generator().manual_seed(seed + 1)
    gy, glast = torch.randn(y.shape, generator=g, dtype=torch.float64), torch.randn(last.shape, generator=g,
                                                                                 dtype=torch.float64)
    wrt = list(leaves.values()) + ([h0_leaf] if with_h0 else [])
    expected = torch.autograd.grad((y * gy).sum() + (last * glast).sum(), wrt)

    kin = {k: (v.to(dtype) if k not in ("A", "D", "delta_bias") else v.float()) for k, v in t.items()}
    h0k = h0.float() if with_h0 else None
    out, lst = S.scan_fwd(**kin, delta_softplus=softplus, reverse=reverse, initial_state=h0k, _config=config)
    grads = S.scan_bwd(gy.to(dtype), **kin, delta_softplus=softplus, dlast=glast.float(), reverse=reverse,
                       initial_state=h0k, return_out=True, _config=config)
    tol = 2e-5 if dtype == torch.float32 else 1.5e-2
    assert out.dtype == dtype and lst.dtype == torch.float32
    assert rel_err(out, y) < tol, ("out", rel_err(out, y))
    assert rel_err(lst, last) < 2e-5 if dtype == torch.float32 else 1e-2, ("last", rel_err(lst, last))
    assert rel_err(grads[-1], y) < tol, ("output emitted by the backward", rel_err(grads[-1], y))
    names = [n for n in GRAD_NAMES if n in t] + (["initial_state"] if with_h0 else [])
    present = [gr for gr in grads[:8] if gr is not None] + ([grads[8]] if with_h0 else [])
    assert len(present) == len(names)
    for name, actual, exp in zip(names, present, expected):
        assert actual.shape == exp.shape, name
        if name in t:
            assert actual.dtype == kin[name].dtype, name
        assert rel_err(actual, exp) < tol, (name, rel_err(actual, exp))


def test_interpreter_is_on():
    assert backend_available("triton", "cpu"), "conftest sets TRITON_INTERPRET=1: the Triton tests must run here"


# dim 12 in 2 groups: 6 channels per group, blocks of 4 (a masked half block per group), backward programs of
# 4 channels (two per group); L 37 in chunks of 8: 5 chunks, the last with 5 steps, carried 2 at a time (3
# groups of links, the last one partial).
CROSSING = dict(T=8, BLOCK_D=4, CHANNELS=4, CARRY_GROUP=2)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_every_output_and_gradient_across_chunks_blocks_and_groups(reverse):
    check(2, 12, 37, 16, 2, reverse, torch.float32, CROSSING)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_bf16_inputs(reverse):
    check(1, 12, 29, 16, 2, reverse, torch.bfloat16, CROSSING, seed=3)


def test_backward_program_sums_several_channel_blocks():
    # 10 channels, one group: blocks of 2, backward programs of 8 channels (4 blocks each, the second partial)
    check(1, 10, 21, 8, 1, False, torch.float32, dict(T=16, BLOCK_D=2, CHANNELS=8), seed=5)


def test_without_optional_inputs():
    # no D / z / bias / softplus / initial state, B and C without a group axis: the other constexpr branches
    check(1, 8, 19, 4, 0, True, torch.float32, dict(T=8, BLOCK_D=4, CHANNELS=8), extras=False, with_h0=False,
          softplus=False, seed=7)


def test_default_launch_configuration():
    # the defaults used on a GPU when the autotuner is off: chunks of CHUNK steps, a partial second one
    check(1, 8, S.CHUNK + 9, 16, 1, False, torch.float32, None, seed=9)


def test_add_and_out_arguments():
    t, h0 = make(1, 8, 21, 16, 1, seed=11)
    add = torch.randn(1, 8, 21, dtype=torch.float64)
    z = t.pop("z")
    y, last = recurrence(**t, h0=h0)
    expected = (y + add) * F.silu(z)
    kin = {k: v.float() for k, v in t.items()}
    out = torch.full((1, 8, 21), float("nan"))
    res, lst = S.scan_fwd(**kin, z=z.float(), delta_softplus=True, initial_state=h0.float(), out=out,
                          add=add.float(), _config=dict(T=8, BLOCK_D=4))
    assert res is out
    assert rel_err(out, expected) < 2e-5 and rel_err(lst, last) < 2e-5


@pytest.mark.parametrize("divide", [False, True])
def test_both_directions_in_one_output_pass(divide):
    # the two directions have their own inputs (as a mixer's two convs / projections give), share the gate;
    # L 37 in chunks of 8: the reverse direction's padded first chunk meets the forward's partial last one
    t_f, _ = make(2, 12, 37, 16, 2, seed=13)
    t_b, _ = make(2, 12, 37, 16, 2, seed=14)
    z = t_f.pop("z")
    t_b.pop("z")
    y_f, _ = recurrence(**t_f)
    y_b, _ = recurrence(**t_b, reverse=True)
    expected = (y_f + y_b) * (0.5 if divide else 1.0) * F.silu(z)
    for dtype, tol in ((torch.float32, 2e-5), (torch.bfloat16, 1.5e-2)):
        cast = lambda t: {k: (v.to(dtype) if k not in ("A", "D", "delta_bias") else v.float())  # noqa: E731
                          for k, v in t.items()}
        out = S.scan_fwd_pair(cast(t_f), cast(t_b), z=z.to(dtype), delta_softplus=True, divide=divide,
                              _config=CROSSING)
        assert out.dtype == dtype
        ref = expected if dtype == torch.float32 else None
        if ref is None:   # the oracle on the same rounded inputs
            r = lambda t: {k: (v.to(dtype).double() if k not in ("A", "D", "delta_bias") else v)  # noqa: E731
                           for k, v in t.items()}
            ref = (recurrence(**r(t_f))[0] + recurrence(**r(t_b), reverse=True)[0]) * (0.5 if divide else 1.0) \
                * F.silu(z.to(dtype).double())
        assert rel_err(out, ref) < tol, rel_err(out, ref)


def test_launcher_reuses_the_tuned_config_during_graph_capture(monkeypatch):
    """On a GPU the autotuner must not benchmark inside a CUDA graph capture: there the config it chose for
    the shape before (or the first of the space, for a shape never seen) is launched directly."""
    import triton

    calls = []

    class Tuned:   # stands in for triton.autotune's object
        best_config = triton.Config({"BLOCK_D": 8}, num_warps=8)

        def __getitem__(self, grid):
            return lambda *a, **k: calls.append(("tuned", k))

    class Kernel:
        arg_names = ["x_ptr", "dim", "L", "N"]

        def __getitem__(self, grid):
            return lambda *a, **k: calls.append(("direct", k))

    launcher = S._Launcher.__new__(S._Launcher)
    launcher.fn, launcher.kind, launcher.key, launcher.tuned, launcher.chosen = \
        Kernel(), "fwd", ["dim", "L", "N"], Tuned(), {}
    x, grid = torch.zeros(2), (lambda meta: (1,))
    monkeypatch.setattr(S, "_capturing", lambda: False)
    launcher(grid, (x, 4, 10, 16), {"T": 64})
    monkeypatch.setattr(S, "_capturing", lambda: True)
    launcher(grid, (x, 4, 10, 16), {"T": 64})
    launcher(grid, (x, 4, 11, 16), {"T": 64})
    assert calls[0][0] == "tuned"
    assert calls[1] == ("direct", {"T": 64, "BLOCK_D": 8, "num_warps": 8})
    first = S._configs("fwd")[0]
    assert calls[2] == ("direct", {"T": 64, "BLOCK_D": first.kwargs["BLOCK_D"], "num_warps": first.num_warps})


def test_backward_programs_fill_the_gpu_and_keep_partial_sums_small():
    cpu = torch.device("cpu")   # (132 SMs assumed off a GPU, an H100's count)
    assert S._backward_channels(64, 384, 1, 50, cpu) == 128        # 3 x 50 x 64 programs: the widest
    assert S._backward_channels(1, 384, 1, 50, cpu) == 32          # 12 x 50 = 600 >= 4 x 132; 64 gives 300
    assert S._backward_channels(1, 384, 1, 7, cpu) == 8            # batch 1, 197 tokens: as many as possible


def test_out_sharing_memory_with_an_input_is_refused():
    t, _ = make(1, 4, 9, 4, 0, seed=15)
    kin = {k: v.float() for k, v in t.items()}
    with pytest.raises(ValueError, match="must not share memory"):
        S.scan_fwd(**kin, delta_softplus=True, out=kin["u"])
