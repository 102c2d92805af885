"""VisionMamba: keys, shapes, parameter counts, official parity, API, init, checkpointing."""
import math

import pytest
import torch

import videomamba
from videomamba import VisionMamba

from conftest import load_official

# docs/design.md §1.5
PARAMS = {
    "videomamba_tiny": (192, 24, 7_148_008, 7_033_744),
    "videomamba_small": (384, 24, 25_796_584, 25_568_656),
    "videomamba_middle": (576, 32, 74_217_448, 73_875_856),
    "videomamba_base": (768, 24, 97_598_440, None),
}


def official_keys(D, depth, video, num_classes, T=8):
    """The official state_dict layout of docs/design.md §1.6, written out independently."""
    di, R, N = 2 * D, math.ceil(D / 16), 16
    keys = [("cls_token", (1, 1, D)), ("pos_embed", (1, 197, D))]
    if video:
        keys.append(("temporal_pos_embedding", (1, T, D)))
        keys.append(("patch_embed.proj.weight", (D, 3, 1, 16, 16)))
    else:
        keys.append(("patch_embed.proj.weight", (D, 3, 16, 16)))
    keys += [("patch_embed.proj.bias", (D,)), ("head.weight", (num_classes, D)), ("head.bias", (num_classes,))]
    for i in range(depth):
        p = f"layers.{i}.mixer."
        keys += [(p + "A_log", (di, N)), (p + "D", (di,)), (p + "A_b_log", (di, N)), (p + "D_b", (di,)),
                 (p + "in_proj.weight", (2 * di, D))]
        for s in ("", "_b"):
            keys += [(p + f"conv1d{s}.weight", (di, 1, 4)), (p + f"conv1d{s}.bias", (di,)),
                     (p + f"x_proj{s}.weight", (R + 2 * N, di)), (p + f"dt_proj{s}.weight", (di, R)),
                     (p + f"dt_proj{s}.bias", (di,))]
        keys += [(p + "out_proj.weight", (D, di)), (f"layers.{i}.norm.weight", (D,))]
    keys.append(("norm_f.weight", (D,)))
    return keys


@pytest.mark.parametrize("name", list(PARAMS))
@pytest.mark.parametrize("video", [False, True])
def test_keys_shapes_and_param_counts(name, video):
    D, depth, n_img, n_vid = PARAMS[name]
    if video and n_vid is None:
        n_vid = n_img - 600 * D - 600 + 8 * D   # base: 400-class head, plus temporal pos
    with torch.device("meta"):
        m = videomamba.create_model(name, num_frames=8 if video else None, num_classes=400 if video else 1000)
    got = [(k, tuple(v.shape)) for k, v in m.state_dict().items()]
    assert got == official_keys(D, depth, video, 400 if video else 1000)
    assert sum(p.numel() for p in m.parameters()) == (n_vid if video else n_img)
    assert len(list(m.buffers())) == 0


@pytest.mark.parametrize("fixture", ["video_depth2_dim96_f4_64px", "image_depth2_dim96_64px"])
def test_matches_official_logits(fixture):
    fx = load_official(fixture)
    m = VisionMamba(**fx["kwargs"]).eval()
    m.load_state_dict(fx["state_dict"], strict=True)
    with torch.no_grad():
        out = m(fx["input"])
    assert out.shape == fx["output"].shape
    assert (out - fx["output"]).abs().max().item() <= 1e-5


def _small(video=True, **kw):
    return VisionMamba(img_size=32, depth=2, embed_dim=32, num_classes=5,
                       num_frames=4 if video else None, **kw)


def test_forward_features_and_head():
    m = _small().eval()
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        tokens = m.forward_features(x)
        assert tokens.shape == (2, 1 + 4 * 4, 32)
        torch.testing.assert_close(m.forward_head(tokens, pre_logits=True), tokens[:, 0])
        torch.testing.assert_close(m.forward_head(tokens), m(x))
        m.reset_classifier(7, global_pool="avg")
        assert m(x).shape == (2, 7)
        torch.testing.assert_close(m.forward_head(tokens, pre_logits=True), tokens[:, 1:].mean(1))
        m.reset_classifier(0)
        assert m(x).shape == (2, 32)


