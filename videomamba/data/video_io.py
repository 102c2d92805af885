"""Decoding frames from video files and turning them into model input (reader: decode.py)."""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

from .decode import open_video

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def count_frames(path: str | os.PathLike, backend: str | None = None) -> int:
    """Number of decodable video frames (exact: counted from the demuxed packets, no decoding)."""
    with open_video(path, backend) as reader:
        return len(reader)


def read_frames(path: str | os.PathLike, indices, backend: str | None = None) -> np.ndarray:
    """Decode the frames at ``indices`` (any order, repeats allowed) as uint8 ``(T, H, W, 3)`` RGB.
    Seeks to the keyframe before each frame instead of decoding from the start."""
    with open_video(path, backend) as reader:
        return reader.get_frames(indices)


def segment_middle_indices(num_frames_total: int, num_frames: int) -> list[int]:
    """TSN-style uniform sampling, one frame in the middle of each of ``num_frames`` segments
    (the official sparse loader's validation formula: ``round(seg*i) + int(seg/2)``, seg=(n-1)/T)."""
    seg = (num_frames_total - 1) / num_frames
    return [min(int(round(seg * i)) + int(seg / 2), num_frames_total - 1) for i in range(num_frames)]


def frames_to_clip(frames: np.ndarray, size: int = 224, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """uint8 ``(T, H, W, 3)`` -> float ``(3, T, size, size)``: short side resized (bilinear), centre
    crop, ImageNet normalisation (the official validation transform)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0  # (T,3,H,W)
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[..., top:top + size, left:left + size]
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    return x.permute(1, 0, 2, 3).contiguous()


def load_clip(path: str | os.PathLike, num_frames: int = 8, size: int = 224,
              backend: str | None = None) -> torch.Tensor:
    """A normalised ``(3, T, size, size)`` clip of ``num_frames`` uniformly sampled frames."""
    with open_video(path, backend) as reader:
        frames = reader.get_frames(segment_middle_indices(len(reader), num_frames))
    return frames_to_clip(frames, size)
