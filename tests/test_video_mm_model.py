"""The video-text model: the text encoder against transformers' BertModel, fusion layers, the vision encoder
against the backbone and the masked-pretraining student, image mode, the VTM and MLM losses against direct
computations, the temperature clamp."""
import pytest
import torch
import torch.nn.functional as F

from videomamba.data.text import default_text_encoder_dir, load_tokenizer
from videomamba.models.clip_teacher import CLIPTeacher, build_clip_vit
from videomamba.models.pretrain import VideoMambaPretrain
from videomamba.models.text_bert import (additive_mask, build_text_encoder, init_cross_attention_, text_config_dict,
                                         text_encoder_from_config)
from videomamba.models.video_text import VideoTextVisionEncoder, build_video_text_model, video_text_from_meta
from videomamba.models.vision_mamba import VisionMamba

VISION = dict(num_frames=4, img_size=32, patch_size=16, depth=3, embed_dim=64, clip_output_dim=32,
              drop_path_rate=0.0)
SMALL_BERT = dict(vocab_size=30522, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                  intermediate_size=128, hidden_act="gelu", hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0, max_position_embeddings=64, type_vocab_size=2,
                  layer_norm_eps=1e-12, pad_token_id=0, initializer_range=0.02)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def small_model(losses=("vtc", "vtm", "mlm", "uta"), tokenizer=None, text_pool="cls", seed=0, itm_pool=None):
    torch.manual_seed(seed)
    teacher = CLIPTeacher(build_clip_vit(img_size=32, patch_size=16, width=64, layers=2, heads=2), torch.randn(64, 32))
    spec = {"vision": {"variant": "videomamba_tiny", "kwargs": VISION},
            "text": {"config": SMALL_BERT, "fusion_layer": 2, "pool": text_pool, "itm_pool": itm_pool}}
    ids = {"pad": 0, "cls": 101, "mask": 103}
    model, meta = build_video_text_model(spec, ids, teacher if "uta" in losses else None, losses,
                                         masks={"video": ("random", 0.5), "image": ("random", 0.5)})
    return model, meta


def test_text_layers_equal_transformers_bert(tokenizer):
    from transformers import BertModel

    ref = BertModel.from_pretrained(str(default_text_encoder_dir())).eval()
    ours = build_text_encoder(fusion_layer=5, encoder_width=32, log=lambda s: None).eval()
    t = tokenizer(["a handwritten seven moving left", "hi"], padding="max_length", max_length=12, return_tensors="pt")
    want = ref(input_ids=t.input_ids, attention_mask=t.attention_mask, output_hidden_states=True).hidden_states[5]
    got = ours(t.input_ids, t.attention_mask, mode="text")
    assert torch.allclose(got, want, atol=1e-5)
    # padding does not change the real tokens' states
    short = tokenizer(["a handwritten seven moving left"], return_tensors="pt")
    got_short = ours(short.input_ids, short.attention_mask, mode="text")
    assert torch.allclose(got_short[0], got[0, :short.input_ids.shape[1]], atol=1e-4)


def test_fusion_layers_cross_attend_and_multimodal_is_text_then_fusion():
    torch.manual_seed(0)
    enc = text_encoder_from_config(SMALL_BERT, fusion_layer=2, encoder_width=48).eval()
    layer = enc.bert.encoder.layer[2]
    assert tuple(layer.crossattention.self.key.weight.shape) == (64, 48)
    assert not hasattr(enc.bert.encoder.layer[1], "crossattention")
    ids = torch.randint(1000, 2000, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.long)
    v = torch.randn(2, 5, 48)
    text = enc(ids, mask, mode="text")
    fused = enc(mode="fusion", hidden_states=text, attention_mask=mask, encoder_hidden_states=v)
    assert torch.allclose(enc(ids, mask, encoder_hidden_states=v, mode="multimodal"), fused, atol=1e-6)
    # the output depends on the vision tokens (and only through the fusion layers)
    other = enc(mode="fusion", hidden_states=text, attention_mask=mask, encoder_hidden_states=v + 1)
    assert (other - fused).abs().max() > 1e-3
    with pytest.raises(ValueError, match="fusion_layer"):
        text_encoder_from_config(SMALL_BERT, fusion_layer=3, encoder_width=48)
    assert text_config_dict(enc)["hidden_size"] == 64


