"""The task-agnostic run: ``fit()`` returns the final evaluation (the task's whole dict, nested parts included),
an evaluation-only run evaluates given weights, ``write_results`` writes ``results.json``, and the run saves the
model's own config in its checkpoints. The task here is a toy one written in the test (a linear classifier and
an evaluation that sums by hand), so nothing of the classification code is involved."""
import json

import pytest
import torch

from videomamba.engine import TrainingRun, load_config
from videomamba.engine.train_state import LATEST
from videomamba.utils.dist import DistInfo

CONFIG = """seed: 0
output_dir: {out}
data:
  batch_size: 4
train:
  epochs: 2
  lr: 0.1
  min_lr: 0.0
  warmup_epochs: 0
  warmup_lr: 0.0
  sched_per: step
  weight_decay: 0.0
  betas: [0.9, 0.999]
  accum_steps: 1
  amp: none
  clip_grad: null
"""


class Toy(torch.nn.Linear):
    """A classifier with a config object, as the package's models have."""

    class Config:
        def __init__(self, width):
            self.width = width

        def to_dict(self):
            return {"model_type": "toy", "width": self.width}

    def __init__(self, width=3):
        super().__init__(width, 2)
        self.config = self.Config(width)


def toy_eval(model, loader, device, amp="none", progress=True):
    """Accuracy by hand, plus a nested part the engine must pass through untouched."""
    right = total = 0
    with torch.no_grad():
        for x, y in loader:
            right += int((model(x).argmax(1) == y).sum())
            total += len(y)
    return {"acc": 100.0 * right / total, "n": total, "per_item": {"right": right, "total": total}}


def data(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    y = (x[:, 0] > 0).long()
    return [(x[i:i + 4], y[i:i + 4]) for i in range(0, n, 4)]


def config(tmp_path):
    (tmp_path / "c.yaml").write_text(CONFIG.format(out=tmp_path / "run"))
    return load_config(tmp_path / "c.yaml")


def loss_fn(model, x, y):
    return torch.nn.functional.cross_entropy(model(x), y)


def test_fit_returns_the_final_evaluation_whole(tmp_path):
    torch.manual_seed(0)
    cfg, model, loader = config(tmp_path), Toy(), data()
    run = TrainingRun(cfg, DistInfo(), model, loader, data(seed=1), None, loss_fn, evaluate_fn=toy_eval, metric="acc")
    stats = run.fit()
    final = toy_eval(model, data(seed=1), "cpu")          # the trained model, evaluated again by hand
    assert stats["eval"] == final
    assert stats["eval"]["per_item"] == final["per_item"]   # a non-scalar part survives
    assert stats["val_acc"] == final["acc"] and "val_per_item" not in stats   # logs keep scalars only
    saved = torch.load(tmp_path / "run" / LATEST, map_location="cpu", weights_only=True)
    assert saved["extra"]["model_config"] == {"model_type": "toy", "width": 3}


def test_evaluation_only_run_loads_the_weights_strictly(tmp_path):
    torch.manual_seed(0)
    cfg, trained = config(tmp_path), Toy()
    TrainingRun(cfg, DistInfo(), trained, data(), None, None, loss_fn).fit()
    fresh = Toy()
    run = TrainingRun(cfg, DistInfo(), fresh, None, data(seed=1), evaluate_fn=toy_eval, metric="acc")
    res = run.evaluate_only(str(tmp_path / "run" / LATEST))
    assert torch.equal(fresh.weight, trained.weight)
    assert res == toy_eval(trained, data(seed=1), "cpu")
    with pytest.raises(Exception, match="strict|missing|unexpected|mismatch|size"):
        TrainingRun(cfg, DistInfo(), Toy(width=5), None, data(seed=1), evaluate_fn=toy_eval,
                    metric="acc").evaluate_only(str(tmp_path / "run" / LATEST))


def test_write_results_is_json_in_the_output_folder(tmp_path):
    cfg = config(tmp_path)
    run = TrainingRun(cfg, DistInfo(), Toy(), None, data(), evaluate_fn=toy_eval, metric="acc")
    path = run.write_results({"acc": 50.0, "nested": {"a": [1, 2]}, "value": torch.tensor(1.5)})
    assert path == tmp_path / "run" / "results.json"
    assert json.loads(path.read_text()) == {"acc": 50.0, "nested": {"a": [1, 2]}, "value": 1.5}


def test_a_validation_loader_needs_the_tasks_evaluation(tmp_path):
    with pytest.raises(ValueError, match="evaluate_fn"):
        TrainingRun(config(tmp_path), DistInfo(), Toy(), data(), data(), None, loss_fn)
    with pytest.raises(ValueError, match="loss_fn"):
        TrainingRun(config(tmp_path), DistInfo(), Toy(), data(), None, None, None)


def two_layer_run(tmp_path, module_lr):
    """A one-step run of a two-layer net under ``module_lr``: (config, net, its weights before, the run)."""
    torch.manual_seed(0)
    cfg = config(tmp_path)
    cfg.train.epochs = 1
    cfg.train.module_lr = module_lr
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    before = [p.detach().clone() for p in net.parameters()]
    return cfg, net, before, TrainingRun(cfg, DistInfo(), net, data()[:1], None, None, loss_fn)


def test_module_lr_is_the_step_the_optimiser_takes(tmp_path):
    """train.module_lr through the run: AdamW's first step moves every weight by about its lr (m/sqrt(v) is the
    gradient's sign), so one step shows which lr each module trained at: 0.1 for the first layer, 0.01 for the
    one named."""
    cfg, net, before, run = two_layer_run(tmp_path, {"1": 0.01})
    run.fit()
    moved = [(p.detach() - b).abs() for p, b in zip(net.parameters(), before)]
    for step, lr in zip(moved, (0.1, 0.1, 0.01, 0.01)):
        nonzero = step[step > 0]
        assert nonzero.numel() and torch.allclose(nonzero, torch.full_like(nonzero, lr), rtol=1e-3), (lr, step)


def test_module_lr_zero_locks_the_module(tmp_path):
    """A module at lr 0 is locked: no gradient reaches its weights (the backward skips it) and the step leaves
    them bit for bit; the other module still trains at the run's lr."""
    cfg, net, before, run = two_layer_run(tmp_path, {"0": 0.0})
    assert run.locked == ["0.weight", "0.bias"]
    run.fit()
    after = list(net.parameters())
    assert torch.equal(after[0], before[0]) and torch.equal(after[1], before[1])
    assert after[0].grad is None and not after[0].requires_grad
    assert not torch.equal(after[2], before[2])
    with pytest.raises(ValueError, match=r"train.module_lr.text_encoder: no parameter"):
        cfg.train.module_lr = {"text_encoder": 0}
        TrainingRun(cfg, DistInfo(), torch.nn.Linear(3, 2), data()[:1], None, None, loss_fn)
