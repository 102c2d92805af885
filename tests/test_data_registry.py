"""The data-set registry (videomamba.data.registry): one entry point per task, dispatching on ``data.name``.

Every registered name builds its data set on tiny generated data (the Moving Digits generators are replaced
by a fake that returns a folder of a few short videos / images / caption files, so nothing is rendered);
unknown names give one line naming the known ones; the per-task defaults tables hold the values the task
files used before the registry; and the data layer imports nothing of the engine, the checkpoint code or the
task folders.
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest

from videomamba.data import defaults, moving_digits, registry
from videomamba.data.registry import build_dataset, data_source, dataset_names, register_dataset
from videomamba.engine import load_config

ROOT = Path(__file__).resolve().parents[1]
COUNTS = {"train": 5, "val": 3, "test": 4}      # videos per split of the tiny data
IMAGES = {"train": 2, "val": 1}                 # images per class and split (3 classes)


# ------------------------------------------------------------------------------------------ tiny data
def _videos(folder: Path, names: list[str], rng):
    for split, n in COUNTS.items():
        (folder / split).mkdir(parents=True)
        lines = []
        for i in range(n):
            moving_digits.write_mp4(folder / split / f"{i}.mp4", rng.integers(0, 255, (8, 32, 32), dtype=np.uint8))
            lines.append(f"{split}/{i}.mp4,{i % len(names)}")
        (folder / f"{split}.csv").write_text("\n".join(lines) + "\n")
    (folder / "classes.txt").write_text("\n".join(names) + "\n")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A folder laid out as the generators' output: videos/, long_videos/, images/, video_text/, plus
    space-separated lists (the VideoMAE format of the pretraining recipes) in lists/."""
    pytest.importorskip("av")
    from PIL import Image

    root = tmp_path_factory.mktemp("tiny_md")
    rng = np.random.default_rng(0)
    _videos(root / "videos", list(moving_digits.MOTIONS), rng)
    _videos(root / "long_videos", [f"sequence {i}" for i in range(10)], rng)
    (root / "lists").mkdir()
    for split in ("train", "val"):
        rows = [line.replace(",", " ") for line in (root / "videos" / f"{split}.csv").read_text().splitlines()]
        (root / "lists" / f"{split}.txt").write_text("\n".join(rows) + "\n")
    images = root / "images"
    for split, per_class in IMAGES.items():
        lines = []
        for label in range(3):
            (images / split / str(label)).mkdir(parents=True)
            for i in range(per_class):
                rel = f"{split}/{label}/{i}.png"
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(images / rel)
                lines.append(f"{rel} {label}")
        (images / f"{split}.txt").write_text("\n".join(lines) + "\n")
    text = root / "video_text"
    text.mkdir()
    for split, n in COUNTS.items():
        entries = [{"video": f"{split}/{i}.mp4", "caption": [f"video {i}", f"clip {i}"]} for i in range(n)]
        (text / f"{split}_video.json").write_text(json.dumps(entries))
    entries = [{"image": f"train/{label}/{i}.png", "caption": [f"digit {label}"]}
               for label in range(3) for i in range(IMAGES["train"])]
    (text / "train_image.json").write_text(json.dumps(entries))
    return root


@pytest.fixture
def generated(tiny, monkeypatch):
    """The Moving Digits generators return the tiny folders; ``calls`` records how they were called."""
    calls = []

    def videos(root=None, long=False, **kw):
        calls.append(("videos", root, long))
        return tiny / ("long_videos" if long else "videos")

    def images(root=None, canvas=32, **kw):
        calls.append(("images", root, canvas))
        return tiny / "images"

    def captions(root=None, **kw):
        calls.append(("captions", root))
        return tiny / "video_text"

    monkeypatch.setattr(moving_digits, "make_video_variant", videos)
    monkeypatch.setattr(moving_digits, "make_image_variant", images)
    monkeypatch.setattr(moving_digits, "make_video_text_variant", captions)
    return calls


def _cfg(name: str, *opts: str):
    return load_config(ROOT / "configs" / name, list(opts))


