"""Functions the models call but the layer above them implements, installed by that layer when it is imported.

Imports flow one way (ops -> modules -> models -> checkpoint -> ...), yet two model APIs need the checkpoint
layer: timm's ``checkpoint_filter_fn`` (adapt an official checkpoint to a model) and the model folder methods
(``VisionMamba.save_pretrained`` / ``from_pretrained``). :mod:`videomamba.checkpoint` and
:mod:`videomamba.checkpoint.model_folder` register them here; ``import videomamba`` (which any
``import videomamba.models...`` runs first) always imports both, so they are present before a model is used.
"""
from __future__ import annotations

from typing import Callable

_installed: dict[str, Callable] = {}


def install(**functions: Callable) -> None:
    """Register implementations by name (the checkpoint layer calls this at import)."""
    _installed.update(functions)


def installed(name: str) -> Callable:
    """The implementation of ``name``; a clear error if the layer that provides it was never imported."""
    try:
        return _installed[name]
    except KeyError:
        raise RuntimeError(f"{name} is provided by videomamba.checkpoint, which is not imported: "
                           "`import videomamba` first") from None
