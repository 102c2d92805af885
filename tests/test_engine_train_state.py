"""Training checkpoints: exact resume (weights, optimiser, RNG), atomic writes, resume discovery."""
import random

import numpy as np
import pytest
import torch

from videomamba.engine.train_state import (BEST, LATEST, find_resume, load_training_state, save_training_state,
                                           unwrap)
from videomamba.utils.checkpoint_io import CheckpointError


def make():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    return model, opt


def train_steps(model, opt, n):
    losses = []
    for _ in range(n):
        x = torch.randn(16, 4)                      # consumes the torch RNG, like data augmentation
        noise = np.random.rand() + random.random()  # and numpy / python RNGs
        loss = (model(x) ** 2).mean() * (1 + 0 * noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    model, opt = make()
    straight = train_steps(model, opt, 6)

    model, opt = make()
    first = train_steps(model, opt, 3)
    save_training_state(tmp_path / LATEST, model, opt, epoch=3, step=3, best_metric=0.5, extra={"note": "x"})
    train_steps(model, opt, 2)                      # work that is lost when the job dies

    model2, opt2 = make()
    meta = load_training_state(find_resume(tmp_path), model2, opt2)
    assert meta == {"epoch": 3, "step": 3, "best_metric": 0.5, "extra": {"note": "x"}}
    resumed = first + train_steps(model2, opt2, 3)
    assert resumed == straight                     # bit-for-bit the same loss sequence


def test_atomic_write_keeps_the_previous_file_on_failure(tmp_path, monkeypatch):
    model, opt = make()
    path = save_training_state(tmp_path / LATEST, model, opt, epoch=1)
    before = path.read_bytes()

    def broken_save(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_training_state(path, model, opt, epoch=2)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [LATEST]   # no temp file left behind


def test_find_resume_order(tmp_path):
    assert find_resume(tmp_path) is None
    for n in (2, 10, 9):
        (tmp_path / f"checkpoint-{n}.pth").write_bytes(b"")
    assert find_resume(tmp_path).name == "checkpoint-10.pth"
    (tmp_path / BEST).write_bytes(b"")
    assert find_resume(tmp_path).name == BEST
    (tmp_path / LATEST).write_bytes(b"")
    assert find_resume(tmp_path).name == LATEST


def test_unwrap_and_weights_only_file_error(tmp_path):
    model, _ = make()
    wrapped = torch.nn.Module()
    wrapped.module = model
    assert unwrap(wrapped) is model
    torch.save(model.state_dict(), tmp_path / "weights.pth")
    with pytest.raises(KeyError, match="not a training checkpoint"):
        load_training_state(tmp_path / "weights.pth", model)


def test_resume_refuses_an_optimizer_state_of_other_parameter_groups(tmp_path):
    """A run saved with the first layer locked (out of the optimizer) cannot resume with it trained, or with the
    same number of tensors in another arrangement: one line naming the file, not a failure inside a step."""
    model, _ = make()
    locked = torch.optim.AdamW(model[2].parameters(), lr=1e-2)           # layer 0 locked when it was saved
    train_steps(model, locked, 1)
    save_training_state(tmp_path / LATEST, model, locked, epoch=1, step=1)
    model2, opt2 = make()                                                  # now every layer trains
    with pytest.raises(CheckpointError, match=rf"{LATEST}: its optimizer state does not fit this run .*module_lr"):
        load_training_state(tmp_path / LATEST, model2, opt2)
    # the same group sizes, other tensors: layer 0's (8, 4) weight where layer 2's (2, 8) was
    swapped = torch.optim.AdamW([model2[0].weight, model2[0].bias], lr=1e-2)
    with pytest.raises(CheckpointError, match=r"optimizer group 0 holds 'exp_avg' of shape \(2, 8\) for a parameter "
                                         r"of shape \(8, 4\)"):
        load_training_state(tmp_path / LATEST, model2, swapped)
