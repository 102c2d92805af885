"""Video classification / regression data by ``data.name`` (``video_sm`` fine-tuning): the embedded Moving
Digits videos or annotation files of a real data set (K400, SSv2, Breakfast, COIN, LVU), with the official
train augmentation and the val/test views. Defaults: :data:`videomamba.data.defaults.VIDEO_CLASSIFICATION`.

The pieces every video task shares are here too (masked pretraining uses them): the Moving Digits videos
(:func:`moving_digits_videos`), the annotation file of a split (:func:`split_file`) and reading one
(:func:`read_records`).

Registered names (task ``video_classification``):

- ``moving_digits`` / ``moving_digits_long``: generated on first use into ``data.root``;
- ``moving_digits_groups``: the same videos, labelled with their captions' 80 (digit, motion) groups;
- ``csv``: ``data.data_path/{train,val,test}.csv``, each overridable with ``data.{split}_file``.

Class names come from the generated data, or from ``data.class_names`` (a text file, one per line, or a
bundled list such as ``kinetics400``) when given.
"""
from __future__ import annotations

from pathlib import Path

from ..utils.dist import is_main, main_process_first
from .defaults import VIDEO_CLASSIFICATION
from .errors import DataError
from .registry import DataSource, data_source, register_dataset
from .video_dataset import VideoClipDataset, VideoRecord, read_video_annotations, report_missing
from .video_transforms import VideoEvalTransform, VideoTrainTransform

TASK = "video_classification"
SPLITS = ("train", "val", "test")


# ------------------------------------------------------------------------------------- shared by the video tasks
def moving_digits_videos(d, long: bool = False) -> Path:
    """The Moving Digits videos (``long``: the 64-frame sequence variant), generated into ``data.root`` on
    first use: one rank renders them, the others wait and read them. ``data.prefix`` defaults to the
    generated folder (the csv paths are relative to it)."""
    from . import moving_digits

    with main_process_first():
        root = moving_digits.make_video_variant(d.get("root"), long=long)
    d.prefix = d.get("prefix") or str(root)
    return root


def split_file(d, split: str) -> Path | None:
    """``data.{split}_file``, else ``data.data_path/{split}.csv``, else None."""
    f = d.get(f"{split}_file") or (Path(d.data_path) / f"{split}.csv" if d.get("data_path") else None)
    return Path(f) if f else None


def read_records(d, file: Path, delimiter: str, num_classes: int | None = None, regression: bool = False,
                 need_duration: bool = False, check_files: bool = False) -> list[VideoRecord]:
    """The records of one annotation file (``data.prefix`` joined to the paths), the first
    ``data.limit_videos`` of them when set; ``check_files``: rank 0 warns about listed videos that do not
    exist."""
    records = read_video_annotations(file, d.get("prefix") or "", delimiter, num_classes, regression,
                                     need_duration=need_duration)
    if d.get("limit_videos"):   # the first N videos of each split (quick experiments and tests)
        records = records[:int(d.limit_videos)]
    if check_files and is_main():
        report_missing(records, str(file))
    return records


# ------------------------------------------------------------------------------------- video classification
def clip_dataset(cfg, split: str, file: Path, test_views: bool = False) -> VideoClipDataset:
    """``split='train'`` -> augmented clips; otherwise evaluation views: the validation clip, or with
    ``test_views`` the ``test.num_views x test.num_crops`` protocol."""
    d, a, m, D = cfg.data, cfg.aug, cfg.model, VIDEO_CLASSIFICATION
    regression = bool(m.get("regression"))
    records = read_records(d, file, d.get("delimiter", D.delimiter), None if regression else m.num_classes,
                           regression, need_duration=d.sampler == "lvu",
                           check_files=d.get("check_files", D.check_files))
    common = dict(num_frames=d.num_frames, sampler=d.sampler, sampling_rate=d.get("sampling_rate", D.sampling_rate),
                  trimmed=d.get("trimmed", D.trimmed), time_stride=d.get("time_stride", D.time_stride),
                  backend=d.get("backend"), source=str(file), time_control=d.get("time_control"))
    if split == "train":
        transform = VideoTrainTransform(d.input_size, a.get("auto_augment"), a.scale, a.ratio, a.hflip,
                                        a.reprob, a.get("remode", D.remode),
                                        interpolation=a.get("train_interpolation", D.train_interpolation))
        return VideoClipDataset(records, "train", transform=transform,
                                num_sample=int(d.get("num_sample") or D.num_sample), **common)
    t = cfg.test
    views, crops = (t.num_views, t.num_crops) if test_views else (1, 1)
    transform = VideoEvalTransform(d.input_size, d.get("short_side_size") or d.input_size, crops)
    return VideoClipDataset(records, "eval", transform=transform, num_views=views, num_crops=crops, **common)


def checked_class_names(cfg, names: list[str] | None) -> list[str] | None:
    """``data.class_names`` when set, else ``names``; their number must be ``model.num_classes``."""
    d = cfg.data
    if d.get("class_names"):
        from .labels import load_label_names

        names = load_label_names(d.class_names)
    if names is not None and not cfg.model.get("regression") and len(names) != cfg.model.num_classes:
        raise DataError(f"{len(names)} class names but model.num_classes={cfg.model.num_classes}")
    return names


