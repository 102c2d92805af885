"""Optimiser parameter groups: weight-decay exclusions and layer-wise learning-rate decay.

Layer decay multiplies the lr of layer ``i`` by ``ld ** (num_layers + 1 - i)`` where the embedding
(patch embed, position embeddings, CLS token) is layer 0, block ``k`` is layer ``k + 1`` and everything
after the blocks (final norm, heads) is ``num_layers + 1`` (scale 1).

``mode="official"`` reproduces what the released video models were trained with (design decision D5): the official mapping of ``layers.k`` is disabled, so only the patch embedding, ``pos_embed`` and
``cls_token`` get ``ld ** (num_layers + 1)`` and every other parameter, the temporal position embedding
included, keeps scale 1.

Weight decay is off for 1-D parameters, biases and the names in ``model.no_weight_decay()`` (as the
official optimiser factories do: ``A_log`` is 2-D and is decayed, the ``_no_weight_decay`` tags are not read).

``module_lr`` gives named modules their own peak lr (the official ``optimizer.different_lr``, e.g. a larger lr
for new modules): ``{"text_encoder": 1e-4}`` trains every parameter under ``text_encoder.`` at 1e-4 where the
rest trains at ``lr``; the schedule's shape (warmup, cosine to ``min_lr``) scales both alike, as officially.
A module given lr 0 is locked (:func:`lock_modules`): its parameters stop requiring gradients, so the backward
pass skips it instead of computing gradients that would never be applied.
"""
from __future__ import annotations

import re

import torch.nn as nn

_EMBED = ("cls_token", "pos_embed", "temporal_pos_embedding", "patch_embed.")
_LAYER = re.compile(r"^layers\.(\d+)\.")


def layer_id(name: str, num_layers: int, mode: str = "real") -> int:
    """Layer index of a parameter for layer decay (see module doc)."""
    if mode == "official":
        return 0 if name in ("cls_token", "pos_embed") or name.startswith("patch_embed.") else num_layers + 1
    if name.startswith(_EMBED) or name in _EMBED:
        return 0
    m = _LAYER.match(name)
    if m:
        return int(m.group(1)) + 1
    return num_layers + 1


def module_of(name: str, prefixes) -> str | None:
    """The longest of ``prefixes`` that names a module holding parameter ``name`` (or ``name`` itself)."""
    hits = [p for p in prefixes if name == p or name.startswith(p + ".")]
    return max(hits, key=len) if hits else None


def lock_modules(model: nn.Module, module_lr: dict[str, float] | None) -> list[str]:
    """Stop gradients of every parameter whose ``module_lr`` is 0 (a step of lr 0 would leave it, weight decay
    included, where it is); returns the locked names. Call before the optimiser and DDP are built."""
    zero = [m for m, v in (module_lr or {}).items() if v == 0]
    locked = []
    for name, p in model.named_parameters():
        if p.requires_grad and module_of(name, module_lr or {}) in zero:
            p.requires_grad_(False)
            locked.append(name)
    for m in zero:
        if not any(name == m or name.startswith(m + ".") for name, _ in model.named_parameters()):
            raise ValueError(f"train.module_lr.{m}: no parameter of the model is under {m!r}")
    return locked


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float | None = None,
                 mode: str = "real", skip: set[str] | None = None,
                 module_lr: dict[str, float] | None = None, lr: float | None = None) -> list[dict]:
    """Groups for ``torch.optim`` with ``lr_scale`` (multiply the scheduled lr by it) and ``weight_decay``.

    Args:
        layer_decay: None or 1.0 for no layer decay.
        mode: ``"real"`` (per-block decay) or ``"official"`` (see module doc).
        skip: names without weight decay; default ``model.no_weight_decay()`` when the model has it.
        module_lr: module name (a parameter-name prefix) -> its peak lr; needs ``lr``, the run's peak lr,
            since the groups carry ``lr_scale = module_lr / lr``. A name that matches no trainable parameter
            raises ``ValueError`` (a typo would otherwise train at the default lr unnoticed).
    """
    module_lr = dict(module_lr or {})
    if module_lr and not lr:
        raise ValueError("module_lr needs the run's peak lr (lr=...) to scale from")
    for prefix, value in module_lr.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise ValueError(f"train.module_lr.{prefix}: expected a learning rate >= 0, got {value!r}")
    if mode not in ("real", "official"):
        raise ValueError(f"layer_decay_mode must be 'real' or 'official', got {mode!r}")
    if skip is None:
        skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    num_layers = model.get_num_layers() if hasattr(model, "get_num_layers") else 0
    use_ld = layer_decay is not None and layer_decay != 1.0
    groups: dict[tuple[int, bool, str], dict] = {}
    used = set()
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim <= 1 or name.endswith(".bias") or name in skip
        lid = layer_id(name, num_layers, mode) if use_ld else num_layers + 1
        module = module_of(name, module_lr) or ""
        used.add(module)
        key = (lid, no_decay, module)
        if key not in groups:
            scale = layer_decay ** (num_layers + 1 - lid) if use_ld else 1.0
            if module:
                scale *= module_lr[module] / lr
            groups[key] = {"params": [], "param_names": [], "weight_decay": 0.0 if no_decay else weight_decay,
                           "lr_scale": scale, "layer_id": lid}
        groups[key]["params"].append(p)
        groups[key]["param_names"].append(name)
    unused = sorted(set(module_lr) - used - {m for m, v in module_lr.items() if v == 0})
    if unused:
        raise ValueError(f"train.module_lr.{unused[0]}: no trainable parameter of the model is under "
                         f"{unused[0]!r} (module names look like {sorted({n.split('.')[0] for n, _ in model.named_parameters()})[:6]})")
    return [groups[k] for k in sorted(groups)]
