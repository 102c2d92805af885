"""Video transforms built on ``torchvision.transforms.v2``, which draws one set of random parameters per
call and applies it to every frame of a ``(T, C, H, W)`` video: video-consistent RandAugment, random
resized crop, flip and cube random erasing, as the official training pipeline.

Frames come in as uint8 ``(T, H, W, 3)`` (what the readers return) and go out as normalised float
``(3, T, H, W)`` (what the model takes).
"""
from __future__ import annotations

import re

import numpy as np
import torch

from .sampling import short_side_resize, test_crop_offsets

# The normalisation every video transform ends with (the ImageNet statistics, as the official pipelines).
# video_io.py and video_text.py import them from here: this module imports neither.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def parse_rand_augment(spec: str) -> dict:
    """timm-style ``rand-m7-n4-mstd0.5-inc1`` -> ``{"magnitude": 7, "num_ops": 4}`` for torchvision's
    RandAugment on the same 0-10 magnitude scale. torchvision has no magnitude noise (``mstd``) or
    increasing-severity (``inc``) variants: those parts are accepted and not reproduced."""
    if not spec.startswith("rand"):
        raise ValueError(f"auto_augment {spec!r}: only RandAugment ('rand-m<M>-n<N>...') is supported for video")
    out = {"magnitude": 9, "num_ops": 2}   # timm's defaults
    for part in spec.split("-")[1:]:
        m = re.fullmatch(r"(m|n|mstd|mmax|inc|w)([\d.]+)", part)
        if m is None:
            raise ValueError(f"auto_augment {spec!r}: cannot parse {part!r}")
        if m.group(1) == "m":
            out["magnitude"] = int(float(m.group(2)))
        elif m.group(1) == "n":
            out["num_ops"] = int(m.group(2))
    return out