class VideoClassificationSource(DataSource):
    """``files``: split -> annotation file (every split of :data:`SPLITS`); ``class_names``: a list or None;
    ``factors_file``: the data set's class factors (:func:`read_class_factors`), or None.
    ``build(split, file=None, test_views=False)``: :func:`clip_dataset` of that split's file."""

    factors_file: Path | None = None

    def __init__(self, cfg):
        super().__init__(cfg)
        files, names = self.locate(cfg.data)
        self.files: dict[str, Path] = files
        self.class_names = checked_class_names(cfg, names)

    def locate(self, d) -> tuple[dict[str, Path], list[str] | None]:
        raise NotImplementedError

    def build(self, split: str, file: Path | None = None, test_views: bool = False) -> VideoClipDataset:
        return clip_dataset(self.cfg, split, self.files[split] if file is None else file, test_views)


@register_dataset(TASK, "moving_digits")
class MovingDigitsVideos(VideoClassificationSource):
    """8 motion classes in 16-frame videos, generated on first use into ``data.root``."""
    long = False

    def locate(self, d):
        root = moving_digits_videos(d, long=self.long)
        return {s: root / f"{s}.csv" for s in SPLITS}, (root / "classes.txt").read_text().splitlines()


@register_dataset(TASK, "moving_digits_long")
class LongMovingDigitsVideos(MovingDigitsVideos):
    """4 motions in sequence (64 frames), 10 ordered-sequence classes."""
    long = True


@register_dataset(TASK, "moving_digits_groups")
class MovingDigitsGroups(VideoClassificationSource):
    """The same videos labelled with their captions' (digit, motion) group: 80 classes
    (:func:`videomamba.data.moving_digits.make_group_variant`), the video-text pipeline's video stage."""

    def locate(self, d):
        from . import moving_digits

        with main_process_first():
            groups = moving_digits.make_group_variant(d.get("root"))
        moving_digits_videos(d)   # the videos themselves (already made) and data.prefix
        self.factors_file = groups / "class_factors.json"   # each group's digit and motion
        return {s: groups / f"{s}.csv" for s in SPLITS}, (groups / "classes.txt").read_text().splitlines()


@register_dataset(TASK, "csv")
class CsvVideos(VideoClassificationSource):
    """``data.data_path/{split}.csv`` or ``data.{split}_file`` for every split."""

    def locate(self, d):
        files = {}
        for s in SPLITS:
            f = split_file(d, s)
            if f is None:
                raise ValueError(f"data.name=csv needs data.data_path (with {s}.csv) or data.{s}_file")
            files[s] = f
        return files, None


def read_class_factors(path: str | Path, num_classes: int) -> dict[str, list[int]]:
    """A class-factors file: JSON ``{"factor name": [the label of class 0, of class 1, ...], ...}``, one list of
    ``num_classes`` labels (ints >= 0) per factor, e.g. ``{"verb": [...], "noun": [...]}`` for (verb, noun)
    actions. Read for ``model.head_factors`` (:class:`videomamba.modules.factored_head.FactoredHead`)."""
    import json

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: class-factors file not found (model.head_factors)")
    try:
        factors = json.loads(path.read_text())
    except ValueError as err:
        raise DataError(f"{path}: not JSON ({err}); expected {{\"factor\": [label of each class, ...]}}") from None
    if not isinstance(factors, dict) or not factors:
        raise DataError(f"{path}: expected a JSON object {{\"factor\": [label of each class, ...]}}")
    for name, labels in factors.items():
        if not isinstance(labels, list) or len(labels) != num_classes:
            got = f"{len(labels)} labels" if isinstance(labels, list) else type(labels).__name__
            raise DataError(f"{path}: factor {name!r}: expected a list of {num_classes} labels "
                            f"(model.num_classes), got {got}")
        bad = next((v for v in labels if not isinstance(v, int) or isinstance(v, bool) or v < 0), None)
        if bad is not None:
            raise DataError(f"{path}: factor {name!r}: labels must be ints >= 0, got {bad!r}")
    return factors


def resolve_class_factors(cfg) -> dict[str, list[int]] | None:
    """``model.head_factors``: None (a plain head), ``data`` (the data set's own class factors, e.g. the
    (digit, motion) of ``moving_digits_groups``) or the path of a class-factors file (:func:`read_class_factors`)."""
    spec = cfg.model.get("head_factors")
    if not spec:
        return None
    if spec == "data":
        path = getattr(data_source(cfg, TASK), "factors_file", None)
        if path is None:
            raise DataError(f"model.head_factors=data: data.name={cfg.data.name} has no class factors; give "
                            "the path of a JSON file {\"factor\": [label of each class, ...]} instead")
    else:
        path = Path(spec)
    return read_class_factors(path, int(cfg.model.num_classes))


def resolve_files(cfg) -> tuple[dict[str, Path], list[str] | None]:
    """Annotation file per split and the class names (if known) of ``cfg.data.name``."""
    source = data_source(cfg, TASK)
    return source.files, source.class_names