# ------------------------------------------------------------------------------------------ unknown names
@pytest.mark.parametrize("task,config,known", [
    ("video_classification", "video_sm/moving_digits.yaml",
     "'csv', 'moving_digits', 'moving_digits_groups', 'moving_digits_long' for video classification"),
    ("video_pretrain", "video_sm/moving_digits_pretrain.yaml", "'csv', 'moving_digits' for masked video pretraining"),
    ("image_classification", "image_sm/moving_digits_tiny.yaml", "'folder', 'moving_digits', 'moving_digits_video_scale' for image classification"),
    ("video_text", "video_mm/moving_digits_masked.yaml", "'moving_digits' for video-text pretraining"),
])
def test_unknown_name_is_one_line_listing_the_known_names(task, config, known):
    cfg = _cfg(config, "data.name=imagenet_22k")
    with pytest.raises(ValueError) as err:
        build_dataset(cfg, "train", task=task)
    assert str(err.value) == f"data.name must be one of {known}, got 'imagenet_22k'"
    assert "\n" not in str(err.value)


def test_the_task_entry_points_give_the_registry_error():
    import image_sm.data
    import video_sm.data

    with pytest.raises(ValueError, match=r"^data.name must be one of 'csv', 'moving_digits', 'moving_digits_groups', "
                                         r"'moving_digits_long' for video classification, got 'x'$"):
        video_sm.data.resolve_files(_cfg("video_sm/moving_digits.yaml", "data.name=x"))
    with pytest.raises(ValueError, match=r"^data.name must be one of 'folder', 'moving_digits', "
                                         r"'moving_digits_video_scale' for image classification, got 'x'$"):
        image_sm.data.build_datasets(_cfg("image_sm/moving_digits_tiny.yaml", "data.name=x"))


def test_unknown_task_and_duplicate_names():
    with pytest.raises(ValueError, match="unknown data task 'audio'"):
        dataset_names("audio")

    @register_dataset("test_only_task", "a")
    class A(registry.DataSource):
        def build(self, split):
            return split

    try:
        assert (A.task, A.name) == ("test_only_task", "a")
        assert dataset_names("test_only_task") == ("a",)
        assert build_dataset(_cfg("video_sm/moving_digits.yaml", "data.name=a"), "val", task="test_only_task") == "val"
        with pytest.raises(ValueError, match="'a' is already registered"):
            register_dataset("test_only_task", "a")(type("B", (registry.DataSource,), {}))
    finally:
        registry._REGISTRY.pop("test_only_task")


def test_every_task_registers_the_expected_names():
    assert dataset_names("video_classification") == ("csv", "moving_digits", "moving_digits_groups", "moving_digits_long")
    assert dataset_names("video_pretrain") == ("csv", "moving_digits")
    assert dataset_names("image_classification") == ("folder", "moving_digits", "moving_digits_video_scale")
    assert dataset_names("video_text") == ("moving_digits",)


# ------------------------------------------------------------------------------------------ each name builds
@pytest.mark.parametrize("config,opts,long", [
    ("video_sm/moving_digits.yaml", [], False),
    ("video_sm/moving_digits_long.yaml", [], True),
    ("video_sm/moving_digits.yaml", ["data.name=csv"], None),
])
def test_video_classification_sets(tiny, generated, config, opts, long):
    from videomamba.data.video_dataset import VideoClipDataset

    if long is None:
        opts = opts + [f"data.data_path={tiny / 'videos'}", f"data.prefix={tiny / 'videos'}"]
    cfg = _cfg(config, "data.num_frames=4", "data.input_size=32", *opts)
    source = data_source(cfg, "video_classification")
    folder = tiny / ("long_videos" if long else "videos")
    assert source.files == {s: folder / f"{s}.csv" for s in ("train", "val", "test")}
    assert generated == ([] if long is None else [("videos", None, long)])
    if long is not None:   # the generated class names; csv has none unless data.class_names
        assert source.class_names == (folder / "classes.txt").read_text().splitlines()
        assert cfg.data.prefix == str(folder)
    else:
        assert source.class_names is None
    sets = {s: source.build(s) for s in ("train", "val", "test")}
    assert all(type(ds) is VideoClipDataset for ds in sets.values())
    assert {s: len(ds) for s, ds in sets.items()} == COUNTS
    assert [r.path for r in sets["val"].records] == [str(folder / f"val/{i}.mp4") for i in range(COUNTS["val"])]
    views = source.build("test", test_views=True)
    assert len(views) == COUNTS["test"] * cfg.test.num_views * cfg.test.num_crops
    x, label = sets["train"][0]
    assert tuple(x.shape) == (cfg.data.num_sample, 3, 4, 32, 32) and label == 0
    # the same through the one-call entry point and the task's own functions
    assert len(build_dataset(cfg, "val", task="video_classification")) == COUNTS["val"]
    import video_sm.data

    files, names = video_sm.data.resolve_files(cfg)
    assert files == source.files and names == source.class_names
    assert len(video_sm.data.build_dataset(cfg, "train", files["train"])) == COUNTS["train"]


