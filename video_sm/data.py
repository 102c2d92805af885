"""Video data for video_sm: the embedded Moving Digits videos or annotation files of a real data set
(K400, SSv2, Breakfast, COIN, LVU), with the official train augmentation and the val/test views."""
from __future__ import annotations

from pathlib import Path

from videomamba.data.image_dataset import DataError
from videomamba.data.video_dataset import VideoClipDataset, read_video_annotations, report_missing
from videomamba.data.video_transforms import VideoEvalTransform, VideoTrainTransform
from videomamba.engine.dist import is_main, main_process_first

SPLITS = ("train", "val", "test")


def resolve_files(cfg) -> tuple[dict[str, Path], list[str] | None]:
    """Annotation file per split and the class names (if known).

    ``data.name``: 'moving_digits' / 'moving_digits_long' (generated on first use into ``data.root``) or
    'csv': ``data.data_path/{train,val,test}.csv``, each overridable with ``data.{split}_file``; names
    from ``data.class_names`` (a text file, one per line) when given."""
    d = cfg.data
    names = None
    if d.name in ("moving_digits", "moving_digits_long"):
        from videomamba.data.moving_digits import make_video_variant

        with main_process_first():   # one rank renders the videos, the others wait and read them
            root = make_video_variant(d.get("root"), long=d.name == "moving_digits_long")
        files = {s: root / f"{s}.csv" for s in SPLITS}
        names = (root / "classes.txt").read_text().splitlines()
        d.prefix = d.get("prefix") or str(root)   # the csv paths are relative to the generated folder
    elif d.name == "csv":
        base = Path(d.data_path) if d.get("data_path") else None
        files = {}
        for s in SPLITS:
            f = d.get(f"{s}_file") or (base / f"{s}.csv" if base is not None else None)
            if f is None:
                raise ValueError(f"data.name=csv needs data.data_path (with {s}.csv) or data.{s}_file")
            files[s] = Path(f)
    else:
        raise ValueError(f"data.name must be 'moving_digits', 'moving_digits_long' or 'csv', got {d.name!r}")
    if d.get("class_names"):
        from videomamba.data.labels import load_label_names

        names = load_label_names(d.class_names)
    if names is not None and not cfg.model.get("regression") and len(names) != cfg.model.num_classes:
        raise DataError(f"{len(names)} class names but model.num_classes={cfg.model.num_classes}")
    return files, names


def build_dataset(cfg, split: str, file: Path, test_views: bool = False) -> VideoClipDataset:
    """``split='train'`` -> augmented clips; otherwise evaluation views: the validation clip, or with
    ``test_views`` the ``test.num_views x test.num_crops`` protocol."""
    d, a, m = cfg.data, cfg.aug, cfg.model
    regression = bool(m.get("regression"))
    records = read_video_annotations(file, d.get("prefix") or "", d.get("delimiter", ","),
                                     None if regression else m.num_classes, regression,
                                     need_duration=d.sampler == "lvu")
    if d.get("limit_videos"):   # the first N videos of each split (quick experiments and tests)
        records = records[:int(d.limit_videos)]
    if is_main() and d.get("check_files", True):
        report_missing(records, str(file))
    common = dict(num_frames=d.num_frames, sampler=d.sampler, sampling_rate=d.get("sampling_rate", 4),
                  trimmed=d.get("trimmed", 60), time_stride=d.get("time_stride", 16), backend=d.get("backend"),
                  source=str(file), time_control=d.get("time_control"))
    if split == "train":
        transform = VideoTrainTransform(d.input_size, a.get("auto_augment"), a.scale, a.ratio, a.hflip,
                                        a.reprob, a.get("remode", "pixel"),
                                        interpolation=a.get("train_interpolation", "bicubic"))
        return VideoClipDataset(records, "train", transform=transform, num_sample=int(d.get("num_sample") or 1),
                                **common)
    t = cfg.test
    views, crops = (t.num_views, t.num_crops) if test_views else (1, 1)
    transform = VideoEvalTransform(d.input_size, d.get("short_side_size") or d.input_size, crops)
    return VideoClipDataset(records, "eval", transform=transform, num_views=views, num_crops=crops, **common)
