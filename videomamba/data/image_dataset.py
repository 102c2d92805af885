"""Image classification data: an ImageFolder tree or the official meta file (``relpath label`` per line).

Problems are reported with the file and line: a malformed line, a label out of range, a missing or
unreadable image.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from PIL import Image

from .errors import DataError   # re-exported: videomamba.data.image_dataset.DataError stays importable

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".JPEG")


def read_meta_file(meta: str | os.PathLike, root: str | os.PathLike, num_classes: int | None = None,
                   check_files: bool = True) -> list[tuple[Path, int]]:
    """Parse ``relpath label`` lines (the official ImageNet meta format); paths are relative to ``root``."""
    return [(path, label) for path, label, _ in _read_meta(meta, root, num_classes, check_files)]


def _read_meta(meta, root, num_classes, check_files) -> list[tuple[Path, int, int]]:
    """(path, label, line number) per sample."""
    meta, root = Path(meta), Path(root)
    if not meta.is_file():
        raise DataError(f"meta file not found: {meta}")
    samples = []
    for lineno, line in enumerate(meta.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise DataError(f"{meta}:{lineno}: expected '<relative path> <integer label>', got {line!r}")
        label = int(parts[1])
        if label < 0 or (num_classes is not None and label >= num_classes):
            raise DataError(f"{meta}:{lineno}: label {label} out of range [0, {num_classes})")
        path = root / parts[0]
        if check_files and not path.is_file():
            raise DataError(f"{meta}:{lineno}: image not found: {path}")
        samples.append((path, label, lineno))
    if not samples:
        raise DataError(f"{meta}: no samples")
    return samples


def scan_image_folder(root: str | os.PathLike) -> tuple[list[tuple[Path, int]], list[str]]:
    """``root/<class>/<image>``; classes sorted by name, as torchvision's ImageFolder."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise DataError(f"{root}: no class sub-folders")
    samples = [(p, i) for i, c in enumerate(classes) for p in sorted((root / c).rglob("*"))
               if p.suffix in IMG_EXTENSIONS]
    return samples, classes


class ImageDataset(torch.utils.data.Dataset):
    def __init__(self, samples: list[tuple[Path, int]], transform=None, source: str = "",
                 lines: list[int] | None = None):
        self.samples, self.transform, self.source, self.lines = samples, transform, source, lines

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        try:
            with Image.open(path) as im:
                img = im.convert("RGB")
        except (OSError, ValueError) as err:
            line = f":{self.lines[i]}" if self.lines else ""
            where = f" (listed in {self.source}{line})" if self.source else ""
            raise DataError(f"cannot read image {path}{where}: {err}") from None
        return (self.transform(img) if self.transform else img), label


def build_image_dataset(root: str | os.PathLike, meta_file: str | os.PathLike | None = None, transform=None,
                        num_classes: int | None = None, check_files: bool = True) -> ImageDataset:
    """From a meta file when given (``check_files``: stat every listed image now), else from the
    ImageFolder tree at ``root``."""
    if meta_file:
        rows = _read_meta(meta_file, root, num_classes, check_files=check_files)
        return ImageDataset([(p, y) for p, y, _ in rows], transform, source=str(meta_file),
                            lines=[n for _, _, n in rows])
    samples, classes = scan_image_folder(root)
    if num_classes is not None and len(classes) > num_classes:
        raise DataError(f"{root}: {len(classes)} class folders but num_classes={num_classes}")
    return ImageDataset(samples, transform, source=str(root))
