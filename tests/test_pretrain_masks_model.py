"""Masked pretraining without the teacher: mask types and visible counts, attention masking follows the
attention, the student's aligned features (official and final target), which parameters learn, the loss,
and the official masked-pretraining checkpoint layout."""
import pytest
import torch

import videomamba
from videomamba.ops import norm_forward
from videomamba.models.pretrain import VideoMambaPretrain, sinusoid_table
from videomamba.pretrain import MASK_TYPES, alignment_loss, make_mask, visible_patches, visible_targets

TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=3, num_frames=4, clip_output_dim=12)


@pytest.mark.parametrize("kind", MASK_TYPES)
@pytest.mark.parametrize("grid,frames,ratio", [((14, 14), 8, 0.8), ((4, 4), 3, 0.75), ((2, 2), 8, 0.8), ((3, 5), 2, 0.5)])
def test_visible_counts(kind, grid, frames, ratio):
    H, W = grid
    attn = torch.rand(5, frames, H * W) if kind == "attention" else None
    mask = make_mask(kind, 5, frames, grid, ratio, attn=attn)
    assert mask.shape == (5, 1 + frames * H * W) and mask.dtype == torch.bool
    assert not mask[:, 0].any()                                      # the CLS is always visible
    visible = (~mask[:, 1:]).sum(dim=1)
    assert (visible == visible_patches(kind, frames, grid, ratio)).all()
    per_frame = (~mask[:, 1:]).view(5, frames, H, W)
    if kind == "tube":                                               # the same pattern in every frame
        assert (per_frame == per_frame[:, :1]).all()
    if kind in ("tube_row", "random_row"):                           # whole rows
        assert (per_frame == per_frame[..., :1]).all()
    if kind == "tube_row":                                           # int(H*r) masked rows in every frame
        assert ((~per_frame[..., 0]).sum(dim=-1) == int(H * ratio)).all()


def _masked_rows(mask, frames, H, W):
    """(B, T) masked rows per frame, and (B, T, H) which rows, counted from the raw mask in the test."""
    rows = mask[:, 1:].view(mask.shape[0], frames, H, W)[..., 0]
    return rows.sum(dim=-1), rows


def test_tube_row_draws_each_frames_rows_separately():
    """The official ``tube_row``: every frame masks int(H*r) whole rows, drawn separately per frame, so the
    frames' masked rows differ (with 8 frames of 14 rows, all frames alike has probability ~1e-27)."""
    torch.manual_seed(0)
    T, H, W = 8, 14, 14
    mask = make_mask("tube_row", 6, T, (H, W), 0.8)
    counts, rows = _masked_rows(mask, T, H, W)
    assert (counts == int(H * 0.8)).all()
    assert all(not (rows[b] == rows[b, :1]).all() for b in range(6))


def test_random_row_draws_rows_of_the_whole_clip():
    """The official ``random_row``: T*int(H*r) rows out of all T*H rows of the clip, so the number per frame
    varies; the total is fixed."""
    torch.manual_seed(0)
    T, H, W = 8, 14, 14
    mask = make_mask("random_row", 200, T, (H, W), 0.5)
    counts, _ = _masked_rows(mask, T, H, W)
    assert (counts.sum(dim=1) == T * int(H * 0.5)).all()
    assert (counts != int(H * 0.5)).any(dim=1).float().mean() > 0.9   # nearly every clip has uneven frames
    # a frame's count is hypergeometric: 56 rows drawn from 112, 14 of them the frame's
    n, N, K = T * 7, T * H, H
    mean, var = n * K / N, n * (K / N) * (1 - K / N) * (N - n) / (N - 1)     # 7 and ~3.09
    assert abs(counts.float().mean().item() - mean) < 0.1
    assert abs(counts.float().var().item() - var) < 0.4


