"""Training checkpoints that resume exactly: model, optimiser, grad scaler, EMA, epoch/step, best
metric and every RNG state, written atomically (temp file + rename) as ``checkpoint-latest.pth`` and
``checkpoint-best.pth`` (the official file names)."""
from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils.checkpoint_io import CheckpointError
from ..utils.files import atomic_write
from ..utils.tensors import unwrap  # noqa: F401  (re-exported: its old home)

LATEST, BEST = "checkpoint-latest.pth", "checkpoint-best.pth"


def capture_rng() -> dict:
    # numpy's state as a tensor + plain numbers, so the checkpoint loads with torch.load(weights_only=True)
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss,
                                                     cached), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict):
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_state(path: str | Path, model, optimizer=None, scaler=None, ema=None, epoch: int = 0,
                        step: int = 0, best_metric: float | None = None, extra: dict | None = None) -> Path:
    """Write everything needed to continue the run bit for bit. Call it on the main rank. ``model`` may
    also be a state dict (e.g. DeepSpeed's fp32 master weights)."""
    weights = model if isinstance(model, dict) else unwrap(model).state_dict()
    state = {"model": weights, "epoch": epoch, "step": step, "best_metric": best_metric,
             "rng": capture_rng(), "extra": extra or {}}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    if ema is not None:
        state["model_ema"] = unwrap(ema).state_dict()
    path = Path(path)
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    return path


def find_resume(out_dir: str | Path) -> Path | None:
    """``checkpoint-latest.pth``, else ``checkpoint-best.pth``, else the highest ``checkpoint-N.pth``."""
    out_dir = Path(out_dir)
    for name in (LATEST, BEST):
        if (out_dir / name).is_file():
            return out_dir / name
    numbered = [(int(m.group(1)), p) for p in out_dir.glob("checkpoint-*.pth")
                if (m := re.fullmatch(r"checkpoint-(\d+)\.pth", p.name))]
    return max(numbered)[1] if numbered else None


def load_training_state(path: str | Path, model, optimizer=None, scaler=None, ema=None,
                        restore_random: bool = True) -> dict[str, Any]:
    """Load a training checkpoint into the given objects; returns epoch/step/best_metric/extra."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    missing = [k for k in ("model", "epoch") if k not in state]
    if missing:
        raise KeyError(f"{path}: not a training checkpoint (missing {missing}); "
                       "use videomamba.load_checkpoint for weights-only files")
    unwrap(model).load_state_dict(state["model"])
    if optimizer is not None and "optimizer" in state:
        load_optimizer_state(optimizer, state["optimizer"], path)
    if scaler is not None and "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    if ema is not None and "model_ema" in state:
        unwrap(ema).load_state_dict(state["model_ema"])
    if restore_random and "rng" in state:
        restore_rng(state["rng"])
    return {k: state.get(k) for k in ("epoch", "step", "best_metric", "extra")}


def load_optimizer_state(optimizer, saved: dict, path: str | Path):
    """``optimizer.load_state_dict`` that refuses a state saved for other parameter groups with a
    :class:`CheckpointError` (one line naming the file; the commands print it without a traceback). torch's
    own check compares only the group sizes; a tensor of the wrong shape would fail later, inside a step."""
    hint = ("was the set of trained parameters changed since (train.module_lr, a module locked at lr 0 or "
            "unlocked, frozen layers)? Resume with the old settings, or start a new output_dir from these "
            "weights")
    try:
        optimizer.load_state_dict(saved)
    except ValueError as err:
        raise CheckpointError(path, f"its optimizer state does not fit this run ({err}); {hint}") from None
    for g, group in enumerate(optimizer.param_groups):
        for p in group["params"]:
            for name, value in optimizer.state.get(p, {}).items():
                if torch.is_tensor(value) and value.dim() and value.shape != p.shape:
                    raise CheckpointError(path, f"optimizer group {g} holds {name!r} of shape "
                                                f"{tuple(value.shape)} for a parameter of shape {tuple(p.shape)}; {hint}")
