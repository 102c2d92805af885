"""Model folders (videomamba/checkpoint/model_folder.py) keep every option: the backbone options the weights do
not show (``norm_epsilon``, ``divide_output``, ``global_pool``), ``source``, label names (a list, or timm's
``{"0": name}`` object), and every preprocessing field; the expected ``config.json`` contents are written out
here by hand, and the loaded model is checked module by module (each norm's eps, each mixer's flag)."""
import json

import pytest
import timm
import torch

import videomamba
from videomamba.checkpoint.model_folder import Preprocessing, read_folder_config

OPTIONS = dict(norm_epsilon=1e-2, divide_output=True, global_pool="avg")
SIZES = dict(num_frames=4, img_size=32, depth=2, embed_dim=64, num_classes=2)
PRE = dict(num_frames=4, input_size=32, short_side_size=40, mean=[0.1, 0.2, 0.3], std=[0.4, 0.5, 0.6],
           sampler="dense", sampling_rate=2, num_views=3, num_crops=1)


def model_with(**options):
    torch.manual_seed(0)
    m = videomamba.create_model("videomamba_tiny", **SIZES, **options).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m


def clip():
    return torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(1))


def norms(model):
    return [m for m in model.modules() if hasattr(m, "eps") and hasattr(m, "weight")]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = model_with(**OPTIONS)
    folder = tmp_path_factory.mktemp("mf") / "m"
    model.save_pretrained(folder, label_names=["cat", "dog"], preprocessing=Preprocessing(**PRE), source="hand")
    return model, folder


def test_config_json_holds_every_option(saved):
    _, folder = saved
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["architecture"] == "videomamba_tiny"
    assert cfg["model_args"] == {"num_frames": 4, "img_size": 32, "depth": 2, "embed_dim": 64, "num_classes": 2,
                                 "norm_epsilon": 1e-2, "divide_output": True, "global_pool": "avg"}
    assert cfg["global_pool"] == "avg"             # timm's own key, which timm's local-dir loader reads
    assert cfg["num_classes"] == 2 and cfg["num_features"] == 64
    assert cfg["label_names"] == ["cat", "dog"]
    assert cfg["source"] == "hand"
    assert cfg["preprocessing"] == PRE
    assert cfg["pretrained_cfg"]["mean"] == [0.1, 0.2, 0.3] and cfg["pretrained_cfg"]["std"] == [0.4, 0.5, 0.6]
    assert cfg["pretrained_cfg"]["input_size"] == [3, 32, 32]


def test_loaded_model_has_every_option(saved):
    model, folder = saved
    loaded = videomamba.from_pretrained(folder)
    assert [n.eps for n in norms(loaded)] == [1e-2] * len(norms(model)) and len(norms(model)) == 3   # 2 blocks + final
    assert [layer.mixer.divide_output for layer in loaded.layers] == [True, True]
    assert loaded.global_pool == "avg"
    assert loaded.config.norm_epsilon == 1e-2 and loaded.config.divide_output is True
    assert loaded.label_names == ["cat", "dog"]
    assert loaded.preprocessing == Preprocessing(**PRE)
    assert loaded.pretrained_source == str(folder)
    x = clip()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


@pytest.mark.parametrize("option,default", [("norm_epsilon", 1e-5), ("divide_output", False), ("global_pool", "token")])
def test_each_option_changes_the_logits(saved, option, default):
    # the same weights with one option at its default give other logits: the equality above means something
    model, folder = saved
    other = videomamba.from_pretrained(folder, **{option: default})
    x = clip()
    with torch.no_grad():
        assert not torch.allclose(other(x), model(x), atol=1e-6)


def test_timm_local_dir_builds_the_same_model(saved):
    model, folder = saved
    via_timm = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    assert via_timm.global_pool == "avg" and [n.eps for n in norms(via_timm)] == [1e-2] * 3
    x = clip()
    with torch.no_grad():
        assert torch.equal(via_timm(x), model(x))


def test_saving_the_loaded_model_again_keeps_everything(saved, tmp_path):
    _, folder = saved
    first = json.loads((folder / "config.json").read_text())
    again = json.loads((videomamba.from_pretrained(folder).save_pretrained(tmp_path / "again") / "config.json").read_text())
    assert again["source"] == str(folder)   # the weights now come from the folder they were loaded from
    assert {k: v for k, v in again.items() if k != "source"} == {k: v for k, v in first.items() if k != "source"}
    # an explicit source wins over the model's own
    third = videomamba.from_pretrained(folder).save_pretrained(tmp_path / "third", source="elsewhere")
    assert json.loads((third / "config.json").read_text())["source"] == "elsewhere"


def test_label_names_as_an_index_object(saved, tmp_path):
    model, folder = saved
    import shutil

    copy = tmp_path / "dict"
    shutil.copytree(folder, copy)
    cfg = json.loads((copy / "config.json").read_text())
    cfg["label_names"] = {"1": "dog", "0": "cat"}   # timm's {index: name}, in any order
    (copy / "config.json").write_text(json.dumps(cfg))
    assert read_folder_config(copy)["label_names"] == ["cat", "dog"]
    assert videomamba.from_pretrained(copy).label_names == ["cat", "dog"]


def test_a_plain_timm_folder_takes_its_data_config(saved, tmp_path):
    import shutil

    _, folder = saved
    copy = tmp_path / "timm"
    shutil.copytree(folder, copy)
    cfg = json.loads((copy / "config.json").read_text())
    del cfg["preprocessing"]
    (copy / "config.json").write_text(json.dumps(cfg))
    pre = read_folder_config(copy)["preprocessing"]
    # mean/std and size from pretrained_cfg, frames from model_args, the rest the documented K400 defaults
    assert pre == Preprocessing(num_frames=4, input_size=32, short_side_size=32, mean=(0.1, 0.2, 0.3),
                                std=(0.4, 0.5, 0.6), sampler="sparse", sampling_rate=4, num_views=4, num_crops=3)


def test_preprocessing_round_trips_every_field():
    p = Preprocessing(**PRE)
    assert p.to_dict() == PRE
    assert Preprocessing.from_dict(PRE) == p
    assert Preprocessing.from_dict({**PRE, "unknown_key": 1}) == p   # unknown keys are ignored
    image = Preprocessing.from_dict({"input_size": 32})
    assert (image.num_frames, image.short_side_size, image.mean, image.std) == (None, 32, (0.485, 0.456, 0.406),
                                                                               (0.229, 0.224, 0.225))
    assert Preprocessing.from_dict({**PRE, "input_size": [32, 32]}).input_size == 32   # a square (H, W) size