def _to_video(frames: np.ndarray | torch.Tensor):
    from torchvision import tv_tensors

    x = torch.as_tensor(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames (T, H, W, 3), got shape {tuple(x.shape)}")
    return tv_tensors.Video(x.permute(0, 3, 1, 2))


class VideoRandAugment:
    """torchvision's ``v2.RandAugment`` on uint8 videos: the same random draws (torch's generator, in the same
    order) and the same pixels, only faster on the frames the readers return.

    Those frames are ``(T, 3, H, W)`` views of ``(T, H, W, 3)`` memory, where most of torchvision's kernels
    are slow (AutoContrast's per-channel min/max 8x, Color 3x, the affine ops 1.1-1.4x slower than on
    contiguous planes), except Sharpness's convolution, which is 8x slower on contiguous planes: each op
    gets the layout it is fast in (the values do not depend on the layout). TranslateX/Y move
    the frames by a whole number of pixels: torchvision resamples them bilinearly at integer positions and
    rounds, which is the shifted frame with zeros let in (done here as a copy). Every op's output equals
    torchvision's bit for bit (tests/test_video_data.py compares them over every op, magnitude and sign)."""

    def __init__(self, num_ops: int = 2, magnitude: int = 9, num_magnitude_bins: int = 31,
                 interpolation=None):
        from torchvision.transforms import InterpolationMode, v2

        self.ra = v2.RandAugment(num_ops=num_ops, magnitude=magnitude, num_magnitude_bins=num_magnitude_bins,
                                 interpolation=interpolation or InterpolationMode.NEAREST)

    def __call__(self, video):
        from torchvision import tv_tensors

        ra, x = self.ra, video
        h, w = x.shape[-2:]
        for _ in range(ra.num_ops):   # torchvision's RandAugment.forward, draw for draw
            op, (magnitudes_fn, signed) = ra._get_random_item(ra._AUGMENTATION_SPACE)
            magnitudes = magnitudes_fn(ra.num_magnitude_bins, h, w)
            if magnitudes is not None:
                magnitude = float(magnitudes[ra.magnitude])
                if signed and torch.rand(()) <= 0.5:
                    magnitude *= -1
            else:
                magnitude = 0.0
            x = self.apply(x, op, magnitude)
        return tv_tensors.wrap(x, like=video) if isinstance(video, tv_tensors.TVTensor) else x

    def apply(self, x: torch.Tensor, op: str, magnitude: float) -> torch.Tensor:
        """One op, as ``RandAugment._apply_image_or_video_transform`` computes it."""
        if x.dtype == torch.uint8 and op in ("TranslateX", "TranslateY"):
            return _shift(x, int(magnitude), -1 if op == "TranslateX" else -2)
        if op == "Sharpness" and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        elif op not in ("Identity", "Posterize"):
            x = x.contiguous()
        return self.ra._apply_image_or_video_transform(x, op, magnitude, interpolation=self.ra.interpolation,
                                                       fill=self.ra._fill)


def _shift(x: torch.Tensor, by: int, dim: int) -> torch.Tensor:
    """``x`` moved ``by`` pixels towards higher indices along ``dim``; the uncovered part is 0."""
    out = torch.zeros_like(x)
    n = x.shape[dim]
    if abs(by) < n:
        if by >= 0:
            out.narrow(dim, by, n - by).copy_(x.narrow(dim, 0, n - by))
        else:
            out.narrow(dim, 0, n + by).copy_(x.narrow(dim, -by, n + by))
    return out


class VideoTrainTransform:
    """RandAugment (uint8) -> [0, 1] -> random resized crop (bilinear) -> normalise -> horizontal flip ->
    random erasing (the same box on every frame): the official order, except that the normalisation (a
    per-channel affine map, which commutes with the crop's bilinear resize) comes after the crop instead of
    before it, on the 224x224 crop instead of the whole frame; same random draws, values equal up to float32
    rounding (a few 1e-7). ``reprob=0``/``hflip=0``/``auto_augment=None`` switch the parts off (SSv2 and the
    Moving Digits motions use no flip)."""

    def __init__(self, size: int, auto_augment: str | None = None, scale=(0.08, 1.0), ratio=(0.75, 4 / 3),
                 hflip: float = 0.5, reprob: float = 0.0, remode: str = "pixel", mean=IMAGENET_MEAN,
                 std=IMAGENET_STD, interpolation: str = "bicubic"):
        from torchvision.transforms import InterpolationMode, v2

        ops = []
        if auto_augment:
            # torchvision's geometric ops on tensors offer nearest/bilinear only: the official bicubic
            # (on PIL frames) becomes bilinear here
            mode = InterpolationMode.NEAREST if interpolation == "nearest" else InterpolationMode.BILINEAR
            ops.append(VideoRandAugment(**parse_rand_augment(auto_augment), num_magnitude_bins=11, interpolation=mode))
        ops += [v2.ToDtype(torch.float32, scale=True),
                v2.RandomResizedCrop(size, scale=tuple(scale), ratio=tuple(ratio),
                                     interpolation=InterpolationMode.BILINEAR, antialias=False),
                v2.Normalize(list(mean), list(std))]
        if hflip > 0:
            ops.append(v2.RandomHorizontalFlip(hflip))
        if reprob > 0:
            if remode not in ("pixel", "const"):
                raise ValueError(f"remode must be 'pixel' or 'const', got {remode!r}")
            ops.append(v2.RandomErasing(reprob, value="random" if remode == "pixel" else 0))
        self.transform = v2.Compose(ops)

    def __call__(self, frames) -> torch.Tensor:
        return self.transform(_to_video(frames)).as_subclass(torch.Tensor).permute(1, 0, 2, 3).contiguous()


def _normalise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 ``(T, 3, H, W)`` -> normalised float ``(3, T, H, W)``, the model's layout."""
    x = x.float().div_(255)
    return ((x - mean) / std).permute(1, 0, 2, 3).contiguous()


class VideoEvalTransform:
    """Resize the short side to ``short_side_size`` (bilinear), then either a centre ``size`` crop
    (validation) or crop ``j`` of ``num_crops`` ``short_side_size`` squares along the long side (test),
    normalise. ``__call__(frames, crop=None)``: ``crop=None`` is the validation crop."""

    def __init__(self, size: int, short_side_size: int | None = None, num_crops: int = 1, mean=IMAGENET_MEAN,
                 std=IMAGENET_STD):
        self.size, self.short = size, short_side_size or size
        self.num_crops = num_crops
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)

    def __call__(self, frames, crop: int | None = None) -> torch.Tensor:
        return self.normalise(self.crop(frames, crop))

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 ``(T, 3, S, S)`` from :meth:`crop` -> the model's normalised float ``(3, T, S, S)``."""
        return _normalise(x, self.mean, self.std)

    def crop(self, frames, crop: int | None = None) -> torch.Tensor:
        """The resize and crop alone: uint8 ``(T, 3, S, S)`` (4x smaller than the float clip, e.g. to pass
        between processes)."""
        from torchvision.transforms.v2 import functional as TF

        x = _to_video(frames).as_subclass(torch.Tensor)
        h, w = x.shape[-2:]
        nh, nw = short_side_resize(h, w, self.short)
        if (nh, nw) != (h, w):
            x = TF.resize(x, [nh, nw], interpolation=TF.InterpolationMode.BILINEAR, antialias=False)
        if crop is None:
            # the official CenterCrop: Python's round (half to even) of the centred offset, not the floor
            side, top, left = self.size, int(round((nh - self.size) / 2.0)), int(round((nw - self.size) / 2.0))
        else:
            side = self.short
            top, left = test_crop_offsets(nh, nw, self.short, self.num_crops)[crop]
        return x[..., top:top + side, left:left + side]


