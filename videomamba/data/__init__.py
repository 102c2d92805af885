"""Data: video decoding and clip preparation; the data sets of each task by name (:mod:`.registry`)."""
from .decode import VideoDecodeError, VideoReader, open_video
from .errors import DataError
from .registry import build_dataset, data_source, dataset_names, register_dataset
from .video_io import count_frames, frames_to_clip, load_clip, read_frames, segment_middle_indices

__all__ = ["count_frames", "read_frames", "segment_middle_indices", "frames_to_clip", "load_clip",
           "open_video", "VideoReader", "VideoDecodeError", "DataError",
           "register_dataset", "build_dataset", "data_source", "dataset_names"]
