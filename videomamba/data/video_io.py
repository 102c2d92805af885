"""Decoding frames from video files and turning them into model input (reader: decode.py)."""
from __future__ import annotations

import os

import numpy as np
import torch

from .decode import open_video
from .sampling import sparse_indices
# IMAGENET_MEAN / IMAGENET_STD are defined with the transforms and re-exported here (the dependency runs
# video_io -> video_transforms only)
from .video_transforms import IMAGENET_MEAN, IMAGENET_STD, VideoEvalTransform

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "count_frames", "read_frames", "segment_middle_indices",
           "frames_to_clip", "load_clip"]


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
    """The middle frame of each of ``num_frames`` segments: the validation clip of the official sparse
    loader (:func:`videomamba.data.sampling.sparse_indices` with ``view=0, num_views=1``)."""
    return sparse_indices(num_frames_total, num_frames, view=0, num_views=1)


def frames_to_clip(frames: np.ndarray, size: int = 224, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """uint8 ``(T, H, W, 3)`` -> float ``(3, T, size, size)``: the official validation transform (short side
    resized to ``size``, bilinear; centre crop; ImageNet normalisation), i.e. ``VideoEvalTransform(size)``."""
    return VideoEvalTransform(size, mean=mean, std=std)(frames)


def load_clip(path: str | os.PathLike, num_frames: int = 8, size: int = 224,
              backend: str | None = None) -> torch.Tensor:
    """A normalised ``(3, T, size, size)`` clip of ``num_frames`` uniformly sampled frames."""
    with open_video(path, backend) as reader:
        frames = reader.get_frames(segment_middle_indices(len(reader), num_frames))
    return frames_to_clip(frames, size)
