"""Experiment configs: YAML files with ``_base_`` inheritance and dotted command-line overrides.

    cfg = load_config("configs/image_sm/videomamba_tiny_in1k_224.yaml", ["train.lr=1e-3", "model.drop_path_rate=0.1"])
    cfg.train.lr                       # attribute access
    save_config(cfg, out_dir / "config.yaml")   # the resolved config, written atomically

An override must name an existing key (a typo would otherwise be silently ignored); prefix it with ``+``
to add a new one. Values are parsed as YAML (``1e-3``, ``true``, ``[1, 2]``, ``null``).
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Iterable

import re

import yaml

from ..utils.files import atomic_write


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (YAML 1.1 wants ``1.0e-3``; users write both)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def _yaml_load(text: str):
    return yaml.load(text, Loader=_Loader)


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the file/line or the key."""


class Config(dict):
    """A dict with attribute access, recursively."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no key {name!r} (keys: {sorted(self)})") from None

    def __setattr__(self, name: str, value: Any):
        self[name] = value

    def to_dict(self) -> dict:
        return {k: v.to_dict() if isinstance(v, Config) else v for k, v in self.items()}


def _wrap(obj: Any) -> Any:
    if isinstance(obj, dict):
        return Config({k: _wrap(v) for k, v in obj.items()})
    if isinstance(obj, list):
        return [_wrap(v) for v in obj]
    return obj


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = _yaml_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML ({getattr(err, 'problem', err)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def merge(base: dict, update: dict) -> dict:
    """Recursive merge: mappings merge key by key, anything else replaces."""
    out = copy.deepcopy(base)
    for k, v in update.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _load_with_bases(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: _base_ cycle through {' -> '.join(str(p) for p in seen)}")
    data = _read_yaml(path)
    bases = data.pop("_base_", [])
    bases = [bases] if isinstance(bases, str) else bases
    result: dict = {}
    for b in bases:
        result = merge(result, _load_with_bases((path.parent / b), seen + (path,)))
    return merge(result, data)


def apply_overrides(cfg: dict, overrides: Iterable[str]) -> dict:
    """Apply ``a.b.c=value`` strings (``+a.b=value`` adds a key that does not exist yet)."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        add = key.startswith("+")
        key = key.lstrip("+").strip()
        try:
            value = _yaml_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({err})") from None
        node = cfg
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            if part not in node:
                if not add:
                    raise ConfigError(f"override {item!r}: unknown key {'.'.join(parts[:i + 1])!r} "
                                      f"(known: {sorted(node)}); prefix with '+' to add it")
                node[part] = {}
            if not isinstance(node[part], dict):
                raise ConfigError(f"override {item!r}: {'.'.join(parts[:i + 1])!r} is not a mapping")
            node = node[part]
        if parts[-1] not in node and not add:
            raise ConfigError(f"override {item!r}: unknown key {key!r} (known at that level: {sorted(node)}); "
                              "prefix with '+' to add it")
        node[parts[-1]] = value
    return cfg


def load_config(path: str | os.PathLike, overrides: Iterable[str] = ()) -> Config:
    """Read a YAML config (with ``_base_`` files merged under it) and apply dotted overrides."""
    return _wrap(apply_overrides(_load_with_bases(Path(path)), overrides))


def save_config(cfg: dict, path: str | os.PathLike) -> Path:
    """Write the resolved config next to a run's checkpoints (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = cfg.to_dict() if isinstance(cfg, Config) else cfg
    text = yaml.safe_dump(data, sort_keys=False)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return path
