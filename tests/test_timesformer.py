"""Tests for the TimeSformer-Ti efficiency baseline (videomamba.bench.timesformer)."""

import pytest
import torch

from videomamba.bench.timesformer import TimeSformerTiny, timesformer_tiny


def _small(**kw):
    cfg = dict(img_size=32, num_frames=2)
    cfg.update(kw)
    return timesformer_tiny(**cfg).eval()


def test_output_shape():
    model = _small()
    x = torch.randn(2, 3, 2, 32, 32)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 400)
    assert torch.isfinite(y).all()


def test_naive_equals_sdpa():
    naive = _small(num_frames=3, attention="naive")
    sdpa = _small(num_frames=3, attention="sdpa")
    sdpa.load_state_dict(naive.state_dict())
    x = torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        a, b = naive(x), sdpa(x)
        fa, fb = naive.forward_features(x), sdpa.forward_features(x)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    torch.testing.assert_close(fa, fb, atol=1e-5, rtol=0)
    # switching mode in place gives the same result too
    naive.set_attention("sdpa")
    with torch.no_grad():
        torch.testing.assert_close(naive(x), a, atol=1e-5, rtol=0)


def test_invalid_attention():
    with pytest.raises(ValueError):
        TimeSformerTiny(img_size=32, num_frames=2, attention="flash")


def test_token_count_and_temporal_first_order():
    T, img = 3, 48  # 3x3 = 9 spatial patches
    model = _small(img_size=img, num_frames=T)
    N = (img // 16) ** 2
    x = torch.randn(1, 3, T, img, img)
    with torch.no_grad():
        tok = model.embed(x)
        assert tok.shape == (1, 1 + N * T, 192)
        for t in range(T):
            x2 = x.clone()
            x2[:, :, t] += 1.0
            changed = (model.embed(x2) - tok).abs().amax(-1)[0] > 1e-6
            expected = torch.zeros(1 + N * T, dtype=torch.bool)
            expected[1 + t::T] = True  # positions 1 + n*T + t, n = 0..N-1
            assert torch.equal(changed, expected), t
        # one patch of one frame -> exactly one token at 1 + n*T + t
        n_row, n_col, t = 1, 2, 1
        x3 = x.clone()
        x3[:, :, t, n_row * 16:(n_row + 1) * 16, n_col * 16:(n_col + 1) * 16] += 1.0
        changed = ((model.embed(x3) - tok).abs().amax(-1)[0] > 1e-6).nonzero().flatten()
        assert changed.tolist() == [1 + (n_row * 3 + n_col) * T + t]


def test_embed_matches_official_rearrange():
    """embed() == the official deit.py forward_features embedding (einops version)."""
    einops = pytest.importorskip("einops")
    T = 2
    model = _small(num_frames=T)
    with torch.no_grad():
        model.temporal_pos_embedding.normal_()
        x = torch.randn(2, 3, T, 32, 32)
        p = model.patch_embed(x)
        B, C, _, H, W = p.shape
        p = p.permute(0, 2, 3, 4, 1).reshape(B * T, H * W, C)
        p = torch.cat((model.cls_token.expand(B * T, -1, -1), p), dim=1) + model.pos_embed
        cls = p[:B, :1, :]
        p = einops.rearrange(p[:, 1:], "(b t) n m -> (b n) t m", b=B, t=T)
        p = p + model.temporal_pos_embedding
        p = einops.rearrange(p, "(b n) t m -> b (n t) m", b=B, t=T)
        ref = torch.cat((cls, p), dim=1)
        torch.testing.assert_close(model.embed(x), ref, atol=1e-6, rtol=0)


def _expected_params(img_size=224, num_frames=8, num_classes=400, patch=16, D=192, depth=12, mlp_ratio=4):
    N = (img_size // patch) ** 2
    H = D * mlp_ratio
    patch_embed = 3 * 1 * patch * patch * D + D        # Conv3d (1,16,16) weight + bias
    cls = D
    pos = (1 + N) * D
    temporal = num_frames * D
    block = (
        2 * D                                            # norm1
        + D * 3 * D + 3 * D                              # qkv (bias)
        + D * D + D                                      # proj
        + 2 * D                                          # norm2
        + D * H + H                                      # fc1
        + H * D + D                                      # fc2
    )
    norm = 2 * D
    head = D * num_classes + num_classes
    return patch_embed + cls + pos + temporal + depth * block + norm + head


def test_param_count_224_8f():
    model = TimeSformerTiny()  # img 224, 8 frames, 400 classes
    n = sum(p.numel() for p in model.parameters())
    assert n == _expected_params() == 5_603_152
    # sanity: image DeiT-Ti (1000 classes, no temporal embedding) is the well-known 5,717,416
    assert _expected_params(num_classes=1000) - 8 * 192 == 5_717_416
    assert model.pos_embed.shape == (1, 197, 192)
    assert model.temporal_pos_embedding.shape == (1, 8, 192)