def test_token_order_is_frame_major_with_cls_first():
    m = _small().eval()
    x = torch.randn(1, 3, 4, 32, 32)
    x2 = x.clone()
    x2[:, :, 2] += 1.0  # change frame 2 only
    with torch.no_grad():
        diff = (m.embed(x) - m.embed(x2)).abs().sum(-1)[0]
    changed = (diff > 0).nonzero().flatten().tolist()
    assert changed == list(range(1 + 2 * 4, 1 + 3 * 4))  # exactly frame 2's 4 patch tokens


def test_video_temporal_pos_and_cls():
    m = _small().eval()
    with torch.no_grad():
        m.temporal_pos_embedding.copy_(torch.arange(4.0).view(1, 4, 1))
        x = torch.randn(1, 3, 4, 32, 32)
        e = m.embed(x)
        m.temporal_pos_embedding.zero_()
        e0 = m.embed(x)
    d = (e - e0)[0, :, 0]
    assert d[0] == 0  # CLS gets no temporal embedding
    torch.testing.assert_close(d[1:], torch.arange(4.0).repeat_interleave(4))


def test_official_init():
    m = videomamba.create_model("videomamba_tiny", num_frames=8)
    assert torch.count_nonzero(m.cls_token) == 0 and torch.count_nonzero(m.temporal_pos_embedding) == 0
    mixer = m.layers[3].mixer
    assert torch.count_nonzero(mixer.dt_proj.bias) == 0 and torch.count_nonzero(mixer.dt_proj_b.bias) == 0
    assert abs(mixer.dt_proj.weight.std().item() - 0.02) < 0.004     # segm init overrode Mamba's dt init
    assert abs(m.pos_embed.std().item() - 0.02) < 0.002
    # kaiming_uniform(a=sqrt 5) bound = 1/sqrt(fan_in), then / sqrt(depth)
    bound = 1 / math.sqrt(mixer.d_inner) / math.sqrt(24)
    assert mixer.out_proj.weight.abs().max() <= bound and mixer.out_proj.weight.abs().max() > 0.9 * bound
    torch.testing.assert_close(mixer.A_log[:, 3], torch.full((384,), math.log(4.0)))
    assert m.no_weight_decay() == {"pos_embed", "cls_token", "temporal_pos_embedding"}
    assert m.get_num_layers() == 24


def test_drop_path_schedule_is_the_official_shift():
    m = VisionMamba(img_size=32, depth=4, embed_dim=32, drop_path_rate=0.3)
    probs = [getattr(layer.drop_path, "drop_prob", 0.0) for layer in m.layers]
    expect = [0.0] + torch.linspace(0, 0.3, 4).tolist()[:3]
    assert probs == pytest.approx(expect)
    assert m.drop_path.drop_prob == pytest.approx(0.3)


def test_gradient_checkpointing_gives_identical_gradients():
    torch.manual_seed(1)
    ref = _small(recompute="none")       # plain autograd; the fused recompute is compared in test_lean.py
    ckpt = _small(use_checkpoint=True, checkpoint_num=2)
    ckpt.load_state_dict(ref.state_dict())
    assert all(layer.use_checkpoint for layer in ckpt.layers)
    x = torch.randn(2, 3, 4, 32, 32)
    for m in (ref, ckpt):
        m(x).logsumexp(-1).sum().backward()
    for (n, p), (_, q) in zip(ref.named_parameters(), ckpt.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0, msg=n)


def test_bad_input_shapes_give_clear_errors():
    m = _small()
    with pytest.raises(ValueError, match="num_frames=4"):
        m(torch.randn(1, 3, 8, 32, 32))
    with pytest.raises(ValueError, match="img_size"):
        m(torch.randn(1, 3, 4, 48, 48))
    with pytest.raises(ValueError, match="expects input"):
        _small(video=False)(torch.randn(1, 3, 4, 32, 32))


def test_tagged_names_set_checkpoint_shapes():
    with torch.device("meta"):
        m = videomamba.create_model("videomamba_small.k400_f16_res224")
    assert m.num_frames == 16 and m.num_classes == 400
    assert m.temporal_pos_embedding.shape == (1, 16, 384)
    with pytest.raises(ValueError, match="unknown pretrained tag"):
        videomamba.create_model("videomamba_small.nope")


