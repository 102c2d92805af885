"""Reading checkpoint files (.pth / .safetensors), unwrapping containers, atomic writing."""
from __future__ import annotations

import argparse
import json
import os
import pickle
import tempfile
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch

DEFAULT_MODEL_KEYS = ("model", "module", "state_dict")


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    weights_only: bool | None = None) -> Any:
    """Load a ``.safetensors`` file or a torch pickle (``.pth``/``.pt``/``.bin``/...).

    ``weights_only=None`` first tries the safe loader (tensors, containers, and the ``argparse``
    namespace the official training scripts store); if the file holds other Python objects it warns
    and unpickles it fully. Pass ``weights_only=True`` to refuse that.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device=str(map_location))
    if weights_only is not None:
        return torch.load(path, map_location=map_location, weights_only=weights_only)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        warnings.warn(f"{path}: holds Python objects beyond tensors ({str(err).splitlines()[0][:120]}); "
                      "unpickling it fully - only do this for files you trust", stacklevel=2)
        return torch.load(path, map_location=map_location, weights_only=False)


def extract_state_dict(obj: Any, model_key: str | tuple[str, ...] | None = None,
                       source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Unwrap a training container (``{'model': sd, 'optimizer': ...}``) or accept a flat state dict.

    ``model_key`` is a key or ``'a|b'`` list tried in order (default ``model|module|state_dict``).
    Non-tensor entries of a flat dict (``epoch``, ``args``...) are dropped.
    """
    if not isinstance(obj, Mapping):
        raise TypeError(f"{source}: expected a dict-like checkpoint, got {type(obj).__name__}")
    keys = DEFAULT_MODEL_KEYS if model_key is None else (
        tuple(model_key.split("|")) if isinstance(model_key, str) else tuple(model_key))
    for k in keys:
        if k in obj and isinstance(obj[k], Mapping):
            obj = obj[k]
            break
    else:
        if model_key is not None and not any(torch.is_tensor(v) for v in obj.values()):
            raise KeyError(f"{source}: none of the container keys {list(keys)} found; "
                           f"top-level keys are {sorted(map(str, obj))[:20]}")
    sd = {k: v for k, v in obj.items() if torch.is_tensor(v)}
    if not sd:
        raise ValueError(f"{source}: no tensors found (top-level keys: {sorted(map(str, obj))[:20]})")
    return sd


def atomic_write(path: Path, write_fn) -> None:
    """Write to a temp file in the same folder, fsync, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write_fn(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(model_or_state_dict: torch.nn.Module | Mapping[str, torch.Tensor],
                    path: str | os.PathLike, metadata: Mapping[str, Any] | None = None) -> Path:
    """Write a model's weights atomically: ``.safetensors`` (default for any other suffix) or ``.pth``.

    ``metadata`` values are stored as JSON strings in the safetensors header.
    """
    path = Path(path)
    sd = model_or_state_dict.state_dict() if isinstance(model_or_state_dict, torch.nn.Module) else model_or_state_dict
    tensors = {k: v.detach().cpu().contiguous() for k, v in sd.items() if torch.is_tensor(v)}
    if path.suffix in (".pth", ".pt", ".bin"):
        atomic_write(path, lambda tmp: torch.save(tensors, tmp))
        return path
    from safetensors.torch import save_file

    meta = {"format": "pt", "producer": "videomamba"}
    meta.update({str(k): v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()})
    # safetensors refuses tensors sharing storage; clone any that do.
    seen, unique = set(), {}
    for k, v in tensors.items():
        key = (v.untyped_storage().data_ptr(), v.storage_offset()) if v.numel() else None
        unique[k] = v.clone() if key is not None and key in seen else v
        if key is not None:
            seen.add(key)
    atomic_write(path, lambda tmp: save_file(unique, tmp, metadata=meta))
    return path
