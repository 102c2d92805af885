"""The fused CPU mixer kernel (kernels/cpu/fused_mixer.cpp) against an fp64 oracle written here, for every
instruction-set build (the ``kernel_target`` fixture of test_kernels_cpu.py), and against the unfused path.

The oracle is deliberately different from the kernel's formulation: the anti-causal conv and the reverse scan
are computed by flipping the sequence, running the causal versions and flipping back, and the recurrence is a
plain loop over positions in fp64.
"""
import pytest
import torch
import torch.nn.functional as F

from videomamba.ops import fused_mixer_cpu
from videomamba.ops.fused_mixer_cpu import FusedDirection, mixer_fwd

from test_kernels_cpu import kernel_target  # noqa: F401  (the per-ISA fixture)
from test_manual_backward import plain_and_recomputed


def direction(Di, N, R, K, seed, state_batch=None):
    g = torch.Generator().manual_seed(seed)
    return FusedDirection(conv_weight=0.5 * torch.randn(Di, 1, K, generator=g), conv_bias=0.1 * torch.randn(Di, generator=g),
                          x_proj_weight=torch.randn(R + 2 * N, Di, generator=g) / Di ** 0.5,
                          dt_proj_weight=torch.randn(Di, R, generator=g) / R ** 0.5,
                          dt_proj_bias=torch.rand(Di, generator=g) - 2.0,
                          A_log=torch.log(0.5 + 2 * torch.rand(Di, N, generator=g)),
                          D=torch.randn(Di, generator=g),
                          initial_state=None if state_batch is None else torch.randn(state_batch, Di, N, generator=g))


def oracle_direction(x, d: FusedDirection, reverse: bool, initial_state=None):
    """``(y (b, Di, L), last state (b, Di, N))`` of one direction over all of x, fp64."""
    x = x.double()
    if reverse:   # the anti-causal direction = the causal one on the flipped sequence, flipped back
        y, last = oracle_direction(x.flip(-1), d, False, initial_state)
        return y.flip(-1), last
    b, Di, L = x.shape
    K = d.conv_weight.shape[-1]
    w = d.conv_weight.double().reshape(Di, K)
    xp = F.pad(x, (K - 1, 0))
    pre = sum(w[:, k, None] * xp[..., k:k + L] for k in range(K))
    if d.conv_bias is not None:
        pre = pre + d.conv_bias.double()[:, None]
    u = pre * torch.sigmoid(pre)
    N = d.A_log.shape[1]
    R = d.dt_proj_weight.shape[1]
    x_dbl = torch.einsum("jd,bdl->bjl", d.x_proj_weight.double(), u)
    dt = F.softplus(torch.einsum("dr,brl->bdl", d.dt_proj_weight.double(), x_dbl[:, :R]) + d.dt_proj_bias.double()[:, None])
    Bm, Cm = x_dbl[:, R:R + N], x_dbl[:, R + N:]
    A = -torch.exp(d.A_log.double())
    h = torch.zeros(b, Di, N, dtype=torch.float64) if initial_state is None else initial_state.double().clone()
    ys = []
    for t in range(L):
        h = torch.exp(dt[..., t, None] * A) * h + (dt[..., t] * u[..., t])[..., None] * Bm[:, None, :, t]
        ys.append((h * Cm[:, None, :, t]).sum(-1) + d.D.double() * u[..., t])
    return torch.stack(ys, -1), h


def oracle(x, fwd, bwd, z=None, add=None, scale=1.0):
    b, Di, L = x.shape
    y = torch.zeros(b, Di, L, dtype=torch.float64)
    lasts = []
    for d, rev in ((fwd, False), (bwd, True)):
        if d is not None:
            yd, last = oracle_direction(x, d, rev, d.initial_state)
            y, lasts = y + yd, lasts + [last]
        else:
            lasts.append(None)
    if add is not None:
        y = y + add.double()
    if z is not None:
        y = y * F.silu(z.double())
    return y * scale, lasts


def close(actual, expected, what):
    scale = max(1.0, expected.abs().max().item())
    torch.testing.assert_close(actual.double(), expected, rtol=2e-5, atol=2e-5 * scale, msg=what)


