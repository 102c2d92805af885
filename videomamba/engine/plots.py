"""PNG plots of a run (skipped quietly without matplotlib): training curves and a confusion matrix."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..utils.checkpoint_io import atomic_write

_LABELS = {"acc1": "val top-1 (%)", "mse": "val MSE", "loss": "val loss"}


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _records(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.is_file() else []


def plot_curves(out: Path, steps_log: str = "train_steps.jsonl", metric: str = "acc1") -> Path | None:
    """``curves.png``: train loss per step and the validation metric per epoch."""
    plt = _pyplot()
    if plt is None:
        return None
    steps, epochs = _records(out / steps_log), _records(out / "log.txt")
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    a.plot([s["step"] for s in steps], [s["loss"] for s in steps], lw=0.8)
    a.set(xlabel="step", ylabel="train loss", title="training loss")
    key = f"val_{metric}"
    ep = [e for e in epochs if key in e]
    b.plot([e["epoch"] for e in ep], [e[key] for e in ep], marker="o")
    b.set(xlabel="epoch", ylabel=_LABELS.get(metric, key), title="validation")
    fig.tight_layout()
    atomic_write(out / "curves.png", lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    return out / "curves.png"


def plot_confusion(cm: np.ndarray, names: list[str], path: Path, title: str = "") -> Path | None:
    """Row-normalised confusion matrix (rows: true class) with the counts written in the cells."""
    plt = _pyplot()
    if plt is None:
        return None
    n = len(names)
    rates = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    side = max(4.0, 0.55 * n + 2)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if rates[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    return Path(path)