def test_official_counts():
    # docs/design.md §3.4: 40 of 196 patches per frame stay visible with attention masking at 0.8
    assert visible_patches("attention", 8, (14, 14), 0.8) == 8 * 40
    assert visible_patches("tube", 8, (14, 14), 0.9) == 8 * (196 - 176)
    assert visible_patches("random", 8, (14, 14), 0.9) == 1568 - 1411


def test_masks_differ_between_draws_and_follow_torch_seed():
    torch.manual_seed(1)
    a = make_mask("random", 4, 8, (4, 4), 0.75)
    b = make_mask("random", 4, 8, (4, 4), 0.75)
    torch.manual_seed(1)
    assert torch.equal(a, make_mask("random", 4, 8, (4, 4), 0.75)) and not torch.equal(a, b)


def test_attention_masking_keeps_high_attention_patches():
    """Over many draws, a patch with 10x the attention of the others is visible far more often than the
    uniform rate (and more often than any low-attention patch)."""
    N, keep, draws = 16, 4, 4000
    attn = torch.ones(draws, 1, N)
    attn[..., 5] = 10.0
    mask = make_mask("attention", draws, 1, (4, 4), 0.75, attn=attn)
    rate = (~mask[:, 1:]).float().mean(dim=0)
    uniform = keep / N
    # P(visible) for the heavy patch is ~0.8, for the others ~0.21: far apart at 4000 draws (sd ~ 0.007)
    assert rate[5] > 0.7 and rate[5] > 3 * uniform
    others = torch.cat((rate[:5], rate[6:]))
    assert others.max() < 0.3
    # and with uniform attention every patch is equally likely (chi-square-like bound)
    flat = make_mask("attention", draws, 1, (4, 4), 0.75, attn=torch.ones(draws, 1, N))
    r = (~flat[:, 1:]).float().mean(dim=0)
    assert (r - uniform).abs().max() < 0.04


def test_attention_mask_needs_matching_attention():
    with pytest.raises(ValueError, match="attention"):
        make_mask("attention", 2, 4, (2, 2), 0.8)
    with pytest.raises(ValueError, match="patch grid"):
        make_mask("attention", 2, 4, (2, 2), 0.8, attn=torch.rand(2, 4, 9))
    with pytest.raises(ValueError, match="mask type"):
        make_mask("block", 2, 4, (2, 2), 0.8)


def test_loss_zero_when_equal_and_two_when_orthogonal():
    t = torch.nn.functional.normalize(torch.randn(2, 3, 7, 16), dim=-1)
    assert alignment_loss(t.clone(), t).item() == pytest.approx(0.0, abs=1e-6)
    assert alignment_loss(-t, t).item() == pytest.approx(4.0, abs=1e-5)
    e0, e1 = torch.zeros(1, 1, 1, 4), torch.zeros(1, 1, 1, 4)
    e0[..., 0], e1[..., 1] = 1, 1
    assert alignment_loss(e0, e1).item() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="differ"):
        alignment_loss(t, t[:, :, :3])


def test_visible_targets_select_unmasked_positions():
    feats = torch.arange(2 * 5 * 3, dtype=torch.float).view(1, 2, 5, 3)
    mask = torch.tensor([[False, True, False, True, True], [False, False, True, True, True]])
    out = visible_targets(feats, mask)
    assert out.shape == (1, 2, 2, 3)
    assert torch.equal(out[0, 0], feats[0, 0, [0, 2]]) and torch.equal(out[0, 1], feats[0, 1, [0, 1]])


def test_sinusoid_table():
    t = sinusoid_table(5, 6)
    assert t.shape == (1, 5, 6)
    p, i = 3, 1   # channel 2i = sin(p / 10000^(2i/d)), 2i+1 = cos of the same angle
    angle = p / 10000 ** (2 * i / 6)
    assert t[0, p, 2 * i].item() == pytest.approx(torch.sin(torch.tensor(angle)).item(), abs=1e-6)
    assert t[0, p, 2 * i + 1].item() == pytest.approx(torch.cos(torch.tensor(angle)).item(), abs=1e-6)