@pytest.mark.parametrize("L,sub", [(1, 64), (3, 64), (37, 64), (37, 8), (130, 16), (130, 5), (200, 64), (300, 256),
                                   (150, 512)])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_both_directions_match_the_fp64_oracle(kernel_target, L, sub, threads):
    Di, N, R, K, b = 24, 16, 3, 4, 2
    g = torch.Generator().manual_seed(L)
    x, z = torch.randn(b, Di, L, generator=g), torch.randn(b, Di, L, generator=g)
    fwd, bwd = direction(Di, N, R, K, 1), direction(Di, N, R, K, 2)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out, (lf, lb) = mixer_fwd(x, fwd, bwd, z=z, scale=0.5, sub=sub, return_last_state=True)
    finally:
        torch.set_num_threads(old)
    expected, (ef, eb) = oracle(x, fwd, bwd, z=z, scale=0.5)
    close(out, expected, f"output, L={L} sub={sub} threads={threads}")
    close(lf, ef, "forward direction's last state")
    close(lb, eb, "backward direction's last state (after position 0)")


@pytest.mark.parametrize("threads", [1, 2])
def test_decays_beyond_the_bounded_range_match_the_oracle(kernel_target, threads):
    """Where dt * A passes 125 / log2(e) (large A and large dt: the decay underflows to 0) a tile of the scan takes
    the clamped exp instead of the bounded one; channels and positions on both sides of that line, both
    directions, several tiles (sub-chunks of 256 positions, tiles of 64)."""
    Di, N, R, K, L = 20, 16, 3, 4, 170
    fwd, bwd = direction(Di, N, R, K, 8), direction(Di, N, R, K, 9)
    A_log, bias = fwd.A_log.clone(), fwd.dt_proj_bias.clone()
    A_log[:6] += 4.0        # A from 27 to 136 in channels 0-5
    bias[:3] = 4.0          # dt about 4 in channels 0-2: dt * A from 100 to 550
    A_log[6:9] = torch.linspace(5.0, -0.7, N)   # channels 6-8: A from 148 down to 0.5 across the states,
    bias[6:9] = 1.5                             # dt about 1.7: only the first states pass the line
    fwd = fwd._replace(A_log=A_log, dt_proj_bias=bias)
    bwd = bwd._replace(A_log=A_log.flip(0), dt_proj_bias=bias.flip(0))
    g = torch.Generator().manual_seed(11)
    x, z = torch.randn(1, Di, L, generator=g), torch.randn(1, Di, L, generator=g)
    x[..., 100:120] *= 6.0  # dt spikes in a few positions of the other channels
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = mixer_fwd(x, fwd, bwd, z=z, sub=256)
    finally:
        torch.set_num_threads(old)
    expected = oracle(x, fwd, bwd, z=z)[0]
    assert torch.isfinite(out).all()
    close(out, expected, "output with decays beyond the bounded range")


@pytest.mark.parametrize("N", [1, 5, 16, 17])
@pytest.mark.parametrize("batch,threads", [(1, 1), (1, 2), (1, 4), (3, 2)])
def test_state_sizes_batches_and_teams(kernel_target, N, batch, threads):
    """State sizes around the vector width (padded lanes stay 0) and every team layout: whole items per
    thread, and teams of 2-4 threads splitting one sequence's channels and x_proj rows."""
    Di, R, K, L = 20, 2, 4, 75
    g = torch.Generator().manual_seed(N)
    x = torch.randn(batch, Di, L, generator=g)
    fwd, bwd = direction(Di, N, R, K, 3), direction(Di, N, R, K, 4)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = mixer_fwd(x, fwd, bwd, sub=16)
        single = mixer_fwd(x, fwd, None, sub=16)
    finally:
        torch.set_num_threads(old)
    close(out, oracle(x, fwd, bwd)[0], "both directions")
    close(single, oracle(x, fwd, None)[0], "forward direction alone")


