"""Bad checkpoint files give one clear line (CheckpointError), weights of another architecture are refused,
and infer_model_config rebuilds the model a state dict came from."""
import argparse
import fractions
import pickle
import sys
import types
import warnings

import numpy as np
import pytest
import torch

import videomamba
from videomamba import VisionMamba, load_checkpoint, save_checkpoint
from videomamba.checkpoint import (CheckpointError, CheckpointKeyError, CheckpointMismatchError,
                                   CheckpointNotFoundError, LoadReport, extract_state_dict, infer_model_config,
                                   read_checkpoint)

from conftest import load_official


def small(video=True, img_size=32, num_frames=4, num_classes=5, depth=2, embed_dim=32, **kw):
    return VisionMamba(img_size=img_size, depth=depth, embed_dim=embed_dim, num_classes=num_classes,
                       num_frames=num_frames if video else None, **kw).eval()


def assert_one_line(err: BaseException, path, *words):
    msg = str(err)
    assert "\n" not in msg and "\r" not in msg, msg
    assert str(path) in msg, msg
    assert msg.startswith(f"{path}: "), msg
    for w in words:
        assert w.lower() in msg.lower(), f"{w!r} not in {msg!r}"


@pytest.fixture
def pth(tmp_path):
    """A real checkpoint of a small model, in the official training container."""
    path = tmp_path / "ck.pth"
    torch.save({"model": small().state_dict(), "epoch": 3, "args": argparse.Namespace(lr=1e-3)}, path)
    return path


# --------------------------------------------------------------------------- unreadable files
def test_missing_file_is_checkpoint_and_file_not_found_error(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(CheckpointNotFoundError) as e:
        read_checkpoint(path)
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, CheckpointError)
    assert isinstance(e.value, ValueError)
    assert_one_line(e.value, path, "not found")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(small(), path)
    with pytest.raises(CheckpointNotFoundError) as e:
        read_checkpoint(tmp_path)
    assert_one_line(e.value, tmp_path, "directory")


@pytest.mark.parametrize("keep", [0.05, 0.5, 0.95, -16])
def test_truncated_pth(pth, keep):
    data = pth.read_bytes()
    n = len(data) + keep if keep < 0 else int(len(data) * keep)
    pth.write_bytes(data[:n])
    for wo in (None, True, False):
        with pytest.raises(CheckpointError) as e:
            read_checkpoint(pth, weights_only=wo)
        assert_one_line(e.value, pth, "truncated or corrupt", "torch checkpoint")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(small(), pth)
    assert_one_line(e.value, pth, "truncated")


def test_corrupt_pickle_inside_a_whole_zip(pth):
    data = bytearray(pth.read_bytes())
    data[60:400] = bytes(340)  # the head of the first member (data.pkl); the zip's directory stays intact
    pth.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(pth)
    assert_one_line(e.value, pth, "corrupt")


def test_legacy_format_loads_and_truncated_legacy_is_named(tmp_path):
    src = small()
    path = tmp_path / "legacy.pth"
    torch.save(src.state_dict(), path, _use_new_zipfile_serialization=False)
    dst = small()
    assert load_checkpoint(dst, path, strict=True).clean
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(path)
    assert_one_line(e.value, path, "truncated or corrupt", "legacy-format")


def _write_mp4(path):
    av = pytest.importorskip("av")
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=8)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for i in range(4):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 40 * i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