@pytest.mark.parametrize("name", ["moving_digits", "csv"])
def test_video_pretrain_sets_use_the_pretraining_defaults(tiny, generated, name):
    """Config without data.delimiter / sampler / sampling_rate / val: the pretraining defaults apply."""
    from videomamba.data import video_pretrain
    from videomamba.data.video_dataset import VideoClipDataset

    opts = ["data.num_frames=4", "data.input_size=32"]
    if name == "csv":   # the VideoMAE lists: "path label", space-separated
        opts += ["data.name=csv", f"data.train_file={tiny / 'lists' / 'train.txt'}", f"data.prefix={tiny / 'videos'}"]
    cfg = _cfg("video_sm/moving_digits_pretrain.yaml", *opts)
    for key in ("delimiter", "sampler", "sampling_rate", "val"):
        cfg.data.pop(key, None)
    if name == "moving_digits":   # the generated files are "path,label"
        cfg.data.delimiter = ","
    files = video_pretrain.annotation_files(cfg)
    if name == "moving_digits":
        assert files == {"train": tiny / "videos" / "train.csv", "val": tiny / "videos" / "val.csv"}
    else:
        assert files == {"train": tiny / "lists" / "train.txt", "val": None}
    train, val = video_pretrain.pretrain_sets(cfg, files)
    assert type(train) is VideoClipDataset and len(train) == COUNTS["train"]
    assert (train.sampler, train.sampling_rate, train.num_sample) == ("sparse", 4, 1)
    assert tuple(train[0][0].shape) == (1, 3, 4, 32, 32)
    if name == "moving_digits":
        assert type(val) is VideoClipDataset and len(val) == COUNTS["val"]
        assert len(build_dataset(cfg, "val", task="video_pretrain")) == COUNTS["val"]
    else:
        assert val is None and build_dataset(cfg, "val", task="video_pretrain") is None
        cfg.data.val = True   # data.val: data_path/val.csv ...
        cfg.data.data_path, cfg.data.train_file = str(tiny / "lists"), None
        assert video_pretrain.annotation_files(cfg) == {"train": tiny / "lists" / "train.csv",
                                                        "val": tiny / "lists" / "val.csv"}
        cfg.data.val_file = str(tiny / "lists" / "val.txt")   # ... or data.val_file
        assert len(build_dataset(cfg, "val", task="video_pretrain")) == COUNTS["val"]


@pytest.mark.parametrize("name", ["moving_digits", "folder"])
def test_image_classification_sets(tiny, generated, name):
    from videomamba.data.image_dataset import ImageDataset

    import image_sm.data

    opts = [] if name == "moving_digits" else [
        "data.name=folder", f"data.train_root={tiny / 'images' / 'train'}", f"data.val_root={tiny / 'images' / 'val'}"]
    cfg = _cfg("image_sm/moving_digits_tiny.yaml", *opts)
    train, val = image_sm.data.build_datasets(cfg)
    assert type(train) is ImageDataset and type(val) is ImageDataset
    assert (len(train), len(val)) == (3 * IMAGES["train"], 3 * IMAGES["val"])
    assert generated == ([("images", None, cfg.data.img_size)] if name == "moving_digits" else [])
    assert train.source == str(tiny / "images" / ("train.txt" if name == "moving_digits" else "train"))
    assert tuple(train[0][0].shape) == (3, cfg.data.img_size, cfg.data.img_size)