def test_cross_attention_equals_transformers_and_gathers_vision_rows_by_index():
    """Our cross-attention (keys and values projected once per vision row, then gathered) against transformers'
    own BertAttention on the same weights, fed the gathered vision rows; with a vision padding mask."""
    torch.manual_seed(0)
    enc = text_encoder_from_config(SMALL_BERT, fusion_layer=2, encoder_width=48).eval()
    layer = enc.bert.encoder.layer[2]
    hidden, vision = torch.randn(5, 7, 64), torch.randn(3, 9, 48)
    index = torch.tensor([0, 2, 1, 2, 0])
    keep = torch.ones(3, 9)
    keep[1, 6:] = 0                                   # row 1 has 3 padded vision tokens
    add = additive_mask(keep, hidden.dtype)
    with torch.no_grad():
        want, _ = layer.crossattention(hidden, None, vision[index], add[index])
        assert torch.allclose(layer.cross_attend(hidden, vision, add, index), want, atol=1e-5)
        assert torch.allclose(layer.cross_attend(hidden[:3], vision, add), layer.crossattention(
            hidden[:3], None, vision, add)[0], atol=1e-5)
        # the whole fusion pass: an index is the same as repeating the vision rows
        text = enc(torch.randint(1000, 2000, (5, 7)), torch.ones(5, 7, dtype=torch.long), mode="text")
        by_rows = enc(mode="fusion", hidden_states=text, encoder_hidden_states=vision[index])
        assert torch.allclose(enc(mode="fusion", hidden_states=text, encoder_hidden_states=vision,
                                  encoder_index=index), by_rows, atol=1e-5)


def test_mlm_head_is_tied_to_the_word_embeddings():
    enc = text_encoder_from_config(SMALL_BERT, fusion_layer=2, encoder_width=48)
    assert enc.cls.predictions.decoder.weight is enc.bert.embeddings.word_embeddings.weight
    assert enc.cls.predictions.decoder.bias is enc.cls.predictions.bias


def test_vision_encoder_matches_backbone_and_student():
    """Final-norm tokens = VisionMamba.forward_features with the same weights; the clip features = the
    masked-pretraining student's (official target: the stream entering the last block) on the same mask."""
    torch.manual_seed(0)
    enc = VideoTextVisionEncoder(**VISION).eval()
    x = torch.randn(2, 3, 4, 32, 32)
    backbone = VisionMamba(num_classes=0, **{k: v for k, v in VISION.items() if k != "clip_output_dim"}).eval()
    sd = {("norm_f.weight" if k == "norm.weight" else k): v for k, v in enc.state_dict().items()
          if not k.startswith(("clip_decoder", "pool_norm"))}
    backbone.load_state_dict(sd, strict=True)
    with torch.no_grad():
        patches, pooled, clip = enc(x, return_clip=True)
        ref = backbone.forward_features(x)
    assert torch.allclose(patches, ref[:, 1:], atol=1e-5)
    assert torch.allclose(pooled, enc.pool_norm(ref[:, :1] + ref[:, 1:].mean(1, keepdim=True)), atol=1e-5)
    student = VideoMambaPretrain(**VISION).eval()
    student.load_state_dict({k: v for k, v in enc.state_dict().items() if not k.startswith("pool_norm")}, strict=True)
    mask = torch.zeros(2, 1 + 4 * 4, dtype=torch.bool)
    mask[:, 1::2] = True
    with torch.no_grad():
        _, _, clip_masked = enc(x, mask)
        assert torch.allclose(clip_masked, student(x, mask), atol=1e-5)


