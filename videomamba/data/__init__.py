"""Data: video decoding and clip preparation."""
from .decode import VideoDecodeError, VideoReader, open_video
from .video_io import count_frames, frames_to_clip, load_clip, read_frames, segment_middle_indices

__all__ = ["count_frames", "read_frames", "segment_middle_indices", "frames_to_clip", "load_clip",
           "open_video", "VideoReader", "VideoDecodeError"]