@pytest.mark.parametrize("content,words", [
    ("text", ("not a torch", "text file", "hello")),
    ("digits", ("not a torch", "text file")),        # torch itself says "invalid literal for int()"-like things
    ("random", ("not a torch", "unrecognised")),
    ("empty", ("not a checkpoint", "empty")),
    ("lfs", ("git lfs",)),
    ("html", ("html",)),
    ("mp4", ("not a torch", "mp4")),
    ("npz", ("not a torch checkpoint", "data.pkl")),
    ("pickle", ("not a torch", "pickle")),
])
def test_files_that_are_not_checkpoints(tmp_path, content, words):
    path = tmp_path / "weights.pth"
    if content == "text":
        path.write_text("hello, these are not weights\n")
    elif content == "digits":
        path.write_text("1234 5678\n")
    elif content == "random":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif content == "empty":
        path.write_bytes(b"")
    elif content == "lfs":
        path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0123abcd\nsize 28000000\n")
    elif content == "html":
        path.write_text("<!DOCTYPE html>\n<html><body>Too many requests</body></html>\n")
    elif content == "mp4":
        _write_mp4(path)
    elif content == "npz":
        with open(path, "wb") as f:
            np.savez(f, a=np.zeros(3))
    elif content == "pickle":
        with open(path, "wb") as f:
            pickle.dump({"a": [1, 2, 3]}, f, protocol=2)
    for wo in (None, True, False):
        with pytest.raises(CheckpointError) as e:
            read_checkpoint(path, weights_only=wo)
        assert_one_line(e.value, path, *words)
    with pytest.raises(CheckpointError):
        load_checkpoint(small(), path)
    with pytest.raises(CheckpointError):
        videomamba.create_model("videomamba_tiny", img_size=32, num_frames=4, num_classes=5, depth=2,
                                embed_dim=32, checkpoint_path=path)


