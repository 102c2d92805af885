"""The train loop's arithmetic: accumulation equals a bigger batch, clipping, the lr schedule per step,
mixed precision on CPU, and the loss parts a loss_fn reports."""
import copy

import numpy as np
import pytest
import torch

from videomamba.engine.classification import default_loss_fn, train_one_epoch
from videomamba.engine.steppers import TorchStepper


def _data(n=32, d=6, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, classes, (n,), generator=g)


def _run(model, x, y, batch, accum, lr=0.1, clip=None, amp="none", scaler=None, loss_fn=None, steps=None):
    loader = [(x[i:i + batch], y[i:i + batch]) for i in range(0, len(x), batch)]
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    stepper = TorchStepper(model, opt, accum, clip, scaler)
    n_steps = steps or len(loader) // accum
    sched = np.full(n_steps, lr)
    fn = loss_fn or default_loss_fn(torch.nn.CrossEntropyLoss())
    return train_one_epoch(model, loader, stepper, fn, torch.device("cpu"), 0, sched, 0, n_steps,
                           accum_steps=accum, amp=amp, progress=False)


def test_accumulation_equals_the_bigger_batch():
    x, y = _data()
    a = torch.nn.Linear(6, 3)
    b = copy.deepcopy(a)
    ra = _run(a, x, y, batch=16, accum=1)
    rb = _run(b, x, y, batch=8, accum=2)
    assert ra["step"] == rb["step"] == 2
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-7)
    assert len(rb["step_losses"]) == 2
    assert rb["step_losses"][0] == pytest.approx(ra["step_losses"][0], rel=1e-6)   # mean over the window


def test_partial_accumulation_window_is_skipped():
    x, y = _data(n=40)
    r = _run(torch.nn.Linear(6, 3), x, y, batch=8, accum=2)   # 5 micro-batches -> 2 steps, the 5th unused
    assert r["step"] == 2 and len(r["step_losses"]) == 2


def test_clipping_bounds_the_update():
    x, y = _data(n=16)
    model = torch.nn.Linear(6, 3)
    with torch.no_grad():
        model.weight.mul_(50)   # large logits -> large gradient
    ref = copy.deepcopy(model)
    loss = torch.nn.functional.cross_entropy(ref(x), y)
    loss.backward()
    norm = torch.sqrt(sum((p.grad ** 2).sum() for p in ref.parameters()))
    assert norm > 0.5
    before = [p.detach().clone() for p in model.parameters()]
    _run(model, x, y, batch=16, accum=1, lr=1.0, clip=0.5)
    update = torch.sqrt(sum(((p - q) ** 2).sum() for p, q in zip(model.parameters(), before)))
    assert update.item() == pytest.approx(0.5, rel=1e-4)          # SGD lr 1: the step is the clipped gradient
    expected = [q - p.grad * (0.5 / norm) for q, p in zip(before, ref.parameters())]
    for p, e in zip(model.parameters(), expected):
        torch.testing.assert_close(p, e, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_trains_on_cpu(amp):
    import videomamba

    model = videomamba.create_model("videomamba_tiny", num_classes=3, img_size=16, patch_size=8, depth=1,
                                    embed_dim=16, drop_path_rate=0.0)
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 3, (8,))
    scaler = torch.amp.GradScaler("cpu") if amp == "fp16" else None
    before = model.head.weight.detach().clone()
    r = _run(model, x, y, batch=4, accum=1, lr=0.01, amp=amp, scaler=scaler)
    assert np.isfinite(r["train_loss"]) and r["step"] == 2
    assert not torch.equal(before, model.head.weight) and model.head.weight.dtype == torch.float32


def test_loss_parts_are_averaged_and_reported():
    x, y = _data()
    ce = torch.nn.CrossEntropyLoss()

    def loss_fn(model, xb, yb):
        main = ce(model(xb), yb)
        extra = 0.1 * model(xb).pow(2).mean()
        return main + extra, {"loss_cls": main.detach(), "loss_extra": extra.detach()}

    r = _run(torch.nn.Linear(6, 3), x, y, batch=8, accum=1, loss_fn=loss_fn)
    assert r["train_loss"] == pytest.approx(r["train_loss_cls"] + r["train_loss_extra"], rel=1e-5)
    assert r["train_samples_per_s"] > 0