def multi_scale_crop_params(h: int, w: int, size: int, scales=(1.0, 0.875, 0.75, 0.66), max_distort: int = 1,
                            rng: np.random.Generator | None = None) -> tuple[int, int, int, int]:
    """``(top, left, crop_h, crop_w)`` of the TSN/VideoMAE multi-scale crop (the official pretraining
    ``GroupMultiScaleCrop`` with fixed, "more fix crop" offsets): the crop's sides are two of
    ``scales x min(h, w)`` at most ``max_distort`` scale steps apart (a side within 3 px of ``size`` becomes
    ``size``), and its corner one of 13 fixed positions on a 4 x 4 grid of the remaining space."""
    if rng is None:   # from torch's generator, which the engine seeds per rank and saves for resumes
        rng = np.random.default_rng(int(torch.randint(0, 2 ** 62, (1,)).item()))
    base = min(h, w)
    sizes = [int(base * s) for s in scales]
    snap = [size if abs(s - size) < 3 else s for s in sizes]
    pairs = [(snap[i], snap[j]) for i in range(len(snap)) for j in range(len(snap)) if abs(i - j) <= max_distort]
    crop_w, crop_h = pairs[int(rng.integers(len(pairs)))]
    ws, hs = (w - crop_w) // 4, (h - crop_h) // 4
    grid = [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2), (2, 0), (2, 4), (4, 2), (0, 2), (1, 1), (1, 3), (3, 1), (3, 3)]
    gy, gx = grid[int(rng.integers(len(grid)))]
    return gy * hs, gx * ws, crop_h, crop_w


class VideoPretrainTransform:
    """The masked-pretraining augmentation: multi-scale crop resized to ``size`` (bilinear, without the
    antialiasing PIL applies when shrinking, as the other video transforms here), horizontal flip
    (``hflip`` probability; the official ``--flip True``), normalise. One draw for all frames."""

    def __init__(self, size: int, scales=(1.0, 0.875, 0.75, 0.66), hflip: float = 0.5, mean=IMAGENET_MEAN,
                 std=IMAGENET_STD):
        self.size, self.scales, self.hflip = size, tuple(scales), hflip
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)

    def __call__(self, frames) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as TF

        # torch's generator (seeded per rank and worker, restored on resume) drives the draws
        rng = np.random.default_rng(int(torch.randint(0, 2 ** 62, (1,)).item()))
        x = _to_video(frames).as_subclass(torch.Tensor)
        top, left, ch, cw = multi_scale_crop_params(x.shape[-2], x.shape[-1], self.size, self.scales, rng=rng)
        x = TF.resized_crop(x, top, left, ch, cw, [self.size, self.size],
                            interpolation=TF.InterpolationMode.BILINEAR, antialias=False)
        if rng.random() < self.hflip:
            x = x.flip(-1)
        return _normalise(x, self.mean, self.std)
