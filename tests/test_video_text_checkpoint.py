"""Loading official UMT_VIDEOMAMBA video-text checkpoints (and our own) into VideoMambaText.

The official key list is generated here from the published layout (docs/design.md §1.6, §4), independently of
the loader: the vision student per layer, BERT with cross-attention from ``fusion`` on and the MLM head, the
OpenAI CLIP visual tower of the teacher. Full size (VideoMamba-M + bert-base + CLIP-B/16) runs on the meta
device: names and shapes only, no memory.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from videomamba.checkpoint import CheckpointError
from videomamba.checkpoint.video_text import convert_video_text_state_dict, load_video_text_checkpoint
from videomamba.models.clip_teacher import CLIPTeacher, build_clip_vit, teacher_from_state_dict
from videomamba.models.video_text import build_video_text_model

TOKEN_IDS = {"pad": 0, "cls": 1, "mask": 2}


# ---------------------------------------------------------------------------------------------- sizes
def sizes(full: bool) -> dict:
    if full:   # VideoMamba-M, 8 frames at 224; bert-base-uncased; CLIP ViT-B/16
        return dict(D=576, depth=32, frames=8, img=224, vocab=30522, hidden=768, layers=12, heads=12, inter=3072,
                    max_pos=512, fusion=9, width=768, tlayers=12, out=512)
    return dict(D=64, depth=2, frames=2, img=32, vocab=50, hidden=64, layers=2, heads=2, inter=128,
                max_pos=40, fusion=1, width=64, tlayers=2, out=32)


def bert_config(s: dict) -> dict:
    return dict(vocab_size=s["vocab"], hidden_size=s["hidden"], num_hidden_layers=s["layers"],
                num_attention_heads=s["heads"], intermediate_size=s["inter"], hidden_act="gelu",
                hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_position_embeddings=s["max_pos"],
                type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0, initializer_range=0.02)


def make_model(s: dict, teacher: bool = True, mlm: bool = True, frames: int | None = None):
    vision = {"variant": "videomamba_middle",
              "kwargs": dict(embed_dim=s["D"], depth=s["depth"], img_size=s["img"], num_frames=frames or s["frames"])}
    spec = {"vision": vision, "text": {"config": bert_config(s), "fusion_layer": s["fusion"]}}
    clip = None
    if teacher:
        vit = build_clip_vit(img_size=s["img"], patch_size=16, width=s["width"], layers=s["tlayers"])
        clip = CLIPTeacher(vit, torch.zeros(s["width"], s["out"]))
    losses = ("vtc", "vtm") + (("mlm",) if mlm else ()) + (("uta",) if teacher else ())
    model, _ = build_video_text_model(spec, token_ids=TOKEN_IDS, teacher=clip, losses=losses, log=lambda m: None)
    return model


# ---------------------------------------------------------------------------------------------- official keys
def vision_shapes(s: dict) -> dict:
    D, d_in = s["D"], 2 * s["D"]                 # expand 2
    dt_rank, d_state, n = math.ceil(D / 16), 16, (s["img"] // 16) ** 2
    shapes = {"cls_token": (1, 1, D), "pos_embed": (1, 1 + n, D), "temporal_pos_embedding": (1, s["frames"], D),
              "patch_embed.proj.weight": (D, 3, 1, 16, 16), "patch_embed.proj.bias": (D,)}
    for i in range(s["depth"]):
        m = f"layers.{i}.mixer."
        shapes.update({m + "A_log": (d_in, d_state), m + "A_b_log": (d_in, d_state), m + "D": (d_in,),
                       m + "D_b": (d_in,), m + "in_proj.weight": (2 * d_in, D), m + "out_proj.weight": (D, d_in)})
        for b in ("", "_b"):
            shapes.update({m + f"conv1d{b}.weight": (d_in, 1, 4), m + f"conv1d{b}.bias": (d_in,),
                           m + f"x_proj{b}.weight": (dt_rank + 2 * d_state, d_in),
                           m + f"dt_proj{b}.weight": (d_in, dt_rank), m + f"dt_proj{b}.bias": (d_in,)})
        shapes[f"layers.{i}.norm.weight"] = (D,)
    shapes.update({"norm.weight": (D,), "clip_decoder.0.head.weight": (512, D), "clip_decoder.0.head.bias": (512,),
                   "clip_decoder.0.norm.weight": (512,), "clip_decoder.0.norm.bias": (512,),
                   "pool_norm.weight": (D,), "pool_norm.bias": (D,)})
    return {"vision_encoder." + k: v for k, v in shapes.items()}


def _linear(name: str, out: int, inp: int) -> dict:
    return {name + ".weight": (out, inp), name + ".bias": (out,)}


def _ln(name: str, dim: int) -> dict:
    return {name + ".weight": (dim,), name + ".bias": (dim,)}


def text_shapes(s: dict, prefix: str = "text_encoder.bert.", mlm: bool = True) -> dict:
    H, V = s["hidden"], s["vocab"]
    e = prefix + "embeddings."
    shapes = {e + "word_embeddings.weight": (V, H), e + "position_embeddings.weight": (s["max_pos"], H),
              e + "token_type_embeddings.weight": (2, H), **_ln(e + "LayerNorm", H)}
    for i in range(s["layers"]):
        L = f"{prefix}encoder.layer.{i}."
        blocks = ["attention"] + (["crossattention"] if i >= s["fusion"] else [])
        for blk in blocks:
            kv = s["D"] if blk == "crossattention" else H   # cross-attention K/V read the vision tokens
            shapes.update({**_linear(L + blk + ".self.query", H, H), **_linear(L + blk + ".self.key", H, kv),
                           **_linear(L + blk + ".self.value", H, kv), **_linear(L + blk + ".output.dense", H, H),
                           **_ln(L + blk + ".output.LayerNorm", H)})
        shapes.update({**_linear(L + "intermediate.dense", s["inter"], H), **_linear(L + "output.dense", H, s["inter"]),
                       **_ln(L + "output.LayerNorm", H)})
    if mlm:
        c = "text_encoder.cls.predictions."
        shapes.update({c + "bias": (V,), **_linear(c + "transform.dense", H, H), **_ln(c + "transform.LayerNorm", H),
                       c + "decoder.weight": (V, H), c + "decoder.bias": (V,)})
    return shapes


def teacher_shapes(s: dict, conv3d: bool = True) -> dict:
    """OpenAI's visual tower; the official video teacher's conv1 is a Conv3d of one frame."""
    W, n = s["width"], (s["img"] // 16) ** 2
    shapes = {"class_embedding": (W,), "positional_embedding": (1 + n, W),
              "conv1.weight": (W, 3, 1, 16, 16) if conv3d else (W, 3, 16, 16), **_ln("ln_pre", W)}
    for i in range(s["tlayers"]):
        r = f"transformer.resblocks.{i}."
        shapes.update({**_ln(r + "ln_1", W), r + "attn.in_proj_weight": (3 * W, W), r + "attn.in_proj_bias": (3 * W,),
                       **_linear(r + "attn.out_proj", W, W), **_ln(r + "ln_2", W), **_linear(r + "mlp.c_fc", 4 * W, W),
                       **_linear(r + "mlp.c_proj", W, 4 * W)})
    shapes.update({**_ln("ln_post", W), "proj": (W, s["out"])})
    return {"clip_teacher." + k: v for k, v in shapes.items()}


def official_shapes(s: dict, retrieval: bool = False, conv3d: bool = True) -> dict:
    """The pretraining layout (``text_encoder.bert.*`` + MLM head + teacher), or the retrieval one
    (``text_encoder.*``, no head, no teacher)."""
    shapes = vision_shapes(s)
    if retrieval:
        shapes.update(text_shapes(s, prefix="text_encoder.", mlm=False))
    else:
        shapes.update(text_shapes(s))
        shapes["text_encoder.bert.embeddings.position_ids"] = (1, s["max_pos"])
        shapes.update(teacher_shapes(s, conv3d))
    shapes.update({**_linear("vision_proj", 512, s["D"]), **_linear("text_proj", 512, s["hidden"]),
                   **_linear("itm_head", 2, s["hidden"]), "temp": ()})
    return shapes


def random_official(s: dict, seed: int = 0, **kw) -> dict:
    """Random values in the official layout; tied tensors equal (as they are in a saved BertForMaskedLM)."""
    g = torch.Generator().manual_seed(seed)
    sd = {k: torch.randn(shape, generator=g) for k, shape in official_shapes(s, **kw).items()}
    if "text_encoder.bert.embeddings.position_ids" in sd:
        sd["text_encoder.bert.embeddings.position_ids"] = torch.arange(s["max_pos"])[None]
    if "text_encoder.cls.predictions.decoder.weight" in sd:
        sd["text_encoder.cls.predictions.decoder.weight"] = sd["text_encoder.bert.embeddings.word_embeddings.weight"]
        sd["text_encoder.cls.predictions.decoder.bias"] = sd["text_encoder.cls.predictions.bias"]
    return sd


# ---------------------------------------------------------------------------------------------- 1. full size
@pytest.mark.parametrize("retrieval", [False, True], ids=["pretrain", "retrieval"])
def test_full_size_official_keys_map_onto_the_model(retrieval):
    s = sizes(full=True)
    with torch.device("meta"):
        model = make_model(s, teacher=not retrieval, mlm=not retrieval)
    shapes = official_shapes(s, retrieval=retrieval)
    sd = {k: torch.empty(v, device="meta") for k, v in shapes.items()}
    mapped, report = convert_video_text_state_dict(sd, model, "official.pth")

    target = model.state_dict()
    assert report.missing == [] and report.unexpected == [] and report.mismatched == {}, str(report)
    assert report.resized == {}
    expected_skips = set() if retrieval else {"text_encoder.bert.embeddings.position_ids"}
    assert set(report.skipped) == expected_skips
    assert set(report.mapping) | set(report.skipped) == set(sd)                # every checkpoint key accounted for
    assert sorted(report.mapping.values()) == sorted(mapped)                     # one-to-one onto model keys
    assert set(mapped) == set(target) and sorted(report.loaded) == sorted(target)
    for key, name in report.mapping.items():
        assert mapped[name].shape == target[name].shape, key
    if retrieval:
        assert report.mapping["text_encoder.encoder.layer.11.crossattention.self.key.weight"] == \
            "text_encoder.bert.encoder.layer.11.crossattention.self.key.weight"
        assert target["text_encoder.bert.encoder.layer.11.crossattention.self.key.weight"].shape == (768, 576)
    else:
        assert len([k for k in mapped if k.startswith("clip_teacher.")]) == 152
        assert report.mapping["clip_teacher.conv1.weight"] == "clip_teacher.vit.patch_embed.proj.weight"
        assert report.mapping["clip_teacher.transformer.resblocks.11.attn.in_proj_weight"] == \
            "clip_teacher.vit.blocks.11.attn.qkv.weight"


# ---------------------------------------------------------------------------------------------- 2. values
def _small_teacher(s: dict, sd: dict) -> CLIPTeacher:
    """The reference teacher through the other converter (timm's OpenAI import, in teacher_from_state_dict)."""
    openai = {k[len("clip_teacher."):]: v for k, v in sd.items() if k.startswith("clip_teacher.")}
    if openai["conv1.weight"].dim() == 5:
        openai["conv1.weight"] = openai["conv1.weight"][:, :, 0]
    return teacher_from_state_dict(openai, "reference")


@pytest.mark.parametrize("conv3d", [True, False], ids=["conv3d", "conv2d"])
def test_official_pretrain_file_round_trip(tmp_path, conv3d):
    s = sizes(full=False)
    sd = random_official(s, conv3d=conv3d)
    path = tmp_path / "videomamba_m16_5M_f8_res224.pth"
    torch.save({"model": sd, "epoch": 9, "config": {"x": 1}}, path)
    model = make_model(s)
    report = load_video_text_checkpoint(model, path, log=lambda m: None)

    assert report.clean and report.missing == []
    assert report.skipped == {"text_encoder.bert.embeddings.position_ids": report.skipped[
        "text_encoder.bert.embeddings.position_ids"]}
    ours = model.state_dict()
    for k, v in sd.items():
        if not k.startswith("clip_teacher.") and k in ours:   # pretraining names are already ours
            assert torch.equal(ours[k], v), k
    assert not any(k.endswith("position_ids") for k in ours)

    ref = _small_teacher(s, sd)
    for k, v in ref.state_dict().items():
        assert torch.equal(ours["clip_teacher." + k], v), k
    x = torch.randn(2, 3, 2, s["img"], s["img"])
    got, want = model.clip_teacher(x), ref(x)
    assert torch.equal(got.features, want.features) and torch.equal(got.attn, want.attn)


def test_official_retrieval_file_round_trip(tmp_path):
    s = sizes(full=False)
    sd = random_official(s, retrieval=True, seed=1)
    sd["text_encoder.embeddings.LayerNorm.gamma"] = sd.pop("text_encoder.embeddings.LayerNorm.weight")
    sd["text_encoder.embeddings.LayerNorm.beta"] = sd.pop("text_encoder.embeddings.LayerNorm.bias")
    path = tmp_path / "retrieval.pth"
    torch.save({"module": sd}, path)
    model = make_model(s, teacher=False, mlm=False)
    report = load_video_text_checkpoint(model, path, log=lambda m: None)

    assert report.clean and report.skipped == {}
    ours = model.state_dict()
    assert len(ours) == len(sd)
    for k, v in sd.items():
        name = k.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        if name.startswith("text_encoder."):
            name = "text_encoder.bert." + name[len("text_encoder."):]
        assert torch.equal(ours[name], v), k


def test_own_training_checkpoint_round_trip(tmp_path):
    s = sizes(full=False)
    torch.manual_seed(0)
    src = make_model(s)
    with torch.no_grad():   # make every tensor distinct from a fresh init (LayerNorms start at 1/0)
        for p in src.parameters():
            p.add_(torch.randn_like(p))
    path = tmp_path / "checkpoint-latest.pth"
    torch.save({"model": src.state_dict(), "optimizer": {}, "epoch": 1}, path)
    torch.manual_seed(1)
    dst = make_model(s)
    report = load_video_text_checkpoint(dst, path, log=lambda m: None)

    assert report.clean and report.skipped == {} and "our (timm) layout" in report.layout
    want = src.state_dict()
    for k, v in dst.state_dict().items():
        assert torch.equal(v, want[k]), k
    # the tie survives loading: the decoder is still the word-embedding matrix
    assert dst.text_encoder.cls.predictions.decoder.weight is dst.text_encoder.bert.embeddings.word_embeddings.weight

    ddp = {"model": {"module." + k: v for k, v in src.state_dict().items()}}   # saved from a DDP wrapper
    report = load_video_text_checkpoint(make_model(s), ddp, log=None)
    assert report.clean and report.prefixes_stripped == ["module."]


def test_mlm_decoder_filled_through_the_tie():
    s = sizes(full=False)
    sd = random_official(s)
    del sd["text_encoder.cls.predictions.decoder.weight"], sd["text_encoder.cls.predictions.decoder.bias"]
    model = make_model(s)
    report = load_video_text_checkpoint(model, sd, log=lambda m: None)
    assert report.clean
    assert torch.equal(model.text_encoder.cls.predictions.decoder.weight,
                       sd["text_encoder.bert.embeddings.word_embeddings.weight"])


# ---------------------------------------------------------------------------------------------- 3. errors
def test_missing_key_under_strict_names_file_and_key(tmp_path):
    s = sizes(full=False)
    sd = random_official(s)
    del sd["text_proj.bias"]
    path = tmp_path / "cut.pth"
    torch.save({"model": sd}, path)
    model = make_model(s)
    before = model.itm_head.weight.detach().clone()
    with pytest.raises(CheckpointError) as err:
        load_video_text_checkpoint(model, path, log=lambda m: None)
    msg = str(err.value)
    assert str(path) in msg and "text_proj.bias" in msg and "missing" in msg
    assert err.value.report.missing == ["text_proj.bias"]
    assert torch.equal(model.itm_head.weight, before)   # nothing loaded when it raises

    report = load_video_text_checkpoint(model, path, strict=False, log=lambda m: None)
    assert report.missing == ["text_proj.bias"] and "text_proj.bias" in str(report)
    assert torch.equal(model.itm_head.weight, sd["itm_head.weight"])


def test_wrong_shape_under_strict_names_file_and_key(tmp_path):
    s = sizes(full=False)
    sd = random_official(s)
    sd["itm_head.weight"] = torch.randn(3, s["hidden"])
    path = tmp_path / "bad_shape.pth"
    torch.save({"model": sd}, path)
    model = make_model(s)
    with pytest.raises(CheckpointError) as err:
        load_video_text_checkpoint(model, path, log=lambda m: None)
    msg = str(err.value)
    assert str(path) in msg and "itm_head.weight" in msg and "(3,64)" in msg

    report = load_video_text_checkpoint(model, path, strict=False, log=lambda m: None)
    assert "itm_head.weight" in report.mismatched and "itm_head.weight" not in report.loaded


def test_unexpected_key_and_foreign_file(tmp_path):
    s = sizes(full=False)
    sd = random_official(s)
    sd["vision_encoder.head.weight"] = torch.randn(10, s["D"])
    model = make_model(s)
    with pytest.raises(CheckpointError, match="vision_encoder.head.weight"):
        load_video_text_checkpoint(model, sd, log=lambda m: None)
    assert load_video_text_checkpoint(model, sd, strict=False, log=None).unexpected == ["vision_encoder.head.weight"]

    path = tmp_path / "classifier.pth"
    torch.save({"model": {"head.weight": torch.zeros(2, 2)}}, path)
    with pytest.raises(CheckpointError, match="no tensor fits"):
        load_video_text_checkpoint(model, path, strict=False, log=None)


def test_model_without_teacher_or_mlm_head_skips_them(tmp_path):
    s = sizes(full=False)
    sd = random_official(s)
    path = tmp_path / "official.pth"
    torch.save({"model": sd}, path)
    model = make_model(s, teacher=False, mlm=False)
    logged = []
    report = load_video_text_checkpoint(model, path, log=logged.append)   # strict: still no error

    teacher_keys = {k for k in sd if k.startswith("clip_teacher.")}
    head_keys = {k for k in sd if k.startswith("text_encoder.cls.")}
    assert teacher_keys and head_keys and report.clean
    assert {k for k, why in report.skipped.items() if "teacher" in why} == teacher_keys
    assert {k for k, why in report.skipped.items() if "MLM head" in why} == head_keys
    assert "CLIP teacher" in logged[0] and f"{len(teacher_keys)} tensors" in logged[0]
    assert torch.equal(model.vision_proj.weight, sd["vision_proj.weight"])


# ---------------------------------------------------------------------------------------------- 4. frames
def test_temporal_pos_embedding_resized_8_to_16_frames():
    s = {**sizes(full=False), "frames": 8}
    sd = random_official(s)
    model = make_model(s, frames=16)
    report = load_video_text_checkpoint(model, sd, log=None)

    src = sd["vision_encoder.temporal_pos_embedding"]                          # (1, 8, D)
    want = F.interpolate(src.permute(0, 2, 1), size=16, mode="linear", align_corners=False).permute(0, 2, 1)
    got = model.vision_encoder.temporal_pos_embedding
    assert got.shape == (1, 16, s["D"]) and torch.allclose(got, want)
    assert "vision_encoder.temporal_pos_embedding" in report.resized and report.clean
    assert torch.allclose(got[0, 0], src[0, 0]) and torch.allclose(got[0, -1], src[0, -1])   # ends kept
    assert torch.equal(model.vision_encoder.pos_embed, sd["vision_encoder.pos_embed"])


def test_spatial_pos_embed_resized_to_another_resolution():
    s = sizes(full=False)                                                       # 32 px: a 2x2 grid
    sd = random_official(s, retrieval=True)
    model = make_model({**s, "img": 48}, teacher=False, mlm=False)              # 48 px: 3x3
    report = load_video_text_checkpoint(model, sd, log=None)

    src = sd["vision_encoder.pos_embed"]
    grid = src[:, 1:].reshape(1, 2, 2, -1).permute(0, 3, 1, 2)
    want = F.interpolate(grid, size=(3, 3), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(1, 9, -1)
    got = model.vision_encoder.pos_embed
    assert report.clean and "vision_encoder.pos_embed" in report.resized
    assert torch.equal(got[:, :1], src[:, :1]) and torch.allclose(got[:, 1:], want)
