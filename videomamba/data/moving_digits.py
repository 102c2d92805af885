"""The embedded default data set, "Moving Digits", built from scikit-learn's 1,797 real handwritten
digits (8x8 grey). Deterministic from a seed, generated once into a cache folder.

Variants, each written once into its own folder of the cache:

- images (image_sm): the 10 digit classes as an ImageFolder tree plus ``relpath label`` meta files.
- images at the videos' scale (video_mm's image model and image corpus): the same, on a 64 px canvas with
  the digit as large as in the videos.
- videos (video_sm): 8 motion classes in 16-frame H.264 ``.mp4`` files with Kinetics-style
  ``relpath,label`` csv files; each class is the time-reverse of another, so one frame (or a shuffled
  clip) cannot tell a pair apart.
- long videos (video_sm, Breakfast/COIN-like): 4 motions in sequence, 64 frames; the label is the
  ordered sequence, and every sequence has a partner with the same motions in the opposite order.
- video-text captions (video_mm): JSON annotations over the videos ("a handwritten seven moving left" and
  paraphrases; several captions per val/test video) and the video-scale images ("a handwritten seven"), each
  entry with its ``"group"`` (digit and motion: the entries whose captions say the same).

Splits are by digit image: no source digit appears in two splits.
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


def _publish(tmp: Path, out: Path, settings: dict):
    """Stamp a finished ``tmp`` folder with its ``settings.json`` and put it in place of ``out`` (readers see the
    old folder or the whole new one, never a half-written one)."""
    (tmp / "settings.json").write_text(json.dumps(settings))
    if out.exists():
        import shutil

        shutil.rmtree(out)
    os.replace(tmp, out)


def _split_indices(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    order = rng.permutation(n)
    n_train, n_val = int(SPLITS["train"] * n), int(SPLITS["val"] * n)
    return {"train": order[:n_train], "val": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}


IMAGE_SCALE = (0.6, 0.9)     # the image variant's digit side, as a fraction of its canvas
VIDEO_SCALE = (0.375, 0.5)   # a video's digit side (before zoom): 24-32 px on the 64 px canvas


def render_digit(img8: np.ndarray, canvas: int, rng: np.random.Generator, noise: float = 0.04,
                 scale: tuple[float, float] = IMAGE_SCALE) -> np.ndarray:
    """Scale an 8x8 digit (0..16) to ``scale`` (fractions) of the canvas at a random position, add light
    noise -> uint8."""
    from PIL import Image

    size = int(rng.integers(int(scale[0] * canvas), int(scale[1] * canvas) + 1))
    digit = Image.fromarray((img8 / 16.0 * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    out = np.zeros((canvas, canvas), dtype=np.float32)
    y, x = rng.integers(0, canvas - size + 1, size=2)
    out[y:y + size, x:x + size] = np.asarray(digit, dtype=np.float32) / 255.0
    out = np.clip(out + rng.normal(0, noise, out.shape), 0, 1)
    return (out * 255).astype(np.uint8)


def make_image_variant(root: str | os.PathLike | None = None, canvas: int = 32, renders_per_digit: int = 2,
                       seed: int = 0, scale: tuple[float, float] = IMAGE_SCALE, folder: str = "images") -> Path:
    """Write ``root/{folder}/{split}/{label}/*.png`` and ``root/{folder}/{split}.txt`` (``relpath label``),
    digits ``scale`` of the canvas (see :func:`make_video_scale_images` for the video's scale).

    Idempotent: returns at once when the folder was already made with the same settings.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    root = Path(root) if root is not None else default_root()
    out = root / folder
    settings = {"canvas": canvas, "renders_per_digit": renders_per_digit, "seed": seed, "version": 1}
    if tuple(scale) != IMAGE_SCALE:   # the default variant keeps its stamp (no regeneration in old caches)
        settings["scale"] = list(scale)
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
                Image.fromarray(render_digit(digits.images[i], canvas, rng, scale=scale)).convert("RGB").save(path)
                lines.append(f"{rel} {label}")
        (tmp / f"{split}.txt").write_text("\n".join(lines) + "\n")
    _publish(tmp, out, settings)
    return out


VIDEO_SCALE_IMAGES = "images_video_scale"


def make_video_scale_images(root: str | os.PathLike | None = None, seed: int = 0) -> Path:
    """The image variant at the videos' scale, ``root/images_video_scale``: a 64 px canvas with the digit
    24-32 px at a random place, as in a video frame (the plain image variant fills 60-90% of a 32 px
    canvas). The same digit split; what the video-text pipeline's image model and image corpus use, so
    that what they learn about digits holds in the videos."""
    return make_image_variant(root, canvas=64, seed=seed, scale=VIDEO_SCALE, folder=VIDEO_SCALE_IMAGES)


# ---------------------------------------------------------------------------------------------- videos
MOTIONS = ("move left", "move right", "move up", "move down", "zoom in", "zoom out", "rotate clockwise",
           "rotate counter-clockwise")
# Long variant: 5 motion sets, each in two orders (the second is the first read backwards), so a model
# must see the whole sequence in order; a bag of motions is at chance within each pair.
_LONG_SEQUENCES = ((0, 2, 4, 6), (1, 3, 5, 7), (2, 5, 1, 6), (3, 4, 7, 0), (6, 1, 3, 4))
LONG_CLASSES = tuple(seq for base in _LONG_SEQUENCES for seq in (base, base[::-1]))


def long_class_names() -> list[str]:
    return [" then ".join(MOTIONS[m] for m in seq) for seq in LONG_CLASSES]


def _digit_sprite(img8: np.ndarray, size: float, angle: float):
    """The digit as a float ``(s, s)`` array in [0, 1], scaled to ``size`` px and rotated by ``angle``
    degrees (counter-clockwise as displayed; the corners stay inside the sprite)."""
    from PIL import Image

    side = max(2, int(round(size)))
    im = Image.fromarray((img8 / 16.0 * 255).astype(np.uint8)).resize((side, side), Image.BICUBIC)
    if angle:
        im = im.rotate(angle, resample=Image.BICUBIC, expand=True)
    return np.asarray(im, dtype=np.float32) / 255.0


def render_motion(img8: np.ndarray, motion: int, rng: np.random.Generator, canvas: int = 64, frames: int = 16,
                  noise: float = 0.04) -> np.ndarray:
    """One motion clip as uint8 ``(frames, canvas, canvas)``.

    The path (positions, scales or angles) is drawn first as an unordered segment ``[a, b]`` and the
    motion only picks its direction, so each class is exactly the time-reverse of its partner in
    distribution (e.g. "move left" from x=b to x=a versus "move right" from a to b).
    """
    base = float(rng.uniform(*VIDEO_SCALE)) * canvas   # digit side: 24-32 px on a 64 px canvas
    t = np.linspace(0.0, 1.0, frames)
    # right/down, zoom in and counter-clockwise run their segment a -> b, their partners b -> a
    ramp = t if motion in (1, 3, 4, 7) else t[::-1]
    size = np.full(frames, base)
    angle = np.zeros(frames)
    if motion < 4:                                      # translation along x (0, 1) or y (2, 3)
        dist = float(rng.uniform(0.25, 0.4)) * canvas
        along = float(rng.uniform(0, canvas - base - dist)) + dist * ramp + base / 2
        across = np.full(frames, float(rng.uniform(0, canvas - base)) + base / 2)
        centre = np.stack([along, across] if motion < 2 else [across, along], 1)   # (x, y)
    elif motion < 6:                                    # zoom: the side grows (in) or shrinks (out)
        big = float(rng.uniform(0.55, 0.7)) * canvas
        small = float(rng.uniform(0.4, 0.55))          # smallest side as a fraction of the largest
        size = big * (small + (1 - small) * ramp)
        centre = np.tile(rng.uniform(big / 2 + 1, canvas - big / 2 - 1, size=2), (frames, 1))
    else:                                               # rotation by 120-180 degrees (PIL: counter-clockwise)
        turn = float(rng.uniform(120, 180))
        angle = float(rng.uniform(-30, 30)) - turn / 2 + turn * ramp
        half = base * 0.72                              # half the diagonal of the rotated sprite
        centre = np.tile(rng.uniform(half, canvas - half, size=2), (frames, 1))
    out = np.zeros((frames, canvas, canvas), dtype=np.float32)
    for f in range(frames):
        sprite = _digit_sprite(img8, size[f], angle[f])
        x0 = int(round(centre[f, 0] - sprite.shape[1] / 2))
        y0 = int(round(centre[f, 1] - sprite.shape[0] / 2))
        ys = slice(max(y0, 0), min(y0 + sprite.shape[0], canvas))
        xs = slice(max(x0, 0), min(x0 + sprite.shape[1], canvas))
        out[f, ys, xs] = np.maximum(out[f, ys, xs], sprite[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0])
    out = np.clip(out + rng.normal(0, noise, out.shape), 0, 1)
    return (out * 255).astype(np.uint8)


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: int = 8):
    """Grey ``(T, H, W)`` or RGB ``(T, H, W, 3)`` uint8 frames -> an H.264 (yuv420p) ``.mp4``."""
    import av

    if frames.ndim == 3:
        frames = np.repeat(frames[..., None], 3, axis=-1)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "18"}   # fast to write and to decode; digits stay crisp
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _balanced_labels(n: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.resize(np.arange(num_classes), n))


def make_video_variant(root: str | os.PathLike | None = None, long: bool = False, canvas: int = 64,
                       renders_per_digit: int = 2, seed: int = 0) -> Path:
    """Write ``root/{videos|long_videos}/{split}/*.mp4``, ``{split}.csv`` (``relpath,label``, the
    Kinetics format) and ``classes.txt`` (one name per label). Short videos: one of 8 motions, 16
    frames. Long videos: 4 motions of 16 frames in sequence (64 frames), 10 ordered-sequence classes.
    Train digits are rendered ``renders_per_digit`` times, val/test digits once; labels are balanced.
    Idempotent: returns at once when the folder was already made with the same settings.
    """
    from sklearn.datasets import load_digits

    root = Path(root) if root is not None else default_root()
    out = root / ("long_videos" if long else "videos")
    settings = {"canvas": canvas, "renders_per_digit": renders_per_digit, "seed": seed, "long": long, "version": 1}
    stamp = out / "settings.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == settings:
        return out
    digits = load_digits()
    rng = np.random.default_rng(seed)
    splits = _split_indices(len(digits.images), rng)   # the same digit split as the image variant
    names = long_class_names() if long else list(MOTIONS)
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    for split, idx in splits.items():
        reps = renders_per_digit if split == "train" else 1
        items = [(int(i), r) for i in idx for r in range(reps)]
        labels = _balanced_labels(len(items), len(names), rng)
        (tmp / split).mkdir(parents=True, exist_ok=True)
        lines = []
        for (i, r), label in zip(items, labels):
            motions = LONG_CLASSES[label] if long else (int(label),)
            clip = np.concatenate([render_motion(digits.images[i], m, rng, canvas) for m in motions])
            rel = f"{split}/{i:04d}_{r}.mp4"
            write_mp4(tmp / rel, clip)
            lines.append(f"{rel},{int(label)}")
        (tmp / f"{split}.csv").write_text("\n".join(lines) + "\n")
    (tmp / "classes.txt").write_text("\n".join(names) + "\n")
    _publish(tmp, out, settings)
    return out


def reversal_pair_accuracy(labels, preds) -> list[float | None]:
    """Per time-reversed pair of classes ``(2k, 2k+1)`` (both variants are laid out so): among the videos
    of the pair whose prediction falls in the pair, the percentage predicted right. 50% is chance for a
    model that cannot see time order; None when no prediction falls in the pair."""
    labels, preds = np.asarray(labels), np.asarray(preds)
    out = []
    for k in range(0, int(labels.max()) + 1, 2):
        inside = np.isin(labels, (k, k + 1)) & np.isin(preds, (k, k + 1))
        out.append(float(100.0 * (labels[inside] == preds[inside]).mean()) if inside.any() else None)
    return out


# ---------------------------------------------------------------------------------------------- captions
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Paraphrases per motion ("{d}" = the digit word); each caption names the digit and the motion, so a
# retrieval model must see both what moves and how (time order: each motion's reverse is another motion).
MOTION_PHRASES = (
    ("a handwritten {d} moving left", "the digit {d} slides to the left", "a {d} travels leftwards"),
    ("a handwritten {d} moving right", "the digit {d} slides to the right", "a {d} travels rightwards"),
    ("a handwritten {d} moving up", "the digit {d} slides upwards", "a {d} rises to the top"),
    ("a handwritten {d} moving down", "the digit {d} slides downwards", "a {d} sinks to the bottom"),
    ("a handwritten {d} zooming in", "the digit {d} grows larger", "a {d} gets bigger and bigger"),
    ("a handwritten {d} zooming out", "the digit {d} shrinks", "a {d} gets smaller and smaller"),
    ("a handwritten {d} rotating clockwise", "the digit {d} turns clockwise", "a {d} spins to the right"),
    ("a handwritten {d} rotating counter-clockwise", "the digit {d} turns anticlockwise", "a {d} spins to the left"),
)
IMAGE_PHRASES = ("a handwritten {d}", "the digit {d}", "a picture of a handwritten {d}")


def make_video_text_variant(root: str | os.PathLike | None = None, captions_per_test_video: int = 2,
                            seed: int = 0) -> Path:
    """Caption files for the video-text task over the video and image variants (made first if missing):
    ``root/video_text/{train,val,test}_video.json`` (``{"video": relpath, "caption": [...]}``; every paraphrase
    of the video's motion for training, ``captions_per_test_video`` of them for val/test: a multi-caption
    retrieval set) with prefix ``root/videos``, and ``train_image.json`` (``{"image": relpath, "caption":
    [...]}``, the digit alone, one image per training digit, at the videos' scale) with prefix
    ``root/images_video_scale`` (:func:`make_video_scale_images`). Idempotent."""
    from sklearn.datasets import load_digits

    root = Path(root) if root is not None else default_root()
    videos, images = make_video_variant(root), make_video_scale_images(root)
    out = root / "video_text"
    settings = {"captions_per_test_video": captions_per_test_video, "seed": seed, "version": 4}
    stamp = out / "settings.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == settings:
        return out
    target = load_digits().target
    rng = np.random.default_rng(seed)
    tmp = out.with_name(out.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        entries = []
        for line in (videos / f"{split}.csv").read_text().split():
            rel, motion = line.split(",")
            word = DIGIT_WORDS[int(target[int(Path(rel).stem.split("_")[0])])]
            caps = [p.format(d=word) for p in MOTION_PHRASES[int(motion)]]
            if split != "train":
                caps = [caps[i] for i in sorted(rng.choice(len(caps), captions_per_test_video, replace=False))]
            entries.append({"video": rel, "caption": caps, "group": f"{word} {MOTIONS[int(motion)]}"})
        (tmp / f"{split}_video.json").write_text(json.dumps(entries, indent=0))
    entries = []
    for line in (images / "train.txt").read_text().splitlines():
        rel, label = line.split() if line.strip() else ("", "")
        if rel.endswith("_0.png"):   # one image per training digit (the variant renders each twice)
            entries.append({"image": rel, "caption": [p.format(d=DIGIT_WORDS[int(label)]) for p in IMAGE_PHRASES],
                            "group": DIGIT_WORDS[int(label)]})
    (tmp / "train_image.json").write_text(json.dumps(entries, indent=0))
    _publish(tmp, out, settings)
    return out


def make_group_variant(root: str | os.PathLike | None = None) -> Path:
    """The captions' content as video classes: ``root/video_groups/{train,val,test}.csv`` label each video of
    the video-text splits with its (digit, motion) group, one of the 80 in ``classes.txt`` (sorted names such
    as "seven move left") and ``class_factors.json`` gives each group's digit and motion (for a factored head);
    paths are relative to ``root/videos``, as in the motion variant. The video-text
    pipeline trains its vision encoder on these before the video-text stages (a supervised video start, as
    the paper's encoders start from Kinetics). Made from :func:`make_video_text_variant`'s files. Idempotent."""
    root = Path(root) if root is not None else default_root()
    captions = make_video_text_variant(root)
    out = root / "video_groups"
    entries = {s: json.loads((captions / f"{s}_video.json").read_text()) for s in SPLITS}
    names = sorted({f"{d} {m}" for d in DIGIT_WORDS for m in MOTIONS})
    stamp = {"source": json.loads((captions / "settings.json").read_text()), "classes": len(names), "factors": 1}
    if (out / "settings.json").is_file() and json.loads((out / "settings.json").read_text()) == stamp:
        return out
    index = {n: i for i, n in enumerate(names)}
    tmp = out.with_name(out.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    for split, rows in entries.items():
        (tmp / f"{split}.csv").write_text("".join(f"{e['video']},{index[e['group']]}\n" for e in rows))
    (tmp / "classes.txt").write_text("\n".join(names) + "\n")
    # each group's digit and motion (model.head_factors: data): "seven move left" -> digit 7, motion 0
    factors = {"digit": [DIGIT_WORDS.index(n.split(" ", 1)[0]) for n in names],
               "motion": [MOTIONS.index(n.split(" ", 1)[1]) for n in names]}
    (tmp / "class_factors.json").write_text(json.dumps(factors))
    _publish(tmp, out, stamp)
    return out
