"""Class-name lists: ``load_label_names('kinetics400')`` or a text file, one name per line, in label order."""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

__all__ = ["load_label_names", "available_label_sets"]


def available_label_sets() -> list[str]:
    """Names of the lists shipped with the package (e.g. ``'kinetics400'``)."""
    return sorted(p.name[:-4] for p in resources.files(__name__).iterdir() if p.name.endswith(".txt"))


def load_label_names(name_or_path: str | os.PathLike) -> list[str]:
    """Class names in label-index order: line ``i`` (from 0) is the name of label ``i``.

    ``name_or_path`` is a shipped list (:func:`available_label_sets`, e.g. ``'kinetics400'``: the 400
    Kinetics-400 classes in the order of the K400 annotation files the official checkpoints were trained
    with, ``'abseiling'`` = 0 ... ``'zumba'`` = 399) or a UTF-8 text file with one name per line.
    Surrounding spaces are stripped; a blank line or a repeated name raises ``ValueError`` with
    ``file:line``; a final newline is fine.
    """
    path = Path(name_or_path)
    if not path.is_file():
        name = str(name_or_path)
        if name in available_label_sets():
            res = resources.files(__name__) / f"{name}.txt"
            return _parse(res.read_text(encoding="utf-8-sig"), f"videomamba/data/labels/{name}.txt")
        raise FileNotFoundError(f"{name}: no such label file, and not a shipped label set "
                                f"(shipped: {', '.join(available_label_sets())})")
    return _parse(path.read_text(encoding="utf-8-sig"), str(path))


def _parse(text: str, where: str) -> list[str]:
    names: list[str] = []
    first_line: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        name = line.strip()
        if not name:
            raise ValueError(f"{where}:{lineno}: blank line (one class name per line, no gaps: a gap would "
                             "shift every later label index)")
        if name in first_line:
            raise ValueError(f"{where}:{lineno}: duplicate class name {name!r} (first on line {first_line[name]})")
        first_line[name] = lineno
        names.append(name)
    if not names:
        raise ValueError(f"{where}: no class names")
    return names