def test_bf16_autocast_and_bf16_weights_stay_close_to_fp32():
    fx = load_official("video_depth2_dim96_f4_64px")
    m = VisionMamba(**fx["kwargs"]).eval()
    m.load_state_dict(fx["state_dict"])
    x = fx["input"]
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            amp = m(x)
        m_bf16 = VisionMamba(**fx["kwargs"]).eval()
        m_bf16.load_state_dict(fx["state_dict"])
        pure = m_bf16.to(torch.bfloat16)(x.to(torch.bfloat16))
    ref = fx["output"]
    scale = ref.abs().max()
    for out in (amp, pure):
        assert torch.isfinite(out).all()
        assert (out.float() - ref).abs().max() < 0.05 * scale


def test_timm_route_with_tag_builds_the_checkpoint_model():
    import timm

    with torch.device("meta"):
        m = timm.create_model("videomamba_tiny.k400_f16_res224")
    assert m.is_video and m.num_frames == 16 and m.num_classes == 400


def test_timm_filter_fn_unwraps_official_containers():
    from videomamba.models import checkpoint_filter_fn

    src, dst = _small(), _small()
    sd = checkpoint_filter_fn({"model": src.state_dict(), "epoch": 3}, dst)
    assert set(sd) == set(dst.state_dict())


def test_layernorm_variant_loads_and_runs():
    a = _small(rms_norm=False).eval()
    b = _small(rms_norm=False).eval()
    assert isinstance(a.norm_f, torch.nn.LayerNorm) and "norm_f.bias" in a.state_dict()
    b.load_state_dict(a.state_dict(), strict=True)
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))


def test_non_square_images_and_constructor_options():
    m = VisionMamba(img_size=(32, 48), depth=1, embed_dim=32, num_classes=3).eval()
    assert m.pos_embed.shape == (1, 1 + 2 * 3, 32)
    assert m(torch.randn(1, 3, 32, 48)).shape == (1, 3)
    m = VisionMamba(img_size=32, depth=2, embed_dim=32, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in m.parameters())
    m = VisionMamba(img_size=32, depth=2, embed_dim=32, initializer_cfg={"rescale_prenorm_residual": False})
    # without the rescale, out_proj keeps segm's trunc-normal(0.02) init
    assert abs(m.layers[0].mixer.out_proj.weight.std().item() - 0.02) < 0.005
    assert VisionMamba(img_size=32, depth=1, embed_dim=32).layers[0].drop_path.__class__.__name__ == "Identity"
    assert VisionMamba(img_size=32, depth=2, embed_dim=32).drop_path.drop_prob == pytest.approx(0.1)  # official default


def test_checkpointed_mixers_are_recomputed_in_backward():
    m = _small(use_checkpoint=True, checkpoint_num=1)
    calls = [0, 0]
    for i, layer in enumerate(m.layers):
        layer.mixer.register_forward_pre_hook(lambda mod, inp, i=i: calls.__setitem__(i, calls[i] + 1))
    m(torch.randn(1, 3, 4, 32, 32)).sum().backward()
    assert calls == [2, 1]   # layer 0 ran again in backward, layer 1 did not


def test_contract_official_layout_through_create_model():
    fx = load_official("video_depth2_dim96_f4_64px")
    kw = {k: v for k, v in fx["kwargs"].items() if k not in ("depth", "embed_dim", "patch_size")}
    m = videomamba.create_model("videomamba_tiny", depth=2, embed_dim=96, **kw).eval()
    m.load_state_dict(fx["state_dict"], strict=True)
    with torch.no_grad():
        assert (m(fx["input"]) - fx["output"]).abs().max() <= 1e-5


def test_dt_init_mamba_keeps_mambas_dt_projection_init():
    torch.manual_seed(0)
    official = videomamba.create_model("videomamba_tiny", depth=2, embed_dim=32, num_frames=2, img_size=32)
    torch.manual_seed(0)
    mamba = videomamba.create_model("videomamba_tiny", depth=2, embed_dim=32, num_frames=2, img_size=32,
                                    dt_init="mamba")
    for name, p in official.named_parameters():
        q = dict(mamba.named_parameters())[name]
        if ".dt_proj" in name and name.endswith("bias"):
            assert (p == 0).all()                                         # the official override
            dt = torch.nn.functional.softplus(q)
            assert (dt > 0.9e-3).all() and (dt < 0.11).all()               # Mamba's dt range
        elif ".dt_proj" not in name:
            torch.testing.assert_close(p, q)                              # everything else identical
    with pytest.raises(ValueError, match="dt_init"):
        videomamba.create_model("videomamba_tiny", depth=1, embed_dim=32, dt_init="zero")