@pytest.mark.parametrize("threads", [1, 2])
def test_scratch_kept_between_calls_is_right_for_every_layout(kernel_target, threads):
    """The kernel keeps its buffers from one call to the next and zeroes them only when their layout changes.
    Calls in a row whose layouts differ (more states then fewer in the same padded width, more channels then
    fewer, another sub-chunk) must each equal the oracle: values a wider call left where a narrower one relies
    on zeros (states past N, channels past Di) would leak into its output."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for Di, N, L, sub in ((20, 16, 40, 32), (20, 9, 40, 32), (20, 16, 40, 32), (29, 7, 33, 16), (17, 7, 33, 16),
                              (17, 3, 70, 64), (17, 3, 70, 64)):
            g = torch.Generator().manual_seed(Di * N + L)
            x, z = torch.randn(1, Di, L, generator=g), torch.randn(1, Di, L, generator=g)
            fwd, bwd = direction(Di, N, 2, 4, N), direction(Di, N, 2, 4, N + 1)
            close(mixer_fwd(x, fwd, bwd, z=z, sub=sub), oracle(x, fwd, bwd, z=z)[0], f"Di={Di} N={N} L={L} sub={sub}")
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("threads", [1, 2])
def test_windows_with_halos_and_carried_states_equal_the_whole_sequence(kernel_target, threads):
    """What a chunked caller does: the backward direction over windows from last to first, then the forward one
    from first to last with the backward output added and the gate, each window given its conv halo and the
    state the previous window left."""
    Di, N, R, K, b, L, size = 16, 16, 2, 4, 2, 90, 32
    g = torch.Generator().manual_seed(7)
    x, z = torch.randn(b, Di, L, generator=g), torch.randn(b, Di, L, generator=g)
    fwd, bwd = direction(Di, N, R, K, 5, state_batch=b), direction(Di, N, R, K, 6, state_batch=b)
    expected, (ef, eb) = oracle(x, fwd, bwd, z=z)
    halo = K - 1
    windows = [(s, min(s + size, L)) for s in range(0, L, size)]
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        y_b, state = torch.empty(b, Di, L), bwd.initial_state
        for s, e in reversed(windows):
            e1 = min(e + halo, L)
            y, (_, state) = mixer_fwd(x[..., s:e1], None, bwd._replace(initial_state=state), lo=0, n=e - s, sub=8,
                                      return_last_state=True)
            y_b[..., s:e] = y
        close(state, eb, "backward state after the first window")
        out, state = torch.empty(b, Di, L), fwd.initial_state
        for s, e in windows:
            s0 = max(s - halo, 0)
            y, (state, _) = mixer_fwd(x[..., s0:e], fwd._replace(initial_state=state), None, lo=s - s0, n=e - s,
                                      z=z[..., s:e].contiguous(), add=y_b[..., s:e].contiguous(), sub=8,
                                      return_last_state=True)
            out[..., s:e] = y
    finally:
        torch.set_num_threads(old)
    close(out, expected, "windowed output")
    close(state, ef, "forward state after the last window")


def test_bad_arguments_say_what_is_wrong():
    Di, N, R, K = 8, 4, 2, 4
    x = torch.randn(1, Di, 10)
    fwd = direction(Di, N, R, K, 1)
    with pytest.raises(ValueError, match="window"):
        mixer_fwd(x, fwd, None, lo=5, n=6)
    with pytest.raises(ValueError, match="z must have shape"):
        mixer_fwd(x, fwd, None, z=torch.randn(1, Di, 9))
    with pytest.raises(ValueError, match="at least one direction"):
        mixer_fwd(x, None, None)
    assert fused_mixer_cpu.available()


# ---------------------------------------------------------------------------------------------- in the model
def _mixer(divide: bool, d_model=32, seed=0):
    from videomamba.modules.bimamba import BiMamba

    torch.manual_seed(seed)
    m = BiMamba(d_model, divide_output=divide)
    with torch.no_grad():   # away from the init's symmetries (equal A rows, D = 1), so a swapped tensor shows
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


@pytest.mark.parametrize("divide", [False, True], ids=["sum", "divide"])
@pytest.mark.parametrize("L", [2, 50, 300])
def test_mixer_without_gradients_takes_the_fused_kernel_and_equals_the_unfused_path(divide, L, monkeypatch):
    from videomamba.modules import mixer_math

    m = _mixer(divide)
    h = torch.randn(2, L, 32)
    calls = []
    real = fused_mixer_cpu.mixer_fwd
    monkeypatch.setattr(fused_mixer_cpu, "mixer_fwd", lambda *a, **k: calls.append(1) or real(*a, **k))
    reference = m(h)                          # gradients recorded: the unfused composition
    assert not calls
    with torch.no_grad():
        assert mixer_math.fused_applies(m.project_in(h)[0], m.direction_params(False))
        out = m(h)
    assert calls, "the no-grad forward did not use the fused kernel"
    torch.testing.assert_close(out, reference.detach(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("memory", ["fast", "low"])
@pytest.mark.parametrize("chunk", [7, 64, 100])
def test_chunked_inference_with_the_fused_kernel_equals_the_unfused_path(memory, chunk):
    from videomamba.modules.mixer_chunked import mixer_chunked

    m = _mixer(False)
    h = torch.randn(2, 230, 32)
    reference = m(h).detach()
    with torch.no_grad():
        out = torch.empty_like(h)
        mixer_chunked(m, h, out=out, chunk=chunk, memory=memory)
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)


def test_the_switch_turns_the_fused_kernel_off(monkeypatch):
    from videomamba.modules import mixer_math

    m = _mixer(False)
    x = torch.randn(1, m.d_inner, 5)
    with torch.no_grad():
        assert mixer_math.fused_applies(x, m.direction_params(False))
        monkeypatch.setattr(mixer_math, "FUSED_ENABLED", False)
        assert not mixer_math.fused_applies(x, m.direction_params(False))
        assert not mixer_math.fused_applies(x.double(), m.direction_params(False))
    assert not mixer_math.fused_applies(x, m.direction_params(False))   # gradients on


def test_parameters_changed_through_data_are_seen():
    """DeepSpeed writes updated weights through ``.data``, which leaves the version counter alone: the fused path
    must read every parameter afresh at each call (an earlier cache of -exp(A_log) went stale this way)."""
    m = _mixer(False)
    h = torch.randn(1, 40, 32)
    with torch.no_grad():
        before = m(h)
        m.A_log.data.add_(0.5)
        m.A_b_log.data.mul_(0.5)
        m.conv1d.weight.data.mul_(-1)
        after = m(h)
    assert not torch.allclose(after, before)
    torch.testing.assert_close(after, m(h).detach(), rtol=1e-5, atol=1e-5)   # the unfused path, gradients on


def _small_model(**kwargs):
    from videomamba.models import VisionMamba

    torch.manual_seed(0)
    m = VisionMamba(img_size=32, depth=2, embed_dim=32, num_classes=5, num_frames=2, drop_path_rate=0.0,
                    **kwargs).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def _fp64_reference(m, x):
    """The model's logits computed independently of the fused kernel and of m's packed parameters: an fp64 copy
    (the copy packs nothing: fp64 takes the reference scan)."""
    import copy

    with torch.no_grad():
        return copy.deepcopy(m).double()(x.double())


def test_the_packed_parameters_follow_replaced_and_moved_parameters(monkeypatch):
    """The whole-sequence path packs a mixer's parameters once (mixer_chunked._fused_pair): a parameter replaced
    by a new object, storage moved through ``.data``, and an in-place update must all reach the next call, which
    equals an fp64 copy's logits each time; a copy of the model packs anew."""
    import copy

    m = _small_model()
    x = torch.randn(1, 3, 2, 32, 32)
    calls = []
    real = fused_mixer_cpu.mixer_fwd_packed
    monkeypatch.setattr(fused_mixer_cpu, "mixer_fwd_packed", lambda *a, **k: calls.append(1) or real(*a, **k))

    def check(what):
        with torch.no_grad():
            fast = m(x)
        torch.testing.assert_close(fast.double(), _fp64_reference(m, x), rtol=1e-4, atol=1e-4, msg=what)
        return fast

    first = check("first call")
    assert calls, "the no-grad forward did not take the packed fused kernel"
    mixer = m.layers[0].mixer
    mixer.A_log = torch.nn.Parameter(mixer.A_log.detach() + 0.5)            # a new parameter object
    second = check("after replacing A_log")
    assert not torch.allclose(second, first)
    mixer.x_proj_b.weight.data = mixer.x_proj_b.weight.data * -1.0          # new storage through .data
    third = check("after moving x_proj_b's storage")
    assert not torch.allclose(third, second)
    m.layers[1].mixer.dt_proj.bias.data.add_(1.0)                            # in place
    assert not torch.allclose(check("after an in-place update"), third)
    clone = copy.deepcopy(m)
    with torch.no_grad():
        torch.testing.assert_close(clone(x), m(x))


