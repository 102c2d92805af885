"""Checkpoint loading: every official container form, prefixes, resizing, inflation, reports, saving."""
import argparse
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import videomamba
from videomamba import VisionMamba, load_checkpoint, save_checkpoint
from videomamba.checkpoint import read_checkpoint

from conftest import load_official


def small(video=True, img_size=32, num_frames=4, num_classes=5, **kw):
    return VisionMamba(img_size=img_size, depth=2, embed_dim=32, num_classes=num_classes,
                       num_frames=num_frames if video else None, **kw).eval()


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, msg=k)


def containers(sd):
    return {
        "flat": sd,
        "model": {"model": sd, "optimizer": {}, "epoch": 3, "args": argparse.Namespace(lr=1e-3)},
        "module": {"module": sd},
        "state_dict": {"state_dict": sd},
        "ddp_prefix": {f"module.{k}": v for k, v in sd.items()},
        "backbone_prefix": {"model": {f"backbone.{k}": v for k, v in sd.items()}},
        "encoder_prefix": {f"encoder.{k}": v for k, v in sd.items()},
        "umt": {"model": {**{f"vision_encoder.{k}": v for k, v in sd.items()},
                          "text_encoder.bert.embeddings.word_embeddings.weight": torch.zeros(3, 4),
                          "vision_proj.weight": torch.zeros(2, 32), "temp": torch.tensor(0.07)}},
    }


@pytest.mark.parametrize("form", list(containers({})))
def test_every_container_form_loads_in_memory_and_from_pth(form, tmp_path):
    src = small()
    obj = containers(src.state_dict())[form]
    for source in (obj, tmp_path / "ckpt.pth"):
        if not isinstance(source, dict):
            torch.save(obj, source)
        dst = small()
        report = load_checkpoint(dst, source)
        assert_same_weights(src, dst)
        assert not report.missing and not report.dropped
        if form == "umt":
            assert report.prefixes_stripped == ["vision_encoder."]
            assert "text_encoder.bert.embeddings.word_embeddings.weight" in report.unexpected


def test_official_layout_loads_strictly_with_official_logits(tmp_path):
    fx = load_official("video_depth2_dim96_f4_64px")
    path = tmp_path / "official.pth"
    torch.save({"model": fx["state_dict"], "epoch": 1, "args": argparse.Namespace(model="videomamba")}, path)
    m = VisionMamba(**fx["kwargs"]).eval()
    report = load_checkpoint(m, path, strict=True)
    assert report.clean and len(report.loaded) == len(fx["state_dict"])
    with torch.no_grad():
        assert (m(fx["input"]) - fx["output"]).abs().max() <= 1e-5


