"""The data sets of each task by name (``data.name``), in the style of PySlowFast's dataset registry.

A data set is a *source* class registered under a task and a name::

    @register_dataset("video_classification", "moving_digits")
    class MovingDigitsVideos(VideoClassificationSource):
        ...

Constructing a source from a config does the one-off work (generating the embedded data on one rank,
choosing each split's files, filling in config keys such as ``data.prefix``); ``source.build(split, **kw)``
then makes the data set of a split. ``build_dataset(cfg, split, task=...)`` does both for one split;
``data_source(cfg, task)`` gives the source, to build several splits from one resolution.

The built-in sources live in :mod:`.video_classification`, :mod:`.video_pretrain`,
:mod:`.image_classification` and :mod:`.video_text_corpora`; a task's module is imported on its first
lookup. Other code can register more names (or tasks) with the same decorator.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, TypeVar

T = TypeVar("T")

# task -> how error messages name it
TASKS = {
    "video_classification": "video classification",
    "video_pretrain": "masked video pretraining",
    "image_classification": "image classification",
    "video_text": "video-text pretraining",
}
# task -> the module (in this package) that registers its built-in data sets
_BUILTIN = {
    "video_classification": "video_classification",
    "video_pretrain": "video_pretrain",
    "image_classification": "image_classification",
    "video_text": "video_text_corpora",
}
_REGISTRY: dict[str, dict[str, Any]] = {}


class DataSource:
    """Base of the registered sources: ``__init__(cfg)`` resolves, ``build(split, **kw)`` builds."""

    task = ""   # set by register_dataset
    name = ""

    def __init__(self, cfg):
        self.cfg = cfg

    def build(self, split: str, **kw):
        raise NotImplementedError


def register_dataset(task: str, name: str) -> Callable[[T], T]:
    """Class decorator: the source of data set ``name`` (the value of ``data.name``) for ``task``."""
    def register(source: T) -> T:
        names = _REGISTRY.setdefault(task, {})
        old = names.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (source.__module__, source.__qualname__):
            raise ValueError(f"{_title(task)} data set {name!r} is already registered "
                             f"({old.__module__}.{old.__qualname__})")
        if isinstance(source, type):
            source.task, source.name = task, name
        names[name] = source
        return source
    return register


def _title(task: str) -> str:
    return TASKS.get(task, task.replace("_", " "))


def _load_builtin(task: str):
    module = _BUILTIN.get(task)
    if module is not None:
        importlib.import_module(f"{__package__}.{module}")


def dataset_names(task: str) -> tuple[str, ...]:
    """The registered ``data.name`` values of ``task``, sorted."""
    _load_builtin(task)
    if task not in _REGISTRY:
        raise ValueError(f"unknown data task {task!r}; known: {', '.join(sorted(set(TASKS) | set(_REGISTRY)))}")
    return tuple(sorted(_REGISTRY[task]))


def get_dataset(task: str, name) -> Any:
    """The source registered as ``name`` for ``task``; an unknown name is a one-line ``ValueError`` listing
    the known ones."""
    names = dataset_names(task)
    if not isinstance(name, str) or name not in names:
        raise ValueError(f"data.name must be one of {', '.join(repr(n) for n in names)} for {_title(task)}, "
                         f"got {name!r}")
    return _REGISTRY[task][name]


def data_source(cfg, task: str):
    """The source of ``cfg.data.name`` for ``task``, constructed from ``cfg`` (generates / resolves once)."""
    return get_dataset(task, cfg.data.get("name"))(cfg)


def build_dataset(cfg, split: str, *, task: str, **kw):
    """The ``split`` data set of ``cfg.data.name`` for ``task`` (keyword arguments go to the source's
    ``build``)."""
    return data_source(cfg, task).build(split, **kw)
