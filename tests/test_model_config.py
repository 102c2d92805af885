"""The model configuration: built once from the constructor arguments, held as ``model.config``, saved in every
training checkpoint (``extra.model_config``) and in a model folder, and rebuilding the same model from either.

"The same model" is checked independently of the config code: the rebuilt model has the very same state-dict
keys and shapes, loads the original's weights strictly and gives the same outputs.
"""
import json

import pytest
import torch

import videomamba
from videomamba.models import (MaskedStudentConfig, VideoMambaConfig, VideoMambaPretrain, VisionMamba,
                               config_from_dict, model_from_config)

SMALL = dict(img_size=32, patch_size=8, depth=2, embed_dim=32)


def same_model(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor):
    sa, sb = a.state_dict(), b.state_dict()
    assert {k: tuple(v.shape) for k, v in sa.items()} == {k: tuple(v.shape) for k, v in sb.items()}
    b.load_state_dict(sa, strict=True)
    a.eval(), b.eval()
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


def test_the_constructor_arguments_become_the_config():
    m = VisionMamba(**SMALL, num_classes=5, num_frames=4, kernel_size=2, divide_output=True, global_pool="avg")
    c = m.config
    assert isinstance(c, VideoMambaConfig)
    assert (c.img_size, c.patch_size, c.depth, c.embed_dim, c.num_classes, c.num_frames, c.kernel_size) == \
        (32, 8, 2, 32, 5, 4, 2)
    assert c.divide_output is True and c.global_pool == "avg" and c.architecture is None
    assert m.layers[0].mixer.divide_output is True       # the model is what its config says
    assert m.temporal_pos_embedding.shape[1] == 2         # 4 frames / tubelet 2


def test_a_config_object_builds_the_model_and_kwargs_override_it():
    base = VideoMambaConfig(**SMALL, num_classes=3)
    m = VisionMamba(base, num_classes=7)
    assert m.config.num_classes == 7 and m.head.out_features == 7
    assert base.num_classes == 3                          # the caller's object is not changed


def test_unknown_argument_names_the_key():
    with pytest.raises(TypeError, match="unexpected argument 'num_layers'"):
        VisionMamba(**SMALL, num_layers=3)
    with pytest.raises(ValueError, match="checkpoint.pth: .*'colour'"):
        VideoMambaConfig.from_dict({"model_type": "videomamba", "colour": 1}, source="checkpoint.pth")
    with pytest.raises(ValueError, match="model_type 'videomamba' is not 'videomamba_masked_student'"):
        MaskedStudentConfig.from_dict({"model_type": "videomamba"})


def test_json_round_trip_keeps_every_field():
    m = VisionMamba(**SMALL, num_classes=4, num_frames=4, ssm_cfg={"d_state": 8}, distill_dim=16, stride=None,
                    dt_init="mamba", inference_chunk=64)
    data = json.loads(json.dumps(m.config.to_dict()))
    assert data["model_type"] == "videomamba"
    back = config_from_dict(data)
    assert back == m.config
    # every dataclass field is in the dict (a field left out of to_dict would come back as its default)
    assert set(data) == {"model_type"} | set(m.config.fields())


@pytest.mark.parametrize("kind", ["image", "video", "student", "registered"])
def test_model_from_config_rebuilds_the_same_model(kind):
    torch.manual_seed(0)
    if kind == "image":
        m, x = VisionMamba(**SMALL, num_classes=3, divide_output=True), torch.randn(1, 3, 32, 32)
    elif kind == "video":
        m, x = VisionMamba(**SMALL, num_classes=3, num_frames=4, global_pool="avg"), torch.randn(1, 3, 4, 32, 32)
    elif kind == "student":
        m, x = VideoMambaPretrain(**SMALL, num_frames=4, clip_output_dim=16), None
    else:
        m, x = videomamba.create_model("videomamba_tiny", img_size=32, depth=2, num_classes=2), torch.randn(1, 3, 32, 32)
        assert m.config.architecture == "videomamba_tiny"
    rebuilt = model_from_config(json.loads(json.dumps(m.config.to_dict())))
    assert type(rebuilt) is type(m) and rebuilt.config == m.config
    if x is None:
        x = torch.randn(1, 3, 4, 32, 32)
        mask = torch.zeros(1, 1 + 4 * 16, dtype=torch.bool)
        mask[:, 1::2] = True
        sa = m.state_dict()
        rebuilt.load_state_dict(sa, strict=True)
        m.eval(), rebuilt.eval()
        with torch.no_grad():
            torch.testing.assert_close(m(x, mask), rebuilt(x, mask), rtol=0, atol=0)
    else:
        same_model(m, rebuilt, x)


def test_the_config_follows_the_models_setters():
    m = VisionMamba(**SMALL, num_classes=3)
    m.reset_classifier(9, global_pool="avg")
    m.set_inference_chunk(256)
    m.set_recompute("none")
    m.set_grad_checkpointing(True)
    c = m.config
    assert (c.num_classes, c.global_pool, c.inference_chunk, c.recompute, c.use_checkpoint, c.checkpoint_num) == \
        (9, "avg", 256, "none", True, 2)
    same_model(m, model_from_config(c.to_dict()), torch.randn(1, 3, 32, 32))


def test_a_student_has_no_head_whatever_it_is_given():
    s = VideoMambaPretrain(**SMALL, num_frames=4, num_classes=10)
    assert s.config.num_classes == 0 and isinstance(s.head, torch.nn.Identity)
    assert MaskedStudentConfig(num_classes=5).num_classes == 0


def test_the_model_folder_dumps_the_config_and_rebuilds_it(tmp_path):
    torch.manual_seed(1)
    m = VisionMamba(**SMALL, num_classes=3, num_frames=4, divide_output=True, norm_epsilon=1e-6)
    folder = m.save_pretrained(tmp_path / "m")
    args = json.loads((folder / "config.json").read_text())["model_args"]
    # written as the differences from what the architecture sets by itself
    assert args["divide_output"] is True and args["norm_epsilon"] == 1e-6 and args["embed_dim"] == 32
    assert "rms_norm" not in args and "drop_rate" not in args
    loaded = videomamba.from_pretrained(folder)
    for name in ("img_size", "patch_size", "depth", "embed_dim", "num_classes", "num_frames", "divide_output",
                 "norm_epsilon", "global_pool", "kernel_size"):
        assert getattr(loaded.config, name) == getattr(m.config, name), name
    same_model(m, loaded, torch.randn(1, 3, 4, 32, 32))
