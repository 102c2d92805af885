"""The CLIP teacher of masked pretraining: outputs against a direct computation, every file layout,
strict refusals, the ``convert-clip`` command."""
import subprocess
import sys
import warnings

import pytest
import timm
import torch
import torch.nn.functional as F

from videomamba.checkpoint.io import CheckpointError
from videomamba.models.clip_teacher import (CLIPTeacher, TeacherOutput, build_clip_vit, convert_clip,
                                            load_clip_teacher)

WIDTH, LAYERS, HEADS, PATCH, IMG, OUT = 64, 2, 1, 8, 32, 24
N = (IMG // PATCH) ** 2


def openai_visual(seed=0, width=WIDTH, layers=LAYERS, out=OUT):
    """A random OpenAI-layout visual tower (the extracted file's keys)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.1):
        return torch.randn(*shape, generator=g) * scale

    def ln(name):
        return {f"{name}.weight": 1 + r(width), f"{name}.bias": r(width)}

    sd = {"class_embedding": r(width), "positional_embedding": r(N + 1, width), "proj": r(width, out),
          "conv1.weight": r(width, 3, PATCH, PATCH), **ln("ln_pre"), **ln("ln_post")}
    for i in range(layers):
        p = f"transformer.resblocks.{i}."
        sd.update({p + "attn.in_proj_weight": r(3 * width, width), p + "attn.in_proj_bias": r(3 * width),
                   p + "attn.out_proj.weight": r(width, width), p + "attn.out_proj.bias": r(width),
                   p + "mlp.c_fc.weight": r(4 * width, width), p + "mlp.c_fc.bias": r(4 * width),
                   p + "mlp.c_proj.weight": r(width, 4 * width), p + "mlp.c_proj.bias": r(width),
                   **ln(p + "ln_1"), **ln(p + "ln_2")})
    return sd


def reference(sd, x, heads=HEADS, img=IMG, conv_bias=None):
    """The teacher written out with plain torch ops on the OpenAI tensors: (per-block targets, attn)."""
    if x.dim() == 4:
        x = x.unsqueeze(2)
    B, C, T, H, W = x.shape
    f = x.permute(0, 2, 1, 3, 4).reshape(B * T, C, H, W)
    if (H, W) != (img, img):
        f = F.interpolate(f, size=(img, img), mode="bicubic", align_corners=False)
    width = sd["class_embedding"].numel()
    h = F.conv2d(f, sd["conv1.weight"], conv_bias, stride=sd["conv1.weight"].shape[-1]).flatten(2).transpose(1, 2)
    h = torch.cat([sd["class_embedding"].expand(B * T, 1, width), h], dim=1) + sd["positional_embedding"]

    def ln(t, name):
        return F.layer_norm(t, (width,), sd[name + ".weight"], sd[name + ".bias"], eps=1e-5)

    h = ln(h, "ln_pre")
    L, d = h.shape[1], width // heads
    layers = len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")})
    targets = []
    for i in range(layers):
        p = f"transformer.resblocks.{i}."
        y = ln(h, p + "ln_1") @ sd[p + "attn.in_proj_weight"].T + sd[p + "attn.in_proj_bias"]
        q, k, v = (t.reshape(B * T, L, heads, d).transpose(1, 2) for t in y.split(width, dim=-1))
        a = torch.softmax(q @ k.transpose(-1, -2) / d ** 0.5, dim=-1)
        o = (a @ v).transpose(1, 2).reshape(B * T, L, width)
        h = h + o @ sd[p + "attn.out_proj.weight"].T + sd[p + "attn.out_proj.bias"]
        m = ln(h, p + "ln_2") @ sd[p + "mlp.c_fc.weight"].T + sd[p + "mlp.c_fc.bias"]
        m = m * torch.sigmoid(1.702 * m)
        h = h + m @ sd[p + "mlp.c_proj.weight"].T + sd[p + "mlp.c_proj.bias"]
        hv = h.reshape(B, T, L, width)
        tok = torch.cat([hv[:, :, 0].mean(1, keepdim=True), hv[:, :, 1:].reshape(B, T * (L - 1), width)], dim=1)
        targets.append(F.normalize(tok @ sd["proj"], dim=-1))
    return targets, a[:, :, 0, 1:].mean(1).reshape(B, T, L - 1)


def to_timm(sd, conv_bias=None, num_classes=10):
    """The same tower in timm's key layout (written here independently of the module), proj dropped,
    with a classifier head like a timm image model."""
    ren = [("transformer.resblocks.", "blocks."), ("ln_1", "norm1"), ("ln_2", "norm2"),
           ("in_proj_weight", "qkv.weight"), ("in_proj_bias", "qkv.bias"), ("out_proj", "proj"),
           ("c_fc", "fc1"), ("c_proj", "fc2")]
    top = {"conv1.weight": "patch_embed.proj.weight", "ln_pre.weight": "norm_pre.weight",
           "ln_pre.bias": "norm_pre.bias", "ln_post.weight": "norm.weight", "ln_post.bias": "norm.bias"}
    out = {"cls_token": sd["class_embedding"].reshape(1, 1, -1), "pos_embed": sd["positional_embedding"][None]}
    for k, v in sd.items():
        if k in top:
            out[top[k]] = v
        elif k.startswith("transformer."):
            for a, b in ren:
                k = k.replace(a, b)
            out[k] = v
    if conv_bias is not None:
        out["patch_embed.proj.bias"] = conv_bias
    width = sd["class_embedding"].numel()
    out["head.weight"], out["head.bias"] = torch.randn(num_classes, width), torch.zeros(num_classes)
    return out


def same(a: TeacherOutput, b: TeacherOutput):
    return torch.equal(a.features, b.features) and torch.equal(a.attn, b.attn)


@pytest.fixture(scope="module")
def sd():
    return openai_visual()


@pytest.fixture(scope="module")
def video():
    return torch.randn(2, 3, 3, IMG, IMG, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def extracted(tmp_path, sd):
    path = tmp_path / "clip_visual.pth"
    torch.save(sd, path)
    return path


def test_build_clip_vit_is_timm_clip_architecture():
    vit = build_clip_vit(IMG, PATCH, WIDTH, LAYERS)
    assert isinstance(vit, timm.models.vision_transformer.VisionTransformer)
    assert vit.patch_embed.proj.bias is None              # OpenAI conv1 has no bias
    assert not isinstance(vit.norm_pre, torch.nn.Identity)
    assert vit.blocks[0].attn.num_heads == WIDTH // 64 and vit.blocks[0].norm1.eps == 1e-5
    assert type(vit.blocks[0].mlp.act).__name__ == "QuickGELU"
    assert vit.patch_embed.num_patches == N and len(vit.blocks) == LAYERS


@pytest.mark.parametrize("image", [False, True], ids=["video", "image"])
def test_outputs_match_direct_computation(extracted, sd, video, image):
    teacher = load_clip_teacher(extracted)
    assert (teacher.width, teacher.out_dim, teacher.num_patches, teacher.img_size, teacher.patch_size) == \
        (WIDTH, OUT, N, IMG, PATCH)
    x = video[:, :, 0] if image else video
    T = 1 if image else video.shape[2]
    out = teacher(x)
    targets, attn = reference(sd, x)
    assert out.features.shape == (1, 2, 1 + T * N, OUT) and out.attn.shape == (2, T, N)
    torch.testing.assert_close(out.features[0], targets[-1], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.attn, attn, atol=1e-5, rtol=0)
    assert torch.allclose(out.features.norm(dim=-1), torch.ones(()))


@pytest.mark.parametrize("layout", ["openai", "timm"])
def test_video_teachers_one_frame_conv3d_loads(tmp_path, sd, video, layout):
    """The official video teacher module saves conv1 as a Conv3d of one frame, (W, 3, 1, P, P): the same teacher
    as the 2-D conv of the same weights."""
    plain = dict(sd) if layout == "openai" else to_timm(sd)
    key = "conv1.weight" if layout == "openai" else "patch_embed.proj.weight"
    torch.save(plain, tmp_path / "image_teacher.pth")
    torch.save({**plain, key: plain[key].unsqueeze(2)}, tmp_path / "video_teacher.pth")
    assert same(load_clip_teacher(tmp_path / "video_teacher.pth")(video),
                load_clip_teacher(tmp_path / "image_teacher.pth")(video))
    torch.save({**plain, key: plain[key].unsqueeze(2).repeat(1, 1, 2, 1, 1)}, tmp_path / "two_frames.pth")
    with pytest.raises(CheckpointError, match=r"two_frames.pth.*over 2 frames"):
        load_clip_teacher(tmp_path / "two_frames.pth")


def test_heads_override(extracted, sd, video):
    teacher = load_clip_teacher(extracted, heads=4)
    assert teacher.vit.blocks[-1].attn.num_heads == 4
    targets, attn = reference(sd, video, heads=4)
    out = teacher(video)
    torch.testing.assert_close(out.features[0], targets[-1], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.attn, attn, atol=1e-5, rtol=0)


def test_multi_layer_return(extracted, sd, video):
    teacher = load_clip_teacher(extracted)
    out = teacher(video, return_layers=2, interval=1)
    targets, _ = reference(sd, video)
    assert out.features.shape == (2, 2, 1 + 3 * N, OUT)
    torch.testing.assert_close(out.features[0], targets[0], atol=1e-5, rtol=0)   # ascending block order
    assert torch.equal(out.features[1], teacher(video).features[0])
    with pytest.raises(ValueError):
        teacher(video, return_layers=3)


def test_other_input_size_is_resized_bicubically(extracted, sd):
    teacher = load_clip_teacher(extracted)
    x = torch.randn(1, 3, 2, 48, 48)
    frames = x.transpose(1, 2).reshape(2, 3, 48, 48)
    small = F.interpolate(frames, size=(IMG, IMG), mode="bicubic", align_corners=False)
    small = small.reshape(1, 2, 3, IMG, IMG).transpose(1, 2)
    assert same(teacher(x), teacher(small))
    torch.testing.assert_close(teacher(x).features[0], reference(sd, x)[0][-1], atol=1e-5, rtol=0)


def test_full_openai_and_container_layouts_load_the_same(tmp_path, extracted, sd, video):
    want = load_clip_teacher(extracted)(video)
    full = {f"visual.{k}": v for k, v in sd.items()}
    full.update({"token_embedding.weight": torch.randn(100, 32), "positional_embedding": torch.randn(77, 32),
                 "transformer.resblocks.0.ln_1.weight": torch.ones(32), "ln_final.weight": torch.ones(32),
                 "text_projection": torch.randn(32, OUT), "logit_scale": torch.tensor(4.6)})
    files = {"openai-clip": full, "openai-visual in 'state_dict'": {"state_dict": sd, "epoch": 3},
             "openai-clip in 'model'": {"model": full}}
    for fmt, obj in files.items():
        torch.save(obj, tmp_path / "x.pth")
        teacher = load_clip_teacher(tmp_path / "x.pth")
        assert teacher.source_format == fmt
        assert same(teacher(video), want), fmt


def test_openai_torchscript_download_loads(tmp_path, sd, video):
    # OpenAI ships ViT-B-16.pt as a TorchScript archive of the whole CLIP model
    root = torch.nn.Module()
    for key, value in {**{f"visual.{k}": v for k, v in sd.items()}, "logit_scale": torch.tensor(4.6)}.items():
        *parents, leaf = key.split(".")
        mod = root
        for name in parents:
            if not hasattr(mod, name):
                mod.add_module(name, torch.nn.Module())
            mod = getattr(mod, name)
        mod.register_parameter(leaf, torch.nn.Parameter(value.clone()))
    root.forward = lambda x: x * root.logit_scale
    with warnings.catch_warnings():   # torch.jit is deprecated
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(root, torch.ones(1)), tmp_path / "ViT-B-16.pt")
    teacher = load_clip_teacher(tmp_path / "ViT-B-16.pt")
    assert teacher.source_format == "openai-clip"
    torch.save(sd, tmp_path / "extracted.pth")
    assert same(teacher(video), load_clip_teacher(tmp_path / "extracted.pth")(video))


def test_timm_layout_classifier_loads_with_identity_proj(tmp_path, video):
    vit = timm.create_model("vit_base_patch16_clip_224", pretrained=False, num_classes=10, img_size=IMG,
                            patch_size=PATCH, embed_dim=WIDTH, depth=LAYERS, num_heads=HEADS, act_layer="quick_gelu")
    with torch.no_grad():
        for n, p in vit.named_parameters():
            if "norm" in n:   # away from the 1/0 init so that a swapped norm would show
                p.add_(torch.randn_like(p) * 0.1)
    vit.eval()
    torch.save({"model": vit.state_dict()}, tmp_path / "timm.pth")
    teacher = load_clip_teacher(tmp_path / "timm.pth")
    assert teacher.source_format == "timm-vit in 'model'" and teacher.out_dim == WIDTH
    assert torch.equal(teacher.proj, torch.eye(WIDTH))
    img = video[:, :, 0]
    with torch.no_grad():
        (patches, prefix), = vit.forward_intermediates(img, indices=1, return_prefix_tokens=True, norm=False,
                                                        output_fmt="NLC", intermediates_only=True)
    want = F.normalize(torch.cat([prefix, patches], dim=1), dim=-1)
    torch.testing.assert_close(teacher(img).features[0], want, atol=1e-5, rtol=0)


def test_timm_patch_bias_is_folded_into_the_position_embedding(tmp_path, sd, video):
    bias = torch.randn(WIDTH) * 0.1
    torch.save(to_timm(sd, conv_bias=bias), tmp_path / "timm_bias.pth")
    teacher = load_clip_teacher(tmp_path / "timm_bias.pth")
    ident = dict(sd, proj=torch.eye(WIDTH))
    targets, attn = reference(ident, video, conv_bias=bias)
    out = teacher(video)
    torch.testing.assert_close(out.features[0], targets[-1], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.attn, attn, atol=1e-5, rtol=0)
    # written back as the pure OpenAI layout (no conv1.bias), same outputs
    dst = convert_clip(tmp_path / "timm_bias.pth", tmp_path / "out.pth")
    written = torch.load(dst)
    assert set(written) == set(sd) and "conv1.bias" not in written
    assert same(load_clip_teacher(dst)(video), out)


def test_partial_file_is_refused_naming_the_key(tmp_path, sd):
    broken = dict(sd)
    del broken["transformer.resblocks.1.ln_2.weight"]
    torch.save(broken, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError,
                       match=r"partial\.pth.*missing 1 keys \(transformer\.resblocks\.1\.ln_2\.weight\)"):
        load_clip_teacher(tmp_path / "partial.pth")
    torch.save({f"visual.{k}": v for k, v in broken.items()}, tmp_path / "partial_full.pth")
    with pytest.raises(CheckpointError, match=r"transformer\.resblocks\.1\.ln_2\.weight"):
        load_clip_teacher(tmp_path / "partial_full.pth")
    torch.save(dict(sd, extra=torch.zeros(1)), tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"1 unexpected keys \(extra\)"):
        load_clip_teacher(tmp_path / "extra.pth")
    torch.save(dict(sd, proj=torch.zeros(WIDTH + 1, OUT)), tmp_path / "badproj.pth")
    with pytest.raises(CheckpointError, match="proj"):
        load_clip_teacher(tmp_path / "badproj.pth")
    torch.save(dict(sd, **{"transformer.resblocks.0.mlp.c_fc.weight": torch.zeros(WIDTH, WIDTH)}),
               tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match=r"shape\.pth: shapes do not fit .*blocks\.0\.mlp\.fc1\.weight"):
        load_clip_teacher(tmp_path / "shape.pth")


def test_unrelated_file_is_refused(tmp_path):
    torch.save({"encoder.weight": torch.zeros(3, 3), "decoder.bias": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=r"other\.pth: no CLIP visual tower .*decoder\.bias"):
        load_clip_teacher(tmp_path / "other.pth")


def test_teacher_is_frozen_and_stays_in_eval(extracted):
    teacher = load_clip_teacher(extracted)
    assert isinstance(teacher, CLIPTeacher)
    assert not any(p.requires_grad for p in teacher.parameters())
    parent = torch.nn.Sequential(teacher)
    parent.train()
    assert not teacher.training and not any(m.training for m in teacher.modules())
    x = torch.randn(1, 3, IMG, IMG, requires_grad=True)
    assert not teacher(x).features.requires_grad


def test_convert_clip_round_trip(tmp_path, sd, video):
    full = {f"visual.{k}": v for k, v in sd.items()}
    full["token_embedding.weight"] = torch.randn(10, 8)
    torch.save({"state_dict": full}, tmp_path / "clip.pth")
    dst = convert_clip(tmp_path / "clip.pth", tmp_path / "teacher.pth")
    written = torch.load(dst, weights_only=True)
    assert set(written) == set(sd) and all(torch.equal(written[k], sd[k]) for k in sd)
    want = load_clip_teacher(tmp_path / "clip.pth")(video)
    assert same(load_clip_teacher(dst)(video), want)
    assert same(load_clip_teacher(convert_clip(dst, tmp_path / "teacher.safetensors"))(video), want)


def cli(*args):
    return subprocess.run([sys.executable, "-m", "videomamba.cli", *args], capture_output=True, text=True)


def test_convert_clip_command(tmp_path, sd, video):
    torch.save({f"visual.{k}": v for k, v in sd.items()}, tmp_path / "clip.pth")
    r = cli("convert-clip", str(tmp_path / "clip.pth"), str(tmp_path / "teacher.pth"))
    assert r.returncode == 0, r.stderr
    line, = r.stdout.strip().splitlines()
    assert "openai-clip" in line and "width 64, 2 layers, 1 heads, patch 8, 32 px, out_dim 24" in line
    assert str(tmp_path / "teacher.pth") in line
    assert same(load_clip_teacher(tmp_path / "teacher.pth")(video), load_clip_teacher(tmp_path / "clip.pth")(video))


def test_convert_clip_command_bad_input(tmp_path, capsys):
    # in-process (main() is what ``python -m videomamba.cli`` exits with): saves a second interpreter start
    from videomamba.cli import main

    torch.save({"a.weight": torch.zeros(2)}, tmp_path / "bad.pth")
    assert main(["convert-clip", str(tmp_path / "bad.pth"), str(tmp_path / "out.pth")]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"videomamba convert-clip: {tmp_path / 'bad.pth'}: "), lines
    assert not (tmp_path / "out.pth").exists()