@pytest.mark.parametrize("cut", ["data", "header", "tiny", "garbage"])
def test_truncated_or_corrupt_safetensors(tmp_path, cut):
    path = save_checkpoint(small(), tmp_path / "ck.safetensors")
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    path.write_bytes({"data": data[:len(data) - 100], "header": data[:8 + n // 2], "tiny": data[:5],
                      "garbage": data[:8] + b"#" * n + data[8 + n:]}[cut])
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(path)
    assert_one_line(e.value, path, "truncated or corrupt safetensors")
    with pytest.raises(CheckpointError):
        load_checkpoint(small(), path)


def test_safetensors_suffix_on_another_kind_of_file(tmp_path):
    path = tmp_path / "ck.safetensors"
    path.write_text("not really\n")
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(path)
    assert_one_line(e.value, path, "not a safetensors file", "text")
    # A torch zip under the wrong suffix is still read (the content decides).
    torch.save(small().state_dict(), path)
    assert set(read_checkpoint(path)) == set(small().state_dict())


def test_python_objects_refused_with_weights_only(tmp_path):
    path = tmp_path / "objects.pth"
    sd = small().state_dict()
    torch.save({"model": sd, "ratio": fractions.Fraction(1, 3)}, path)
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(path, weights_only=True)
    assert_one_line(e.value, path, "beyond tensors", "fractions.Fraction", "weights_only=True")
    with pytest.raises(CheckpointError):
        load_checkpoint(small(), path, weights_only=True)
    # The default warns and unpickles; weights_only=False just unpickles.
    with pytest.warns(UserWarning, match="beyond tensors"):
        assert read_checkpoint(path)["ratio"] == fractions.Fraction(1, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_checkpoint(path, weights_only=False)["ratio"] == fractions.Fraction(1, 3)


def test_pickled_class_that_no_longer_exists(tmp_path):
    mod = types.ModuleType("vm_gone_module")

    class Gone:
        pass

    Gone.__module__, Gone.__qualname__ = mod.__name__, "Gone"
    mod.Gone = Gone
    sys.modules[mod.__name__] = mod
    path = tmp_path / "gone.pth"
    try:
        torch.save({"model": small().state_dict(), "obj": Gone()}, path)
    finally:
        del sys.modules[mod.__name__]
    with pytest.raises(CheckpointError) as e, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        read_checkpoint(path)
    assert_one_line(e.value, path, "cannot be rebuilt", "vm_gone_module")


def test_container_errors_name_the_file(tmp_path):
    path = tmp_path / "meta.pth"
    torch.save({"epoch": 3, "args": "x"}, path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(small(), path)
    assert isinstance(e.value, ValueError)
    assert_one_line(e.value, path, "no tensors", "epoch")
    torch.save({"model": {"a": 1}, "epoch": 2}, path)
    with pytest.raises(CheckpointKeyError) as e:
        load_checkpoint(small(), path, model_key="ema")
    assert isinstance(e.value, KeyError)
    assert_one_line(e.value, path, "'ema'", "top-level keys")
    torch.save([torch.zeros(2)], path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(small(), path)
    assert isinstance(e.value, TypeError)
    assert_one_line(e.value, path, "expected a dict")
    with pytest.raises(CheckpointError, match="^state_dict: no tensors"):
        extract_state_dict({"epoch": 1}, source="state_dict")


def test_errors_survive_pickling(tmp_path):
    for err in (CheckpointError(tmp_path / "a.pth", "bad\nthing"), CheckpointNotFoundError("b.pth"),
                CheckpointMismatchError("c.pth", "depth 3 in the checkpoint, 2 in the model", report=LoadReport())):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and str(back) == str(err) and "\n" not in str(back)
        assert back.path == err.path and back.problem == err.problem
    assert pickle.loads(pickle.dumps(err)).report == LoadReport()


# --------------------------------------------------------------------------- another architecture
def _save(tmp_path, sd, name="ck.pth"):
    path = tmp_path / name
    torch.save({"model": sd, "epoch": 1}, path)
    return path


def _raises_mismatch(model, path, *words, strict=False):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointMismatchError) as e:
        load_checkpoint(model, path, strict=strict)
    assert isinstance(e.value, CheckpointError) and isinstance(e.value, RuntimeError)
    assert_one_line(e.value, path, *words)
    assert isinstance(e.value.report, LoadReport)
    for k, v in model.state_dict().items():  # refused before anything was copied
        assert torch.equal(v, before[k]), k
    return e.value


@pytest.mark.parametrize("strict", [False, True])
def test_weights_of_another_architecture(tmp_path, strict):
    bert = {f"encoder.layer.{i}.attention.self.query.weight": torch.zeros(8, 8) for i in range(3)}
    path = _save(tmp_path, bert, "bert.pth")
    _raises_mismatch(small(), path, "another architecture", "0 of 40 model tensors match",
                     "'encoder.layer.0.attention.self.query.weight'", strict=strict)
    # A ViT shares cls_token/pos_embed/patch_embed names and shapes, but none of the blocks.
    vit = {"cls_token": torch.zeros(1, 1, 32), "pos_embed": torch.zeros(1, 5, 32),
           "patch_embed.proj.weight": torch.zeros(32, 3, 1, 16, 16), "patch_embed.proj.bias": torch.zeros(32),
           "blocks.0.attn.qkv.weight": torch.zeros(96, 32), "head.weight": torch.zeros(5, 32)}
    path = _save(tmp_path, vit, "vit.pth")
    _raises_mismatch(small(), path, "another architecture", "4 of 40", "blocks.0.attn.qkv.weight", strict=strict)
    path = _save(tmp_path, {"head.weight": torch.zeros(5, 32)}, "head_only.pth")
    _raises_mismatch(small(), path, "another architecture", strict=strict)


def test_tiny_checkpoint_into_small_model(tmp_path):
    path = _save(tmp_path, small(embed_dim=192, depth=1).state_dict())
    err = _raises_mismatch(small(embed_dim=384, depth=1), path, "embed dim 192 in the checkpoint", "384 in the model",
                           "videomamba_tiny?", "videomamba_small?")
    assert err.problem.startswith("embed dim")


@pytest.mark.parametrize("what,src,words", [
    ("depth", dict(depth=3), ("depth 3 in the checkpoint, 2 in the model",)),
    ("d_state", dict(ssm_cfg={"d_state": 8}), ("tensor shapes disagree", "layers.0.mixer.A_log", "more")),
    ("patch", dict(img_size=32, patch_size=8), ("tensor shapes disagree", "patch_embed.proj.weight")),
    ("channels", dict(in_chans=1), ("patch_embed.proj.weight",)),
])
def test_other_width_or_depth(tmp_path, what, src, words):
    path = _save(tmp_path, small(**src).state_dict())
    _raises_mismatch(small(), path, *words)


def test_same_architecture_other_sizes_still_load(tmp_path):
    """The rule leaves alone what load_checkpoint adapts: image->video, grid, frames, head, UMT extras."""
    report = load_checkpoint(small(img_size=64, num_frames=8, num_classes=3), small(video=False).state_dict())
    assert report.resized and set(report.dropped) == {"head.weight", "head.bias"}
    sd = {f"vision_encoder.{k}": v for k, v in small(num_classes=0).state_dict().items()}
    sd["text_encoder.bert.embeddings.word_embeddings.weight"] = torch.zeros(3, 4)
    assert load_checkpoint(small(), sd).prefixes_stripped == ["vision_encoder."]


def test_strict_failure_is_one_line_with_the_full_report(tmp_path):
    path = _save(tmp_path, small(num_classes=400).state_dict())
    err = _raises_mismatch(small(num_classes=10), path, "strict load failed",
                           "the checkpoint holds 400 classes, the model 10 (head.weight: (400,32) vs (10,32))",
                           strict=True)
    assert ".report" not in str(err)   # the line names the disagreement itself
    assert set(err.report.dropped) == {"head.weight", "head.bias"}
    assert "head.weight" in str(err.report) and "\n" in str(err.report)
    # non-strict: the head is dropped, the rest loads
    assert load_checkpoint(small(num_classes=10), path).dropped


def test_strict_failure_from_create_model(tmp_path):
    path = save_checkpoint(small(num_classes=7), tmp_path / "ck.safetensors")
    with pytest.raises(RuntimeError) as e:
        videomamba.create_model("videomamba_tiny", img_size=32, num_frames=4, depth=2, embed_dim=32,
                                num_classes=5, checkpoint_path=path, strict=True)
    assert isinstance(e.value, CheckpointError)
    assert_one_line(e.value, path, "strict load failed", "head.weight")


# --------------------------------------------------------------------------- infer_model_config
def assert_same_layout(a: torch.nn.Module, b: torch.nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].shape == sb[k].shape, k


@pytest.mark.parametrize("kind", ["tiny_k400", "tiny_image", "custom", "tubelet_ln_distill"])
def test_infer_rebuilds_the_model(kind):
    if kind == "tiny_k400":
        src = videomamba.create_model("videomamba_tiny", num_frames=8, num_classes=400)
        expect = dict(name="videomamba_tiny", embed_dim=192, depth=24, patch_size=16, img_size=224, num_frames=8,
                      num_classes=400, kernel_size=1)
    elif kind == "tiny_image":
        src = videomamba.create_model("videomamba_tiny", img_size=128, num_classes=1000)
        expect = dict(name="videomamba_tiny", embed_dim=192, depth=24, patch_size=16, img_size=128, num_frames=None,
                      num_classes=1000)
    elif kind == "custom":
        src = VisionMamba(img_size=64, patch_size=16, depth=4, embed_dim=128, num_frames=8, num_classes=7)
        expect = dict(name="videomamba_tiny", embed_dim=128, depth=4, patch_size=16, img_size=64, num_frames=8,
                      num_classes=7, kernel_size=1)
    else:
        src = VisionMamba(img_size=48, patch_size=8, depth=2, embed_dim=40, num_frames=8, kernel_size=2, in_chans=1,
                          num_classes=0, rms_norm=False, distill_dim=16,
                          ssm_cfg={"d_state": 8, "expand": 1, "d_conv": 3, "dt_rank": 5})
        expect = dict(embed_dim=40, depth=2, patch_size=8, img_size=48, num_frames=8, num_classes=0, kernel_size=2,
                      in_chans=1, rms_norm=False, distill_dim=16,
                      ssm_cfg={"d_state": 8, "expand": 1, "d_conv": 3, "dt_rank": 5})
    cfg = infer_model_config(src.state_dict())
    for k, v in expect.items():
        assert cfg[k] == v, (k, cfg)
    if expect["num_frames"] is None:
        assert "kernel_size" not in cfg
    rebuilt = videomamba.create_model(**cfg)
    assert_same_layout(src, rebuilt)
    assert load_checkpoint(rebuilt, src.state_dict(), strict=True).clean


def test_infer_on_official_layouts():
    for name in ("video_depth2_dim96_f4_64px", "image_depth2_dim96_64px"):
        fx = load_official(name)
        official = VisionMamba(**fx["kwargs"])
        for sd in (fx["state_dict"], {"model": fx["state_dict"], "epoch": 3},
                   {"module": {f"module.{k}": v for k, v in fx["state_dict"].items()}}):
            cfg = infer_model_config(sd)
            assert cfg["num_frames"] == fx["kwargs"].get("num_frames")
            assert_same_layout(official, videomamba.create_model(**cfg))
    # UMT video-text container: only the vision encoder counts; masked-pretrain student: no head.
    sd = small(num_classes=0).state_dict()
    umt = {"model": {**{f"vision_encoder.{k}": v for k, v in sd.items()},
                     "text_encoder.bert.embeddings.word_embeddings.weight": torch.zeros(3, 4), "temp": torch.tensor(.07)}}
    assert infer_model_config(umt)["num_classes"] == 0
    pre = {k: v for k, v in sd.items()}
    pre["norm.weight"] = pre.pop("norm_f.weight")
    pre["clip_decoder.0.head.weight"] = torch.zeros(512, 32)
    cfg = infer_model_config(pre)
    assert (cfg["embed_dim"], cfg["depth"], cfg["num_frames"], cfg["num_classes"]) == (32, 2, 4, 0)


def test_infer_names_the_registered_variants():
    def fake(dim, depth, classes=400, frames=8):
        sd = {"patch_embed.proj.weight": torch.empty(dim, 3, 1, 16, 16, device="meta"),
              "pos_embed": torch.empty(1, 197, dim, device="meta"),
              "temporal_pos_embedding": torch.empty(1, frames, dim, device="meta"),
              "head.weight": torch.empty(classes, dim, device="meta")}
        sd.update({f"layers.{i}.norm.weight": torch.empty(dim, device="meta") for i in range(depth)})
        return sd
    assert infer_model_config(fake(192, 24))["name"] == "videomamba_tiny"
    assert infer_model_config(fake(384, 24))["name"] == "videomamba_small"
    assert infer_model_config(fake(576, 32, frames=16))["name"] == "videomamba_middle"
    assert infer_model_config(fake(576, 32, frames=16))["num_frames"] == 16
    assert infer_model_config(fake(768, 24))["name"] == "videomamba_base"
    odd = infer_model_config(fake(576, 24))  # middle width, tiny depth: explicit sizes win
    assert (odd["name"], odd["embed_dim"], odd["depth"]) == ("videomamba_tiny", 576, 24)


def test_infer_from_a_file_and_load_strictly(tmp_path):
    src = VisionMamba(img_size=64, patch_size=16, depth=4, embed_dim=128, num_frames=8, num_classes=7)
    path = tmp_path / "run" / "checkpoint-best.pth"
    path.parent.mkdir()
    torch.save({"model": src.state_dict(), "epoch": 9, "args": argparse.Namespace(model="custom")}, path)
    cfg = infer_model_config(read_checkpoint(path), source=str(path))
    model = videomamba.create_model(**cfg, checkpoint_path=path, strict=True)
    assert model.load_report.clean
    for k, v in src.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


def test_infer_errors():
    src = VisionMamba(img_size=(32, 48), depth=1, embed_dim=32, num_classes=2)
    with pytest.raises(CheckpointError) as e:
        infer_model_config(src.state_dict(), source="ck.pth")
    assert_one_line(e.value, "ck.pth", "not a square grid", "img_size")
    with pytest.raises(CheckpointError) as e:
        infer_model_config({"blocks.0.attn.qkv.weight": torch.zeros(3, 3)}, source="vit.pth")
    assert_one_line(e.value, "vit.pth", "not a VideoMamba state dict", "blocks.0.attn.qkv.weight")
