"""The embedded default data set, "Moving Digits", built from scikit-learn's 1,797 real handwritten
digits (8x8 grey). Deterministic from a seed, generated once into a cache folder.

This module makes the image variant (10 digit classes) as an ImageFolder tree plus meta files in the
official ``relpath label`` format; the video variants arrive with the video task. Splits are by digit
image: no source digit appears in two splits.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

SPLITS = {"train": 0.7, "val": 0.15, "test": 0.15}


def default_root() -> Path:
    base = Path(os.environ.get("VIDEOMAMBA_DATA", Path.home() / ".cache" / "videomamba" / "data"))
    return base / "moving_digits"


def _split_indices(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    order = rng.permutation(n)
    n_train, n_val = int(SPLITS["train"] * n), int(SPLITS["val"] * n)
    return {"train": order[:n_train], "val": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}


def render_digit(img8: np.ndarray, canvas: int, rng: np.random.Generator, noise: float = 0.04) -> np.ndarray:
    """Scale an 8x8 digit (0..16) to 60-90% of the canvas at a random position, add light noise -> uint8."""
    from PIL import Image

    size = int(rng.integers(int(0.6 * canvas), int(0.9 * canvas) + 1))
    digit = Image.fromarray((img8 / 16.0 * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    out = np.zeros((canvas, canvas), dtype=np.float32)
    y, x = rng.integers(0, canvas - size + 1, size=2)
    out[y:y + size, x:x + size] = np.asarray(digit, dtype=np.float32) / 255.0
    out = np.clip(out + rng.normal(0, noise, out.shape), 0, 1)
    return (out * 255).astype(np.uint8)


def make_image_variant(root: str | os.PathLike | None = None, canvas: int = 32, renders_per_digit: int = 2,
                       seed: int = 0) -> Path:
    """Write ``root/images/{split}/{label}/*.png`` and ``root/images/{split}.txt`` (``relpath label``).

    Idempotent: returns at once when the folder was already made with the same settings.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    root = Path(root) if root is not None else default_root()
    out = root / "images"
    settings = {"canvas": canvas, "renders_per_digit": renders_per_digit, "seed": seed, "version": 1}
    stamp = out / "settings.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == settings:
        return out
    digits = load_digits()
    rng = np.random.default_rng(seed)
    tmp = out.with_name(out.name + ".partial")
    for split, idx in _split_indices(len(digits.images), rng).items():
        lines = []
        reps = renders_per_digit if split == "train" else 1
        for i in idx:
            label = int(digits.target[i])
            for r in range(reps):
                rel = f"{split}/{label}/{i:04d}_{r}.png"
                path = tmp / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(render_digit(digits.images[i], canvas, rng)).convert("RGB").save(path)
                lines.append(f"{rel} {label}")
        (tmp / f"{split}.txt").write_text("\n".join(lines) + "\n")
    (tmp / "settings.json").write_text(json.dumps(settings))
    if out.exists():
        import shutil

        shutil.rmtree(out)
    os.replace(tmp, out)   # a half-written folder is never mistaken for a finished one
    return out