@pytest.mark.parametrize("switch", ["scan backend variable", "fused-kernel switch"])
def test_the_packed_path_follows_the_switches(switch, monkeypatch):
    """``VIDEOMAMBA_SCAN_BACKEND=reference``, or the fused kernel turned off (``VIDEOMAMBA_FUSED_MIXER=0``, read
    at import as ``mixer_math.FUSED_ENABLED``), set between calls: the next call does not take the packed kernel;
    set back, it does again, with the same logits."""
    from videomamba.modules import mixer_math

    m = _small_model()
    x = torch.randn(1, 3, 2, 32, 32)
    with torch.no_grad():
        m(x)
        calls = []
        real = fused_mixer_cpu.mixer_fwd_packed
        monkeypatch.setattr(fused_mixer_cpu, "mixer_fwd_packed", lambda *a, **k: calls.append(1) or real(*a, **k))
        if switch == "scan backend variable":
            monkeypatch.setenv("VIDEOMAMBA_SCAN_BACKEND", "reference")
        else:
            monkeypatch.setattr(mixer_math, "FUSED_ENABLED", False)
        out = m(x)
        assert not calls
        monkeypatch.undo()
        monkeypatch.setattr(fused_mixer_cpu, "mixer_fwd_packed", lambda *a, **k: calls.append(1) or real(*a, **k))
        torch.testing.assert_close(m(x), out, rtol=1e-5, atol=1e-5)
        assert calls