def test_keep_temporal_pools_per_frame_and_images_skip_temporal_positions():
    torch.manual_seed(0)
    enc = VideoTextVisionEncoder(**VISION).eval()
    with torch.no_grad():
        enc.temporal_pos_embedding.normal_()
        x = torch.randn(2, 3, 4, 32, 32)
        patches, pooled, _ = enc(x, keep_temporal=True, return_clip=False)
        assert pooled.shape == (2, 4, 64)
        out = enc.forward_blocks(enc.embed_media(x))
        for t in range(4):   # pool_norm(cls + the spatial mean of frame t)
            want = enc.pool_norm(out[:, 0] + out[:, 1 + 4 * t:1 + 4 * (t + 1)].mean(1))
            assert torch.allclose(pooled[:, t], want, atol=1e-5)
        img = torch.randn(2, 3, 1, 32, 32)
        tokens = enc.embed_media(img)
        direct = enc.patch_embed(img).flatten(2).transpose(1, 2) + enc.pos_embed[:, 1:]
        assert torch.allclose(tokens[:, 1:], direct, atol=1e-6)            # no temporal position for an image
        _, pooled_img, _ = enc(img, keep_temporal=True, return_clip=False)
        assert pooled_img.shape == (2, 1, 64)
        with pytest.raises(ValueError, match="keep_temporal"):
            enc(x, torch.zeros(2, 17, dtype=torch.bool), keep_temporal=True)


def test_fusion_tokens_add_the_cls_to_every_patch_when_asked_and_travel_in_the_config():
    torch.manual_seed(0)
    enc = VideoTextVisionEncoder(**VISION, fusion_tokens="patches+cls").eval()
    x = torch.randn(2, 3, 4, 32, 32)
    mask = torch.zeros(2, 17, dtype=torch.bool)
    mask[:, 2::3] = True
    with torch.no_grad():
        out = enc.forward_blocks(enc.embed_media(x))
        tokens, _, _ = enc(x, return_clip=False)
        assert torch.allclose(tokens, out[:, 1:] + out[:, :1], atol=1e-6)
        visible = enc.forward_blocks(enc.embed_media(x)[~mask].reshape(2, -1, 64))
        tokens, _, _ = enc(x, mask, return_clip=False)
        assert tokens.shape == (2, 16 - 5, 64)
        assert torch.allclose(tokens, visible[:, 1:] + visible[:, :1], atol=1e-6)
        official = VideoTextVisionEncoder(**VISION).eval()
        official.load_state_dict(enc.state_dict())
        assert torch.allclose(official(x, return_clip=False)[0], out[:, 1:], atol=1e-6)   # default: patches only
    spec = {"vision": {"variant": "videomamba_tiny", "kwargs": {**VISION, "fusion_tokens": "patches+cls"}},
            "text": {"config": SMALL_BERT, "fusion_layer": 2}}
    _, meta = build_video_text_model(spec, losses=("vtc", "vtm"))
    assert video_text_from_meta(meta).vision_encoder.config.fusion_tokens == "patches+cls"
    with pytest.raises(ValueError, match="fusion_tokens must be one of"):
        VideoTextVisionEncoder(**VISION, fusion_tokens="cls")


def test_itm_score_is_half_the_log_odds_of_a_match_before_and_after_training():
    """A new ITM head starts with opposite rows, so the raw class-1 logit (the official re-ranking score) is half
    the log-odds of "matched"; AdamW with weight decay keeps it so (the loss never sees the rows' sum)."""
    model, _ = small_model(losses=("vtc", "vtm"))
    w, b = model.itm_head.weight, model.itm_head.bias
    assert torch.equal(w[0], -w[1]) and torch.equal(b[0], -b[1]) and w[1].abs().max() > 0
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)
    vt, th = torch.randn(4, 8, 64), torch.randn(4, 6, 64)
    tm = torch.ones(4, 6, dtype=torch.long)
    for _ in range(3):
        loss = model._vtm(vt, th, tm, torch.randn(4, 32), torch.randn(4, 32), torch.arange(4))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (w[0] + w[1]).abs().max() < 1e-6 * (w[1] - w[0]).abs().max()
    model.eval()
    with torch.no_grad():
        p = F.softmax(model.itm_head(model.fuse(vt, th, tm)), dim=-1).double()
        want = 0.5 * torch.log(p[:, 1] / p[:, 0])   # by hand: half the log-odds
        assert torch.allclose(model.itm_scores(vt, th, tm).double(), want, atol=1e-5)