def _plain_twin(student: VideoMambaPretrain) -> videomamba.VisionMamba:
    """A plain video VisionMamba with the student's backbone weights (head dropped, norm -> norm_f)."""
    twin = videomamba.VisionMamba(img_size=32, patch_size=8, embed_dim=32, depth=3, num_frames=4, num_classes=0)
    sd = {("norm_f." + k[5:] if k.startswith("norm.") else k): v for k, v in student.state_dict().items()
          if not k.startswith("clip_decoder.")}
    twin.load_state_dict(sd)
    return twin.eval()


@pytest.mark.parametrize("target", ["official", "final"])
def test_student_features_equal_a_direct_computation(target):
    student = VideoMambaPretrain(**TINY, clip_target=target).eval()
    for p in student.parameters():   # non-trivial norms and decoders
        torch.nn.init.normal_(p, std=0.1) if p.dim() > 1 else torch.nn.init.uniform_(p, 0.5, 1.5)
    twin = _plain_twin(student)
    x = torch.randn(2, 3, 4, 32, 32)
    mask = make_mask("tube", 2, 4, (4, 4), 0.5)
    with torch.no_grad():
        out = student(x, mask)
        tokens = twin.embed(x)[~mask].reshape(2, -1, 32)
        if target == "official":   # the un-normalised stream entering the last block
            hidden, residual = tokens, None
            for layer in twin.layers[:-1]:
                hidden, residual = layer(hidden, residual)
            feat = hidden + residual
        else:                      # the normalised output of the last block
            feat = twin._forward_blocks(tokens)
        pos = student.clip_pos_embed.expand(2, -1, -1)[~mask].reshape(2, -1, 32)
        dec = student.clip_decoder[0]
        want = torch.nn.functional.normalize(dec.norm(dec.head(feat + pos)), dim=-1)
    assert out.shape == (1, 2, 1 + 4 * 8, 12)
    torch.testing.assert_close(out[0], want, rtol=1e-5, atol=1e-5)
    assert torch.allclose(out.norm(dim=-1), torch.ones(()), atol=1e-5)


def test_gradients_flow_as_documented():
    """Official target: the last block and the final norm get no gradient (frozen, as the official loss
    never reaches them); every other block and the decoder do. 'final': every parameter learns."""
    x = torch.randn(2, 3, 4, 32, 32)
    mask = make_mask("random", 2, 4, (4, 4), 0.75)
    official = VideoMambaPretrain(**TINY)
    official(x, mask).sum().backward()
    frozen = {n for n, p in official.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in official.named_parameters() if n.startswith(("layers.2.", "norm."))}
    for n, p in official.named_parameters():
        if n in frozen:
            assert p.grad is None, n
        elif n.startswith(("layers.0.", "layers.1.", "clip_decoder.", "patch_embed.", "pos_embed", "temporal_pos")):
            assert p.grad is not None and p.grad.abs().sum() > 0, n
    final = VideoMambaPretrain(**TINY, clip_target="final")
    final(x, mask).sum().backward()
    assert all(p.requires_grad for p in final.parameters())
    assert final.layers[2].mixer.in_proj.weight.grad.abs().sum() > 0 and final.norm.weight.grad.abs().sum() > 0


def test_several_return_layers():
    student = VideoMambaPretrain(**TINY, clip_return_layers=2).eval()
    assert student.return_index == [1, 2] and len(student.clip_decoder) == 2
    mask = make_mask("tube", 1, 4, (4, 4), 0.5)
    with torch.no_grad():
        out = student(torch.randn(1, 3, 4, 32, 32), mask)
    assert out.shape == (2, 1, 1 + 4 * 8, 12)
    # the final norm now learns through the earlier layer; the last block still does not
    assert student.norm.weight.requires_grad and not student.layers[2].mixer.in_proj.weight.requires_grad
    with pytest.raises(ValueError, match="clip_decoder_embed_dim"):
        VideoMambaPretrain(**TINY, clip_decoder_embed_dim=64)
    with pytest.raises(ValueError, match="mask"):
        student(torch.randn(1, 3, 4, 32, 32), mask[:, :-1])