def test_safetensors_round_trip_and_cli_convert(tmp_path):
    src = small()
    pth = tmp_path / "ck.pth"
    torch.save({"model": {f"module.{k}": v for k, v in src.state_dict().items()}, "epoch": 2}, pth)
    out = tmp_path / "ck.safetensors"
    r = subprocess.run([sys.executable, "-m", "videomamba.cli", "convert", str(pth), str(out), "--strip-prefix"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout
    sd = read_checkpoint(out)
    assert set(sd) == set(src.state_dict())
    dst = small()
    assert load_checkpoint(dst, out, strict=True).clean
    assert_same_weights(src, dst)

    direct = save_checkpoint(src, tmp_path / "direct.safetensors", metadata={"variant": "test"})
    from safetensors import safe_open
    with safe_open(str(direct), "pt") as f:
        assert f.metadata()["variant"] == "test"
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write leaves no temp file


def test_head_of_another_label_set_is_dropped():
    src = small(num_classes=400)
    dst = small(num_classes=10)
    head_before = dst.head.weight.clone()
    report = load_checkpoint(dst, src.state_dict())
    assert set(report.dropped) == {"head.weight", "head.bias"}
    torch.testing.assert_close(dst.head.weight, head_before)
    torch.testing.assert_close(dst.pos_embed, src.pos_embed)
    with pytest.raises(RuntimeError, match="head.weight"):
        load_checkpoint(small(num_classes=10), src.state_dict(), strict=True)


def test_masked_pretrain_norm_is_renamed_and_decoder_skipped():
    src = small()
    sd = {k: v for k, v in src.state_dict().items() if not k.startswith("head.")}
    sd["norm.weight"] = sd.pop("norm_f.weight")
    sd["clip_decoder.0.head.weight"] = torch.zeros(512, 32)
    sd["clip_decoder.0.norm.weight"] = torch.zeros(512)
    dst = small()
    report = load_checkpoint(dst, sd)
    assert report.renamed == {"norm.weight": "norm_f.weight"}
    torch.testing.assert_close(dst.norm_f.weight, src.norm_f.weight)
    # the decoder is a training-only head: skipped (as official fine-tuning ignores it), not "unexpected"
    assert sorted(report.skipped) == ["clip_decoder.0.head.weight", "clip_decoder.0.norm.weight"]
    assert report.unexpected == [] and report.missing == ["head.weight", "head.bias"]
    text = str(report)
    assert "norm.weight -> norm_f.weight" in text and "clip_decoder.* (2 tensors)" in text


@pytest.mark.parametrize("inflate", ["center", "average"])
def test_2d_to_3d_inflation(inflate):
    img = small(video=False)
    vid = small(kernel_size=2, num_frames=4)
    report = load_checkpoint(vid, img.state_dict(), inflate=inflate)
    assert "patch_embed.proj.weight" in report.resized
    assert report.missing == ["temporal_pos_embedding"]
    assert torch.count_nonzero(vid.temporal_pos_embedding) == 0
    w = vid.patch_embed.proj.weight
    if inflate == "center":
        torch.testing.assert_close(w[:, :, 1], img.patch_embed.proj.weight)
        assert torch.count_nonzero(w[:, :, 0]) == 0
    else:
        torch.testing.assert_close(w[:, :, 0], img.patch_embed.proj.weight / 2)
    # On a static clip the inflated tubelet conv equals the image conv, for both modes.
    frame = torch.randn(1, 3, 32, 32)
    clip = frame.unsqueeze(2).repeat(1, 1, 4, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(vid.patch_embed(clip)[:, :, 0], img.patch_embed(frame), rtol=1e-5, atol=1e-5)


def test_video_checkpoint_into_image_model():
    vid = small()
    img = small(video=False)
    report = load_checkpoint(img, vid.state_dict())
    assert report.unexpected == ["temporal_pos_embedding"]
    torch.testing.assert_close(img.patch_embed.proj.weight, vid.patch_embed.proj.weight[:, :, 0])


def test_spatial_pos_embed_bicubic_resize_keeps_cls():
    src = small(img_size=32)               # 2x2 grid
    with torch.no_grad():
        src.pos_embed.normal_()
    dst = small(img_size=64)               # 4x4 grid
    report = load_checkpoint(dst, src.state_dict())
    assert report.resized["pos_embed"].startswith("(1,5,32) -> (1,17,32)")
    torch.testing.assert_close(dst.pos_embed[:, 0], src.pos_embed[:, 0])
    grid = src.pos_embed[0, 1:].reshape(2, 2, 32).permute(2, 0, 1).unsqueeze(0)
    expect = F.interpolate(grid, size=(4, 4), mode="bicubic", align_corners=False)
    torch.testing.assert_close(dst.pos_embed[0, 1:], expect[0].permute(1, 2, 0).reshape(16, 32))


def test_temporal_pos_embed_linear_resize():
    src = small(num_frames=4)
    with torch.no_grad():
        src.temporal_pos_embedding.copy_(torch.arange(4.0).view(1, 4, 1).expand(1, 4, 32))
    dst = small(num_frames=8)
    report = load_checkpoint(dst, src.state_dict())
    assert "linear" in report.resized["temporal_pos_embedding"]
    got = dst.temporal_pos_embedding[0, :, 0]
    # align_corners=False: output sample j sits at (j + 0.5) / 2 - 0.5 in source coordinates.
    expect = ((torch.arange(8.0) + 0.5) / 2 - 0.5).clamp(0, 3)
    torch.testing.assert_close(got, expect)
    x = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        assert dst(x).shape == (1, 5)


def test_create_model_with_checkpoint_path(tmp_path):
    with torch.no_grad():
        src = videomamba.create_model("videomamba_tiny", img_size=32, num_frames=2, num_classes=3)
    path = save_checkpoint(src, tmp_path / "tiny.safetensors")
    m = videomamba.create_model("videomamba_tiny", img_size=32, num_frames=2, num_classes=3, checkpoint_path=path)
    assert m.load_report.clean
    assert_same_weights(src, m)


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_checkpoint(small(), tmp_path / "nope.pth")
    torch.save({"epoch": 3, "args": "x"}, tmp_path / "empty.pth")
    with pytest.raises(ValueError, match="no tensors"):
        load_checkpoint(small(), tmp_path / "empty.pth")
    with pytest.raises(KeyError, match="ema"):
        load_checkpoint(small(), {"model": {"a": 1}, "epoch": 2}, model_key="ema")


def test_pretrained_tag_loads_official_file_from_home(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDEOMAMBA_HOME", str(tmp_path))
    src = videomamba.create_model("videomamba_tiny", num_frames=8, num_classes=400)
    # The official K400 container, under the official file name.
    torch.save({"model": src.state_dict(), "epoch": 69, "args": argparse.Namespace(model="videomamba_tiny")},
               tmp_path / "videomamba_t16_k400_f8_res224.pth")
    m = videomamba.create_model("videomamba_tiny.k400_f8_res224", pretrained=True)
    assert m.load_report.clean and m.num_frames == 8 and m.num_classes == 400
    assert_same_weights(src, m)


def test_pretrained_without_file_or_hub_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDEOMAMBA_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="videomamba_s16_in1k_res224.pth"):
        videomamba.create_model("videomamba_small.in1k_res224", pretrained=True)


def test_masked_pretrain_dict_into_headless_model():
    src = small()
    sd = {k: v for k, v in src.state_dict().items() if not k.startswith("head.")}
    sd["norm.weight"] = sd.pop("norm_f.weight")
    dst = small(num_classes=0)
    report = load_checkpoint(dst, sd, strict=True)
    assert report.clean and report.renamed == {"norm.weight": "norm_f.weight"}


def test_non_square_pos_embed_is_reported_not_raised():
    src = VisionMamba(img_size=(32, 48), depth=1, embed_dim=32, num_classes=2)   # 6 positions
    dst = VisionMamba(img_size=64, depth=1, embed_dim=32, num_classes=2)         # 16 positions
    report = load_checkpoint(dst, src.state_dict())
    assert "not a square grid" in report.dropped["pos_embed"]
    same = VisionMamba(img_size=(48, 32), depth=1, embed_dim=32, num_classes=2)
    report = load_checkpoint(same, src.state_dict())
    assert any("assumed the same 3x2 grid" in n for n in report.notes)