def test_vtm_loss_equals_a_direct_computation():
    model, _ = small_model(losses=("vtc", "vtm"))
    model.eval()
    B, L = 4, 6
    vt = torch.randn(B, 8, 64)
    th = torch.randn(B, L, 64)
    tm = torch.ones(B, L, dtype=torch.long)
    vf, tf = torch.randn(B, 32), torch.randn(B, 32)
    idx = torch.arange(B)
    torch.manual_seed(3)
    loss = model._vtm(vt, th, tm, vf, tf, idx)
    torch.manual_seed(3)   # the same negative draw
    from videomamba.pretrain.contrastive import sample_hard_negatives, similarity

    neg_t, neg_v = sample_hard_negatives(similarity(vf, tf) / model.temp, idx)
    logits = []
    for i in range(B):
        logits.append(model.itm_head(model.fuse(vt[i:i + 1], th[i:i + 1], tm[i:i + 1])))
    for i in range(B):
        logits.append(model.itm_head(model.fuse(vt[neg_v[i]:neg_v[i] + 1], th[i:i + 1], tm[i:i + 1])))
    for i in range(B):
        logits.append(model.itm_head(model.fuse(vt[i:i + 1], th[neg_t[i]:neg_t[i] + 1], tm[neg_t[i]:neg_t[i] + 1])))
    want = F.cross_entropy(torch.cat(logits), torch.tensor([1] * B + [0] * 2 * B))
    assert torch.allclose(loss, want, atol=1e-5)


def test_mlm_loss_equals_full_vocabulary_cross_entropy():
    model, _ = small_model(losses=("vtc", "mlm"))
    model.eval()
    ids = torch.randint(1000, 2000, (3, 8))
    ids[:, 0] = 101
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    ids[0, 6:] = 0
    vt = torch.randn(3, 8, 64)
    torch.manual_seed(5)
    loss = model._mlm(vt, ids, mask)
    torch.manual_seed(5)
    from videomamba.pretrain.contrastive import mlm_mask

    corrupted, labels = mlm_mask(ids, 30522, 103, 0, 101, 0.5)
    h = model.text_encoder(corrupted, mask, encoder_hidden_states=vt, mode="multimodal")
    logits = model.text_encoder.mlm_logits(h)
    want = F.cross_entropy(logits.reshape(-1, 30522), labels.reshape(-1), ignore_index=-100)
    assert torch.allclose(loss, want, atol=1e-5)


def test_forward_losses_backward_and_temperature_clamp():
    model, meta = small_model()
    model.train()
    with torch.no_grad():
        model.temp.fill_(5.0)
    ids = torch.randint(1000, 2000, (4, 6))
    ids[:, 0] = 101
    for T in (4, 1):   # a video batch and an image batch
        out = model(torch.randn(4, 3, T, 32, 32), ids, torch.ones_like(ids), torch.arange(4))
        assert set(out) == {"vtc", "vtm", "mlm", "uta"}
        assert all(torch.isfinite(v) for v in out.values())
        sum(out.values()).backward()
        assert model.temp.item() == pytest.approx(0.5)        # clamped to [0.001, 0.5]
        assert model.vision_encoder.clip_decoder[0].head.weight.grad is not None
        assert model.text_encoder.bert.encoder.layer[2].crossattention.self.key.weight.grad is not None
        assert all(p.grad is None for p in model.clip_teacher.parameters())
        model.zero_grad()
    assert meta["text"]["fusion_layer"] == 2 and meta["vision"]["kwargs"]["embed_dim"] == 64


def test_mean_text_pooling_uses_only_real_tokens():
    model, _ = small_model(losses=("vtc",), text_pool="mean")
    h = torch.randn(2, 5, 64)
    m = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    got = model.pool_text(h, m)
    assert torch.allclose(got[0], h[0, :3].mean(0)) and torch.allclose(got[1], h[1].mean(0))