def test_the_packed_parameters_follow_the_kernel_build(monkeypatch):
    """The state padding of a packed pair follows the vector width of the build it was packed for (3 states: 4
    lanes on x86-64-v2, 8 on x86-64-v3): switching ``VIDEOMAMBA_CPU_ARCH`` between calls packs again, and both
    builds give an fp64 copy's logits."""
    from test_kernels_cpu import TARGETS
    from videomamba.ops._build import ARCH_ENV

    archs = [a for a in ("x86-64-v2", "x86-64-v3") if a in {t for t, _ in TARGETS}]   # narrow first
    if len(archs) < 2:
        pytest.skip("needs an x86-64 CPU with AVX2 (two builds of different widths)")
    m = _small_model(ssm_cfg={"d_state": 3})
    x = torch.randn(1, 3, 2, 32, 32)
    reference = _fp64_reference(m, x)
    for arch in archs:
        monkeypatch.setenv(ARCH_ENV, arch)
        with torch.no_grad():
            torch.testing.assert_close(m(x).double(), reference, rtol=1e-4, atol=1e-4, msg=arch)


def test_recomputing_training_with_the_fused_forward_matches_plain_autograd(kernel_target):
    """Training with ``recompute="block"`` runs the fused kernel in its forward (no gradients inside the autograd
    function) and the unfused kernels' backward: outputs and gradients, under a random upstream gradient, equal
    plain autograd's on every ISA build."""
    from videomamba.models import VisionMamba

    torch.manual_seed(0)
    m = VisionMamba(img_size=32, depth=2, embed_dim=32, num_classes=5, num_frames=4, drop_path_rate=0.0)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(2, 3, 4, 32, 32)
    upstream = torch.randn(2, 5, generator=torch.Generator().manual_seed(1))
    (out_p, g_p, x_p), (out_r, g_r, x_r) = plain_and_recomputed(m, x, upstream)
    close(out_r, out_p.double(), "forward")
    for k in g_p:
        close(g_r[k], g_p[k].double(), k)
    close(x_r, x_p.double(), "input gradient")


def test_the_phase_profiler_still_fits_the_kernel():
    """scripts/profile_fused_mixer.py instruments a copy of the kernel at fixed anchors; a kernel edit that
    moves one must update the profiler, not leave it broken until someone needs the breakdown."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "scripts" / "profile_fused_mixer.py"
    spec = importlib.util.spec_from_file_location("profile_fused_mixer", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    text = mod.instrumented_source()
    assert text.count("TIC(") == len(mod.PHASES) + 1 and text.count("TOC(") == len(mod.PHASES) + 1
    assert "vm_profile_ticks" in text
