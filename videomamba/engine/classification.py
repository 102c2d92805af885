"""Old home of the train loop and the top-k evaluation, now :mod:`videomamba.engine.loop` (task-agnostic) and
:mod:`videomamba.tasks.classification.evaluate`; these names stay importable from here."""
from ..tasks.classification.evaluate import evaluate
from ..tasks.classification.losses import default_loss_fn
from ..utils.tensors import autocast, batch_len, to_device
from .loop import set_lr, train_one_epoch

__all__ = ["evaluate", "default_loss_fn", "autocast", "batch_len", "to_device", "set_lr", "train_one_epoch"]
