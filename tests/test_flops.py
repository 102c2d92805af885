"""videomamba.flops: paper-mode MODEL_ZOO numbers, scaling, full-mode categories, a hand count."""
import math

import pytest
import torch

import videomamba
from videomamba import VisionMamba
from videomamba.flops import FlopReport, flops

# (MODEL_ZOO table "FLOPs" in G, the projection-only count in G that reproduces it, the exact count:
# L*D*2Di + L*Di*D per layer + patch embed + head, L = 197).
ZOO_224 = {
    "videomamba_tiny": (1.1, 1.07, 1_074_851_328),
    "videomamba_small": (4.3, 4.24, 4_241_218_560),
    "videomamba_middle": (12.7, 12.64, 12_636_375_552),
    "videomamba_base": (16.9, 16.85, 16_848_500_736),
}


def meta_model(name, **kwargs):
    with torch.device("meta"):
        return videomamba.create_model(name, **kwargs)


def paper_count(D, depth, tokens, frames=1, classes=1000, batch=1, patch=16):
    """Projection-only MACs written out from the architecture."""
    di = 2 * D
    L = 1 + frames * tokens
    layer = L * D * 2 * di + L * di * D
    return batch * (depth * layer + frames * tokens * D * 3 * patch * patch + D * classes)


@pytest.mark.parametrize("name", list(ZOO_224))
def test_paper_mode_reproduces_model_zoo_at_224(name):
    table, expected, exact = ZOO_224[name]
    D, depth = {"videomamba_tiny": (192, 24), "videomamba_small": (384, 24),
                "videomamba_middle": (576, 32), "videomamba_base": (768, 24)}[name]
    r = flops(meta_model(name), (1, 3, 224, 224), mode="paper")
    assert isinstance(r, FlopReport) and r.mode == "paper" and r.tokens == 197
    assert r.total == exact == paper_count(D, depth, 196)
    assert set(r.by_category) == {"patch_embed", "in_proj", "out_proj", "head"}
    assert sum(r.by_category.values()) == r.total
    assert abs(r.gmacs - expected) / expected < 0.005
    assert abs(r.gmacs - table) < 0.065           # the table's one-decimal figure


@pytest.mark.parametrize("size,expected", [(448, 4.28), (576, 7.08)])
def test_paper_mode_tiny_high_resolution(size, expected):
    r = flops(meta_model("videomamba_tiny", img_size=size), (1, 3, size, size), mode="paper")
    assert r.total == paper_count(192, 24, (size // 16) ** 2)
    assert abs(r.gmacs - expected) / expected < 0.005


def test_video_counts_tiny_8x224():
    m = meta_model("videomamba_tiny", num_frames=8)
    paper = flops(m, (1, 3, 8, 224, 224), mode="paper")
    full = flops(m, (1, 3, 8, 224, 224))
    assert paper.tokens == full.tokens == 1 + 8 * 196
    assert paper.total == paper_count(192, 24, 196, frames=8)
    assert abs(paper.gmacs - 8.56) < 0.01
    assert full.total > paper.total
    for cat in ("patch_embed", "in_proj", "out_proj", "head"):
        assert full[cat] == paper[cat]
    L, di = 1569, 384
    assert full["scan"] == 9 * L * di * 16 * 2 * 24


@pytest.mark.parametrize("mode", ["paper", "full"])
def test_linear_in_batch_size(mode):
    m = meta_model("videomamba_tiny", num_frames=4)
    one = flops(m, (1, 3, 4, 224, 224), mode=mode)
    three = flops(m, (3, 3, 4, 224, 224), mode=mode)
    assert three.total == 3 * one.total
    assert three.by_category == {k: 3 * v for k, v in one.by_category.items()}


def test_full_mode_categories_small_model():
    D, depth, N, B = 64, 3, 16, 2
    with torch.device("meta"):
        m = VisionMamba(img_size=64, patch_size=16, depth=depth, embed_dim=D, num_classes=7, num_frames=2)
    x = torch.empty(B, 3, 2, 64, 64, device="meta")
    full, paper = flops(m, x), flops(m, x, mode="paper")
    L, di, R = 1 + 2 * 16, 2 * D, math.ceil(D / 16)
    assert full.tokens == L
    assert full.total > paper.total
    assert full["scan"] == 9 * B * L * di * N * 2 * depth
    assert full["conv1d"] == B * di * 4 * L * 2 * depth
    assert full["x_proj"] == B * L * di * (R + 2 * N) * 2 * depth
    assert full["dt_proj"] == B * L * R * di * 2 * depth
    assert full["in_proj"] == paper["in_proj"] == B * L * D * 2 * di * depth
    assert full["out_proj"] == paper["out_proj"] == B * L * di * D * depth
    assert full["norm"] == 4 * B * L * D * (depth + 1)
    assert full.total == sum(full.by_category.values())
    assert "GMACs" in str(full) and "scan" in str(full) and "total" in str(full)


def test_hand_computed_toy_total():
    torch.manual_seed(0)
    m = VisionMamba(img_size=32, depth=1, embed_dim=32, num_classes=5)
    x = torch.randn(1, 3, 32, 32)
    # L = 1 + 4 tokens, D = 32, Di = 64, dt_rank R = 2, N = 16, conv width 4, two directions.
    expected = {
        "patch_embed": 4 * 32 * 3 * 16 * 16,        # 98,304
        "in_proj": 5 * 32 * 128,                    # 20,480
        "conv1d": 2 * 64 * 4 * 5,                   # 2,560
        "x_proj": 2 * 5 * 64 * (2 + 32),            # 21,760
        "dt_proj": 2 * 5 * 2 * 64,                  # 1,280
        "scan": 2 * 9 * 5 * 64 * 16,                # 92,160
        "out_proj": 5 * 64 * 32,                    # 10,240
        "norm": 4 * 5 * 32 * 2,                     # block norm + norm_f: 1,280
        # D*u skip and z gating per direction, direction sum, final residual add
        "elementwise": 2 * (2 * 5 * 64) + 5 * 64 + 5 * 32,   # 1,760
        "head": 32 * 5,                             # 160
    }
    r = flops(m, x)
    assert r.by_category == expected
    assert r.total == 249_984 == sum(expected.values())
    # The real forward (real scan and conv) gives the same counts as the shape-only one.
    assert flops(m, x, fast=False).by_category == expected
    # Counting leaves the model untouched.
    assert "forward" not in m.layers[0].mixer.__dict__ and m.training
    assert not m._forward_hooks and not m.layers[0].mixer._forward_pre_hooks
    assert m.head._forward_hooks == {}
    assert torch.isfinite(m(x)).all()


def test_shape_input_and_bad_mode():
    m = VisionMamba(img_size=32, depth=1, embed_dim=32, num_classes=5)
    assert flops(m, (2, 3, 32, 32)).total == 2 * 249_984
    with pytest.raises(ValueError, match="mode"):
        flops(m, (1, 3, 32, 32), mode="fvcore")


def test_divide_output_and_layernorm_variants():
    base = flops(VisionMamba(img_size=32, depth=1, embed_dim=32, num_classes=5), (1, 3, 32, 32))
    div = flops(VisionMamba(img_size=32, depth=1, embed_dim=32, num_classes=5, divide_output=True),
                (1, 3, 32, 32))
    ln = flops(VisionMamba(img_size=32, depth=1, embed_dim=32, num_classes=5, rms_norm=False),
               (1, 3, 32, 32))
    assert div.total - base.total == 5 * 64
    assert ln["norm"] == 5 * 5 * 32 * 2
