"""EMA, the non-finite-loss guard and the run logger."""
import json

import pytest
import torch

from videomamba.engine.ema import ModelEma
from videomamba.engine.guards import NonFiniteLossError, check_finite_loss
from videomamba.engine.logger import RunLogger


def test_ema_follows_the_formula():
    model = torch.nn.Linear(3, 2)
    ema = ModelEma(model, decay=0.9)
    start = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    for k, v in ema.module.state_dict().items():
        torch.testing.assert_close(v, 0.9 * start[k] + 0.1 * model.state_dict()[k])
    assert not any(p.requires_grad for p in ema.parameters())
    with pytest.raises(ValueError):
        ModelEma(model, decay=1.5)


def test_nan_guard_names_the_step_and_the_cause():
    model = torch.nn.Linear(2, 2)
    check_finite_loss(torch.tensor(1.0), step=1, epoch=0, model=model)   # fine
    with pytest.raises(NonFiniteLossError, match="epoch 3, step 17.*all parameters still finite"):
        check_finite_loss(torch.tensor(float("nan")), step=17, epoch=3, model=model, lr=1e-3)
    with torch.no_grad():
        model.weight[0, 0] = float("inf")
    with pytest.raises(NonFiniteLossError, match="1 non-finite parameter tensors, first: \\['weight'\\]"):
        check_finite_loss(float("inf"), step=2, epoch=0, model=model)


def test_logger_writes_json_lines_and_tensorboard(tmp_path, capsys):
    log = RunLogger(tmp_path)
    log.epoch(0, {"train_loss": 1.5, "val_acc1": 50.0})
    log.epoch(1, {"train_loss": 1.0, "val_acc1": 75.0})
    log.close()
    lines = [json.loads(x) for x in (tmp_path / "log.txt").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [0, 1] and lines[1]["val_acc1"] == 75.0
    assert "epoch 1: train_loss 1  val_acc1 75" in capsys.readouterr().out
    assert any((tmp_path / "tb").iterdir())