def test_video_text_sets(tiny, generated):
    from videomamba.data.video_text import ConcatCaptioned, RetrievalCorpus
    from videomamba.data.video_text_corpora import VideoTextSource, video_text_source

    cfg = _cfg("video_mm/moving_digits_zero_shot.yaml")
    train = build_dataset(cfg, "train", task="video_text")
    assert generated == [("captions", None)]
    assert (cfg.data.anno_root, cfg.data.media_root) == (str(tiny / "video_text"), str(tiny))
    assert set(train) == {"video", "image"} and all(type(s) is ConcatCaptioned for s in train.values())
    assert (len(train["video"]), len(train["image"])) == (COUNTS["train"], 3 * IMAGES["train"])
    test = data_source(cfg, "video_text").build("test")
    assert type(test["digits_test"]["corpus"]) is RetrievalCorpus
    assert len(test["digits_test"]["corpus"].records) == COUNTS["test"]
    # without data.name: the corpora as configured
    cfg.data.pop("name")
    assert type(video_text_source(cfg)) is VideoTextSource
    assert len(video_text_source(cfg).build("train")["video"]) == COUNTS["train"]


# ------------------------------------------------------------------------------------------ defaults
def test_pretrain_defaults_are_the_old_pretrain_values():
    """What video_sm/pretrain.py used where a config leaves the key out."""
    d = defaults.VIDEO_PRETRAIN
    assert d.delimiter == " "
    assert d.sampler == "sparse"
    assert d.sampling_rate == 4
    assert dict(d.val) == {"csv": False, "moving_digits": True}


def test_classification_defaults_are_the_old_video_sm_values():
    d = defaults.VIDEO_CLASSIFICATION
    assert (d.delimiter, d.sampling_rate, d.trimmed, d.time_stride, d.num_sample, d.check_files) == (",", 4, 60, 16, 1,
                                                                                                      True)
    assert (d.remode, d.train_interpolation) == ("pixel", "bicubic")
    i = defaults.IMAGE_CLASSIFICATION
    assert (i.check_files, i.remode, i.recount, i.train_interpolation) == (True, "pixel", 1, "bicubic")
    t = defaults.VIDEO_TEXT
    assert (t.media, t.expand_captions, t.paragraph, t.sample_train, t.hflip) == ("video", True, False, "rand", 0.5)


def test_the_data_sets_default_to_the_shared_constants():
    import inspect

    from videomamba.data import sampling
    from videomamba.data.video_dataset import VideoClipDataset

    params = inspect.signature(VideoClipDataset).parameters
    assert params["sampling_rate"].default == defaults.SAMPLING_RATE == 4
    assert (params["trimmed"].default, params["time_stride"].default) == (defaults.TRIMMED, defaults.TIME_STRIDE)
    assert inspect.signature(sampling.clip_indices).parameters["sampling_rate"].default == defaults.SAMPLING_RATE


# ------------------------------------------------------------------------------------------ imports
def _imports(path: Path, package: str) -> list[str]:
    """Every module an import statement of ``path`` names (also inside functions), relative ones resolved."""
    here = package.split(".")
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = here[:len(here) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            out += [module] + [f"{module}.{a.name}" for a in node.names]
    return out


def _data_modules():
    data = ROOT / "videomamba" / "data"
    for path in sorted(data.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("").parts
        package = ".".join(rel[:-1])
        yield path, ".".join(rel if path.name != "__init__.py" else rel[:-1]), package


def test_the_import_resolver_sees_relative_and_lazy_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from ..engine import dist\n    import video_sm.data\n")
    assert _imports(f, "videomamba.data") == ["videomamba.engine", "videomamba.engine.dist", "video_sm.data"]


def test_the_data_layer_imports_no_engine_checkpoint_or_task_code():
    forbidden = ("videomamba.engine", "videomamba.checkpoint", "video_sm", "image_sm", "video_mm", "tools")
    bad = [f"{path.relative_to(ROOT)} imports {name}" for path, _, package in _data_modules()
           for name in _imports(path, package) if any(name == p or name.startswith(p + ".") for p in forbidden)]
    assert not bad, bad


def test_video_io_and_video_transforms_import_one_way():
    imports = {mod: _imports(path, package) for path, mod, package in _data_modules()}
    assert any(n.startswith("videomamba.data.video_transforms") for n in imports["videomamba.data.video_io"])
    assert not any(n.startswith("videomamba.data.video_io") for n in imports["videomamba.data.video_transforms"])
    from videomamba.data import video_io, video_transforms

    assert video_io.IMAGENET_MEAN is video_transforms.IMAGENET_MEAN   # still importable from video_io


def test_data_error_is_one_class_everywhere():
    import videomamba.data
    from videomamba.data import errors, image_dataset

    assert image_dataset.DataError is errors.DataError is videomamba.data.DataError
    assert issubclass(errors.DataError, ValueError)
