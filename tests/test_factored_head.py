"""The factored class head (model.head_factors): its logits and gradients against a by-hand computation, its
checkpoints folded into a plain head when loaded, its class-factors files, and a video_sm run with it."""
import json

import pytest
import torch
from torch import nn

from videomamba.modules.factored_head import FactoredHead

FACTORS = {"digit": [0, 0, 0, 1, 1, 1, 2, 2, 2, 2], "motion": [0, 1, 2, 0, 1, 2, 0, 1, 2, 3]}   # 10 classes


def _head(seed=0, dim=5):
    torch.manual_seed(seed)
    head = FactoredHead(nn.Linear(dim, 10), FACTORS).double()
    for p in head.parameters():
        nn.init.normal_(p, std=1.0)   # away from the near-zero init, so every term shows
    return head


def _by_hand(head, x):
    """logit_c = w_c.x + b_c + sum over factors k of (v_{k, f_k(c)}.x + a_{k, f_k(c)}), one class at a time."""
    out = torch.zeros(x.shape[0], 10, dtype=torch.float64)
    for n in range(x.shape[0]):
        for c in range(10):
            s = float(head.base.weight[c] @ x[n] + head.base.bias[c])
            for name, labels in FACTORS.items():
                rows = head.factors[name]
                s += float(rows.weight[labels[c]] @ x[n] + rows.bias[labels[c]])
            out[n, c] = s
    return out


def test_logits_are_the_class_row_plus_each_factors_row():
    head = _head()
    x = torch.randn(3, 5, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(head(x), _by_hand(head, x), rtol=0, atol=1e-12)
        torch.testing.assert_close(head.fold()(x), _by_hand(head, x), rtol=0, atol=1e-12)


def test_a_factor_row_learns_from_every_class_that_shares_its_label():
    head = _head(1)
    x = torch.randn(4, 5, dtype=torch.float64)
    target = torch.tensor([0, 4, 7, 9])
    nn.functional.cross_entropy(head(x), target).backward()
    base = head.base.weight.grad
    for name, labels in FACTORS.items():
        for label in range(max(labels) + 1):
            # the row of a factor label gets the sum of the class rows' gradients of the classes that share it
            want = sum(base[c] for c in range(10) if labels[c] == label)
            torch.testing.assert_close(head.factors[name].weight.grad[label], want, rtol=0, atol=1e-12)


def test_the_factors_must_give_every_class_a_label():
    with pytest.raises(ValueError, match="'motion' gives 3 labels for 10 classes"):
        FactoredHead(nn.Linear(4, 10), {"motion": [0, 1, 2]})


def _model(num_classes=10):
    import videomamba

    return videomamba.create_model("videomamba_tiny", depth=2, embed_dim=32, num_classes=num_classes, img_size=32,
                                   patch_size=16, num_frames=2).eval()


def test_a_factored_checkpoint_loads_into_a_plain_head_with_the_same_logits(tmp_path):
    from videomamba.checkpoint import load_checkpoint
    from videomamba.checkpoint.infer import infer_model_config

    torch.manual_seed(0)
    trained = _model()
    trained.head = FactoredHead(trained.head, FACTORS)
    for p in trained.head.parameters():
        nn.init.normal_(p, std=0.5)
    x = torch.randn(2, 3, 2, 32, 32)
    with torch.no_grad():
        features = trained.forward_head(trained.forward_features(x), pre_logits=True).double()
        want = _by_hand(trained.head.double(), features)
    trained.float()
    path = tmp_path / "ckpt.pth"
    torch.save({"model": trained.state_dict()}, path)
    plain = _model()
    report = load_checkpoint(plain, path, strict=True, verbose=False)
    assert any("folded" in n for n in report.notes)
    with torch.no_grad():
        torch.testing.assert_close(plain(x).double(), want, rtol=1e-5, atol=1e-5)
    assert infer_model_config(torch.load(path, weights_only=True))["num_classes"] == 10


def test_class_factors_files_are_checked(tmp_path):
    from videomamba.data.errors import DataError
    from videomamba.data.video_classification import read_class_factors

    f = tmp_path / "factors.json"
    f.write_text(json.dumps(FACTORS))
    assert read_class_factors(f, 10) == FACTORS
    for content, message in ((json.dumps({"verb": [0, 1]}), "factor 'verb': expected a list of 10 labels "
                                                            r"\(model.num_classes\), got 2 labels"),
                             (json.dumps({"verb": [0] * 9 + [-1]}), "labels must be ints >= 0, got -1"),
                             ("[1, 2]", "expected a JSON object"),
                             ("{", "not JSON")):
        f.write_text(content)
        with pytest.raises(DataError, match=f"^{f}: .*{message}"):
            read_class_factors(f, 10)
    with pytest.raises(DataError, match="missing.json: class-factors file not found"):
        read_class_factors(tmp_path / "missing.json", 10)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_video_run_trains_the_factored_head_and_its_best_checkpoint_is_a_plain_model(tmp_path):
    pytest.importorskip("av")
    from video_sm.finetune import main
    from videomamba.checkpoint import load_checkpoint
    from videomamba.data.moving_digits import make_group_variant

    root = tmp_path / "md"
    factors = json.loads((make_group_variant(root) / "class_factors.json").read_text())
    run = tmp_path / "run"
    small = ["model.kwargs.depth=2", "model.kwargs.embed_dim=32", "data.limit_videos=32", "data.batch_size=8",
             "data.eval_batch_size=32", "train.epochs=1", f"data.root={root}"]
    res = main(["--config", "configs/video_sm/moving_digits_groups.yaml", "--no-progress", "--opts",
                f"output_dir={run}", *small])
    state = torch.load(run / "checkpoint-best.pth", weights_only=False)["model"]
    assert state["head.factors.motion.index"].tolist() == factors["motion"]
    # --eval builds the factored head again and scores the same
    again = main(["--config", "configs/video_sm/moving_digits_groups.yaml", "--no-progress", "--eval", "--checkpoint",
                  str(run / "checkpoint-best.pth"), "--opts", f"output_dir={tmp_path / 'ev'}", *small])
    assert again["acc1"] == res["acc1"]
    # a plain model of the same shape loads it strictly (the head folded)
    import videomamba

    plain = videomamba.create_model("videomamba_tiny", depth=2, embed_dim=32, num_classes=80, img_size=64,
                                    patch_size=16, num_frames=8, dt_init="mamba", global_pool="token")
    load_checkpoint(plain, run / "checkpoint-best.pth", strict=True, verbose=False)


def test_an_incomplete_factored_head_is_a_one_line_checkpoint_error(tmp_path):
    from videomamba.checkpoint import load_checkpoint
    from videomamba.utils.checkpoint_io import CheckpointError

    trained = _model()
    trained.head = FactoredHead(trained.head, FACTORS)
    state = trained.state_dict()
    del state["head.factors.motion.index"]   # e.g. saved by code that kept the index out of the state dict
    path = tmp_path / "ckpt.pth"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError, match=f"^{path}: a factored head without head.factors.motion.index$"):
        load_checkpoint(_model(), path, verbose=False)
    # the reader of model folders and `predict` (no model to load into) says the same
    from videomamba.checkpoint.infer import normalise_state_dict

    with pytest.raises(CheckpointError, match=f"^{path}: a factored head without head.factors.motion.index$"):
        normalise_state_dict(state, source=str(path))