def test_itm_pool_reads_the_fusion_cls_while_the_vtc_text_feature_stays_the_mean():
    model, meta = small_model(losses=("vtc", "vtm"), text_pool="mean", itm_pool="cls")
    model.eval()
    vt, th = torch.randn(2, 8, 64), torch.randn(2, 5, 64)
    m = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    with torch.no_grad():
        out = model.text_encoder(mode="fusion", hidden_states=th, attention_mask=m, encoder_hidden_states=vt)
        assert torch.allclose(model.fuse(vt, th, m), out[:, 0])                      # the fusion CLS
        assert torch.allclose(model.itm_scores(vt, th, m), model.itm_head(out[:, 0])[:, 1])
        h, pooled = model.encode_text(torch.tensor([[101, 7, 8, 0, 0], [101, 7, 8, 9, 102]]), m)
        assert torch.allclose(pooled[0], h[0, :3].mean(0)) and torch.allclose(pooled[1], h[1].mean(0))
    assert meta["text"]["itm_pool"] == "cls" and video_text_from_meta(meta).itm_pool == "cls"
    old = {**meta, "text": {k: v for k, v in meta["text"].items() if k != "itm_pool"}}   # saved before the option
    assert video_text_from_meta(old).itm_pool == "mean"                                  # follows pool, as it did
    with pytest.raises(ValueError, match="itm_pool must be one of"):
        small_model(losses=("vtc",), itm_pool="max")


def test_cross_init_xavier_draws_only_the_new_cross_attention_queries_and_keys():
    def spread(w):   # (std, max |w|) by hand
        return w.double().std().item(), w.abs().max().item()

    torch.manual_seed(0)
    text = text_encoder_from_config(SMALL_BERT, 1, 32, mlm=False)
    before = {k: v.clone() for k, v in text.state_dict().items()}
    init_cross_attention_(text, "xavier")
    for i in (1, 2):
        ca = text.bert.encoder.layer[i].crossattention.self
        for lin, fan_in in ((ca.query, 64), (ca.key, 32)):
            bound = (6 / (fan_in + 64)) ** 0.5          # xavier-uniform: U(-b, b), b = sqrt(6 / (fan_in + fan_out))
            std, top = spread(lin.weight)
            assert top <= bound and std == pytest.approx(bound / 3 ** 0.5, rel=0.1)
        assert spread(ca.value.weight)[0] == pytest.approx(0.02, rel=0.1)   # values keep BERT's init
    changed = {k for k, v in text.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {f"bert.encoder.layer.{i}.crossattention.self.{n}.weight" for i in (1, 2) for n in ("query", "key")}
    # on the real MiniLM folder: the pretrained weights load over the init, the new queries stay xavier
    from safetensors.torch import load_file

    real = build_text_encoder(None, 4, 128, mlm=False, cross_init="xavier", log=lambda s: None)
    weights = load_file(str(default_text_encoder_dir() / "model.safetensors"))
    key = next(k for k in weights if k.endswith("layer.4.attention.self.query.weight"))
    assert torch.equal(real.bert.encoder.layer[4].attention.self.query.weight, weights[key])
    q = real.bert.encoder.layer[4].crossattention.self.query.weight
    assert spread(q)[0] == pytest.approx((2 / (384 + 384)) ** 0.5, rel=0.1)
    official = build_text_encoder(None, 4, 128, mlm=False, log=lambda s: None)
    assert spread(official.bert.encoder.layer[4].crossattention.self.query.weight)[0] == pytest.approx(0.02, rel=0.1)
    with pytest.raises(ValueError, match="cross_init must be one of"):
        init_cross_attention_(text, "kaiming")


def test_bad_configurations_raise():
    with pytest.raises(ValueError, match="clip_teacher"):
        build_video_text_model({"vision": {"variant": "videomamba_tiny", "kwargs": VISION},
                                "text": {"config": SMALL_BERT, "fusion_layer": 2}}, {"pad": 0, "cls": 101, "mask": 103},
                               None, ("vtc", "uta"))
    with pytest.raises(ValueError, match="variant"):
        build_video_text_model({"vision": {"variant": "videomamba_huge"}}, None, None, ("vtc",))