def _official_pretrain_layout(depth: int, dim: int, frames: int, grid: int, out: int = 512) -> dict:
    """The official masked-pretraining student's state dict (docs/design.md §1.6), from the documented keys
    and shapes only."""
    di, R, N = 2 * dim, -(-dim // 16), 16
    sd = {"cls_token": (1, 1, dim), "pos_embed": (1, grid * grid + 1, dim), "temporal_pos_embedding": (1, frames, dim),
          "patch_embed.proj.weight": (dim, 3, 1, 16, 16), "patch_embed.proj.bias": (dim,)}
    for i in range(depth):
        p = f"layers.{i}.mixer."
        sd.update({p + "A_log": (di, N), p + "D": (di,), p + "A_b_log": (di, N), p + "D_b": (di,),
                   p + "in_proj.weight": (2 * di, dim), p + "conv1d.weight": (di, 1, 4), p + "conv1d.bias": (di,),
                   p + "x_proj.weight": (R + 2 * N, di), p + "dt_proj.weight": (di, R), p + "dt_proj.bias": (di,),
                   p + "conv1d_b.weight": (di, 1, 4), p + "conv1d_b.bias": (di,), p + "x_proj_b.weight": (R + 2 * N, di),
                   p + "dt_proj_b.weight": (di, R), p + "dt_proj_b.bias": (di,), p + "out_proj.weight": (dim, di),
                   f"layers.{i}.norm.weight": (dim,)})
    sd.update({"norm.weight": (dim,), "clip_decoder.0.head.weight": (out, dim), "clip_decoder.0.head.bias": (out,),
               "clip_decoder.0.norm.weight": (out,), "clip_decoder.0.norm.bias": (out,)})
    return sd


def test_official_middle_layout_matches_exactly():
    with torch.device("meta"):
        model = videomamba.create_model("videomamba_middle_pretrain")
    want = _official_pretrain_layout(32, 576, 8, 14)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == want
    assert len(got) == 5 + 17 * 32 + 1 + 4


def test_official_layout_loads_strictly_and_finetunes(tmp_path):
    """A synthetic checkpoint in exactly the official layout (tiny width for speed) loads strictly into
    the pretrain model; a video model fine-tunes from it: norm -> norm_f, clip_decoder ignored, temporal
    position embedding resized from 8 frames, the head new."""
    torch.manual_seed(0)
    sd = {k: torch.randn(s) * 0.02 for k, s in _official_pretrain_layout(2, 64, 8, 2).items()}
    path = tmp_path / "videomamba_t16_k400_mask_pt_f8_res224.pth"
    torch.save(sd, path)
    student = videomamba.create_model("videomamba_tiny_pretrain", embed_dim=64, depth=2, img_size=32, patch_size=16)
    report = videomamba.load_checkpoint(student, path, strict=True)
    assert report.clean and len(report.loaded) == len(sd)
    assert torch.equal(student.norm.weight, sd["norm.weight"])
    video = videomamba.create_model("videomamba_tiny", embed_dim=64, depth=2, img_size=32, patch_size=16,
                                    num_frames=16, num_classes=5)
    report = videomamba.load_checkpoint(video, path)
    assert "head.weight" in report.missing and not report.unexpected and not report.dropped
    assert set(report.skipped) == {k for k in sd if k.startswith("clip_decoder.")}
    assert report.renamed == {"norm.weight": "norm_f.weight"}
    assert "temporal_pos_embedding" in report.resized
    assert torch.equal(video.layers[1].mixer.in_proj.weight, sd["layers.1.mixer.in_proj.weight"])


def test_multi_scale_crop_params():
    """TSN multi-scale crop: sides from scales x short side (at most one scale step apart; within 3 px of
    the output size snapped to it), corners on the 13 fixed grid positions."""
    import numpy as np

    from videomamba.data.video_transforms import VideoPretrainTransform, multi_scale_crop_params

    rng = np.random.default_rng(0)
    sizes = [int(240 * s) for s in (1.0, 0.875, 0.75, 0.66)]
    snapped = [224 if abs(s - 224) < 3 else s for s in sizes]   # 240, 210, 180, 158
    seen = set()
    for _ in range(2000):
        top, left, ch, cw = multi_scale_crop_params(240, 320, 224, rng=rng)
        i, j = snapped.index(ch), snapped.index(cw)
        assert abs(i - j) <= 1
        hs, ws = (240 - ch) // 4, (320 - cw) // 4
        assert top % max(hs, 1) == 0 and left % max(ws, 1) == 0 and top + ch <= 240 and left + cw <= 320
        seen.add((ch, cw))
    assert len(seen) == 10   # 4 diagonal + 2 x 3 off-diagonal pairs
    frames = np.random.default_rng(1).integers(0, 255, (8, 48, 64, 3), dtype=np.uint8)
    out = VideoPretrainTransform(32, hflip=0.5)(frames)
    assert out.shape == (3, 8, 32, 32) and out.dtype == torch.float32


@pytest.mark.parametrize("target", ["official", "final"])
def test_several_layers_with_drop_path_equal_the_official_loop(target):
    """Train mode, drop path 0.5, three aligned layers: the features equal the official loop over every
    block (which appends norm(residual) after block r and, for the last layer, the raw residual entering
    it, or with 'final' the normalised last output), the same random drop-path draws included."""
    kw = {**TINY, "depth": 4}
    student = VideoMambaPretrain(**kw, clip_target=target, clip_return_layers=3, drop_path_rate=0.5).train()
    twin = videomamba.VisionMamba(img_size=32, patch_size=8, embed_dim=32, depth=4, num_frames=4, num_classes=0,
                                  drop_path_rate=0.5).train()
    twin.load_state_dict({("norm_f." + k[5:] if k.startswith("norm.") else k): v for k, v in student.state_dict().items()
                          if not k.startswith("clip_decoder.")})
    x = torch.randn(6, 3, 4, 32, 32)
    mask = make_mask("random", 6, 4, (4, 4), 0.5)
    tokens = student.embed(x)[~mask].reshape(6, -1, 32)
    torch.manual_seed(7)
    got = student.forward_aligned(tokens)
    torch.manual_seed(7)
    hidden, residual, want = tokens, None, []
    for idx, layer in enumerate(twin.layers):
        hidden, residual = layer(hidden, residual)
        if idx - 1 in student.return_index:
            want.append(twin.norm_f(residual))
    if target == "official":
        want.append(residual)
    else:
        want.append(norm_forward(twin.norm_f, twin.drop_path(hidden), residual, prenorm=False))
    assert student.return_index == [1, 2, 3] and len(got) == len(want) == 3
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w.to(g.dtype), rtol=1e-5, atol=1e-5)


def test_a_backbone_checkpoint_loads_its_final_norm_into_the_student():
    """A fine-tuned backbone names its final norm ``norm_f``, the student ``norm``: the loader maps it."""
    torch.manual_seed(0)
    backbone = videomamba.VisionMamba(img_size=32, patch_size=8, embed_dim=32, depth=3, num_frames=4, num_classes=5)
    with torch.no_grad():
        backbone.norm_f.weight.uniform_(0.5, 1.5)
    student = VideoMambaPretrain(**TINY)
    report = videomamba.load_checkpoint(student, backbone.state_dict())
    assert torch.equal(student.norm.weight, backbone.norm_f.weight)
    assert report.renamed.get("norm_f.weight") == "norm.weight"
