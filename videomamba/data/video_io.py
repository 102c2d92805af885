"""Decoding frames from video files (PyAV) and turning them into model input."""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _open(path: str | os.PathLike):
    try:
        import av
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ImportError("decoding video needs PyAV: pip install 'videomamba[video]'") from err
    if not os.path.isfile(path):
        raise FileNotFoundError(f"video not found: {path}")
    try:
        return av.open(str(path))
    except av.error.FFmpegError as err:
        raise ValueError(f"{path}: cannot be opened as a video ({err})") from err


def count_frames(path: str | os.PathLike) -> int:
    """Number of decodable video frames (decodes when the container does not say)."""
    with _open(path) as container:
        stream = container.streams.video[0]
        if stream.frames:
            return int(stream.frames)
        return sum(1 for _ in container.decode(stream))


def read_frames(path: str | os.PathLike, indices) -> np.ndarray:
    """Decode the frames at ``indices`` (any order, repeats allowed) as uint8 ``(T, H, W, 3)`` RGB."""
    indices = [int(i) for i in indices]
    wanted = set(indices)
    last = max(indices)
    frames: dict[int, np.ndarray] = {}
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                frames[i] = frame.to_ndarray(format="rgb24")
            if i >= last:
                break
    missing = sorted(wanted - frames.keys())
    if missing:
        raise ValueError(f"{path}: frames {missing[:5]} are past the end of the video ({len(frames)} decoded)")
    return np.stack([frames[i] for i in indices])


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


def load_clip(path: str | os.PathLike, num_frames: int = 8, size: int = 224) -> torch.Tensor:
    """A normalised ``(3, T, size, size)`` clip of ``num_frames`` uniformly sampled frames."""
    idx = segment_middle_indices(count_frames(path), num_frames)
    return frames_to_clip(read_frames(path, idx), size)
