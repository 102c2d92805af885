"""Classify video files with a checkpoint: the multi-view test protocol on single videos.

    from videomamba.predict import load_predictor, predict
    results = predict(["a.mp4", "b.mp4"], "checkpoint-best.pth", topk=5)
    # [{"video": "a.mp4", "top": [{"label": "abseiling", "index": 0, "prob": 0.81}, ...], "views": 12}, ...]
    predict("clips/", "checkpoint-best.pth")   # a folder: its video files, searched recursively, sorted

    predictor = load_predictor("k400_f64_res384.pth")   # build the model once, then one call per video
    predictor.predict_video("a.mp4")

The model comes from the checkpoint alone (:func:`videomamba.model_source.load_model`):

* a model folder (``config.json`` + ``model.safetensors``, :mod:`videomamba.checkpoint.model_folder`) brings its
  architecture, label names and preprocessing (frames, size, mean/std, sampler, test views);
* a training checkpoint of this package (``extra.model_config``, ``extra.label_names``, ``extra.data``)
  is rebuilt from its saved config, with its saved sampler, input size and test views;
* any other weights file (official ``.pth`` with or without a ``model``/``module`` container, a
  converted ``.safetensors``) is rebuilt from its tensor shapes (:func:`infer_model_config`) and read
  the Kinetics way: sparse sampling of the checkpoint's frame count, its input size, 4 temporal views x
  3 crops (the K400 test protocol; 2 views for an official SSv2 file).

Weights are loaded strictly. Labels: ``labels=FILE`` when given, else the names saved in the checkpoint,
else the shipped Kinetics-400 list for a 400-class head, else ``"class <i>"``.

A video is scored as in the test protocol: temporal view ``k`` of ``K`` takes the frames of
:func:`~videomamba.data.sampling.sparse_indices` (or the saved sampler's), each of the crops goes
through :class:`~videomamba.data.video_transforms.VideoEvalTransform`, every view is soft-maxed and the
probabilities are averaged. A single view (``K = crops = 1``) is the centre (validation) crop.

Errors are one line naming the file: :class:`~videomamba.checkpoint.CheckpointError` for the checkpoint,
:class:`~videomamba.data.decode.VideoDecodeError` for a video, :class:`PredictError` for the rest
(options, label files).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import torch

from ..checkpoint import CheckpointError
from ..data.decode import VIDEO_SUFFIXES, VideoDecodeError, find_videos, open_video
from ..data.defaults import SAMPLING_RATE
from ..data.sampling import SAMPLERS as VIDEO_SAMPLERS, clip_indices
from ..data.video_transforms import VideoEvalTransform
from ..checkpoint.model_folder import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["Predictor", "PredictError", "load_predictor", "predict", "format_result", "COMPILE_MODES",
           "compile_forward", "expand_videos"]

# The Kinetics-400 test protocol, used for weights that do not say how they were tested.
DEFAULT_VIEWS, DEFAULT_CROPS = 4, 3
# Views per forward pass when not given: all views of a video, unless their activations would pass this
# budget. Measured on CPU: a forward pass peaks at about 115-130 bytes per (view x token x width)
# element, so a K400 8x224 base model keeps its 12 views in one pass (~1.7 GB) while a 64x384 base model
# (~3.5 GB a view) runs 2 at a time instead of asking for ~42 GB.
ACTIVATION_BUDGET = 8 * 2 ** 30
BYTES_PER_ACTIVATION = 128
SAMPLERS = VIDEO_SAMPLERS + ("lvu",)
# torch.compile modes (torch._inductor.list_mode_options()): "reduce-overhead" adds CUDA graphs on a GPU.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_forward(fn, mode: str | bool | None):
    """``torch.compile(fn, mode=mode)`` with the inductor backend, or ``fn`` itself for ``mode`` None/False
    (True means ``"default"``). The compiled model traces its plain forward: the eager-only chunked
    inference path (a working set independent of the clip length) is not used under the compiler."""
    if mode is None or mode is False:
        return fn
    mode = "default" if mode is True else mode
    if mode not in COMPILE_MODES:
        raise PredictError(f"compile mode {mode!r}: choose from {', '.join(COMPILE_MODES)}")
    return torch.compile(fn, mode=mode)


class PredictError(ValueError):
    """A problem that is neither the checkpoint's nor a video's (an option, a label file), in one line."""


@dataclass
class Predictor:
    """A model built once, with how to read a video for it. Made by :func:`load_predictor`."""

    model: torch.nn.Module
    checkpoint: str
    model_name: str
    label_names: list[str]
    label_source: str
    num_frames: int
    input_size: int
    short_side_size: int
    num_views: int
    num_crops: int
    sampler: str = "sparse"
    sampling_rate: int = SAMPLING_RATE
    backend: str | None = None
    device: torch.device = torch.device("cpu")
    batch_size: int | None = None
    from_training: bool = False
    source_kind: str = "weights"      # 'folder' | 'training' | 'weights'
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    compile_mode: str | None = None   # torch.compile mode of the forward pass (None: eager)

    def __post_init__(self):
        self.transform = VideoEvalTransform(self.input_size, self.short_side_size, self.num_crops, self.mean, self.std)
        self.forward = compile_forward(self.model, self.compile_mode)
        if self.batch_size is None:
            self.batch_size = min(self.views_per_video, max(1, ACTIVATION_BUDGET // self._view_bytes()))

    def _view_bytes(self) -> int:
        """Rough peak activation memory of one view in a forward pass."""
        m = self.model
        pos, tpos = getattr(m, "pos_embed", None), getattr(m, "temporal_pos_embedding", None)
        if not (torch.is_tensor(pos) and pos.dim() == 3):
            return 1
        tokens = (pos.shape[1] - 1) * (tpos.shape[1] if torch.is_tensor(tpos) and tpos.dim() == 3 else 1) + 1
        return BYTES_PER_ACTIVATION * tokens * pos.shape[-1]

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @property
    def views_per_video(self) -> int:
        return self.num_views * self.num_crops

    def describe(self) -> str:
        """One line: what was loaded and how videos are read."""
        m = self.model
        width = getattr(m, "embed_dim", None)
        depth = len(getattr(m, "layers", ()))
        arch = f"{self.model_name}" + (f" (width {width}, depth {depth})" if width and depth else "")
        kind = {"training": "training checkpoint", "folder": "model folder"}.get(self.source_kind,
                                                                                "weights, architecture inferred")
        sampler = self.sampler if self.sampler != "lvu" else "sparse over the whole video (lvu)"
        return (f"{self.checkpoint}: {arch}, {kind}; {self.num_frames} frames at {self.input_size}px, "
                f"{self.num_classes} classes ({self.label_source}); {self.num_views} temporal views x "
                f"{self.num_crops} crops, {sampler} sampling; {self.batch_size} views per forward pass "
                f"on {self.device}" + (f", compiled ({self.compile_mode})" if self.compile_mode else ""))

    # ------------------------------------------------------------------ one video
    def frame_indices(self, video_len: int, view: int) -> list[int]:
        """Frames of temporal view ``view`` (of ``num_views``) of a ``video_len``-frame video."""
        # an LVU model predicts on whole videos: sparse sampling over all frames
        return clip_indices("sparse" if self.sampler == "lvu" else self.sampler, video_len, self.num_frames, view, self.num_views,
                            sampling_rate=self.sampling_rate)

    def clips(self, video: str | os.PathLike) -> torch.Tensor:
        """The ``(num_views * num_crops, 3, T, S, S)`` inputs of one video, temporal view major
        (row ``k * num_crops + j`` is view ``k``, crop ``j``). Raises :class:`VideoDecodeError`."""
        path = os.fspath(video)
        try:
            reader = open_video(path, self.backend)
        except ImportError as err:   # the backend package is missing: no video can be read
            raise PredictError(str(err)) from None
        with reader:
            n = len(reader)
            if n == 0:
                raise VideoDecodeError(f"{path}: the video has no decodable frames")
            per_view = [self.frame_indices(n, k) for k in range(self.num_views)]
            wanted = sorted({i for idx in per_view for i in idx})
            decoded = reader.get_frames(wanted)      # every frame once, in one pass over the file
        row = {i: r for r, i in enumerate(wanted)}
        single = self.views_per_video == 1           # one view: the validation (centre) crop
        out = []
        for idx in per_view:
            frames = decoded[[row[i] for i in idx]]
            for crop in range(self.num_crops):
                out.append(self.transform(frames, None if single else crop))
        return torch.stack(out)

    @torch.inference_mode()
    def probabilities(self, video: str | os.PathLike) -> torch.Tensor:
        """``(num_classes,)``: the mean over the views of each view's softmax (float32, on the CPU)."""
        x = self.clips(video)
        step = self.batch_size or len(x)   # all views of the video in one pass unless capped
        probs = [self.forward(x[i:i + step].to(self.device)).float().softmax(-1).cpu() for i in range(0, len(x), step)]
        return torch.cat(probs).mean(0)

    def predict_video(self, video: str | os.PathLike, topk: int = 5) -> dict[str, Any]:
        """``{"video", "top": [{"label", "index", "prob"}, ...] (most likely first), "views"}``."""
        if topk < 1:
            raise PredictError(f"topk must be >= 1, got {topk}")
        p = self.probabilities(video)
        values, indices = p.topk(min(topk, len(p)))
        top = [{"label": self.label_names[i], "index": int(i), "prob": float(v)}
               for v, i in zip(values.tolist(), indices.tolist())]
        return {"video": os.fspath(video), "top": top, "views": self.views_per_video}


# ---------------------------------------------------------------------------- building
def _positive(name: str, value) -> int:
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise PredictError(f"{name} must be a positive integer, got {value!r}") from None
    if v < 1:
        raise PredictError(f"{name} must be >= 1, got {value!r}")
    return v


def resolve_labels(num_classes: int, labels: str | os.PathLike | None, saved,
                   kind: str = "training") -> tuple[list[str], str]:
    """``(names, where they came from)``: the ``labels`` file, else the names ``saved`` with the model, else
    Kinetics-400's for a 400-class head, else ``"class <i>"`` (where: ``"no names: ..."``)."""
    if labels is not None:
        from ..data.labels import load_label_names

        try:
            names = load_label_names(labels)
        except (OSError, ValueError) as err:
            raise PredictError(f"labels: {err}") from None
        if len(names) != num_classes:
            raise PredictError(f"{labels}: {len(names)} class names, but the model has {num_classes} classes")
        return names, f"names from {labels}"
    if isinstance(saved, (list, tuple)) and len(saved) == num_classes and all(isinstance(s, str) for s in saved):
        return list(saved), "names saved in the " + ("model folder" if kind == "folder" else "checkpoint")
    if num_classes == 400:
        from ..data.labels import load_label_names

        return load_label_names("kinetics400"), "Kinetics-400 names"
    return [f"class {i}" for i in range(num_classes)], "no names: pass --labels FILE"


def load_predictor(checkpoint: str | os.PathLike, num_views: int | None = None, num_crops: int | None = None,
                   backend: str | None = None, labels: str | os.PathLike | None = None,
                   device: str | torch.device | None = None, batch_size: int | None = None,
                   compile: str | bool | None = None) -> Predictor:
    """Read ``checkpoint`` (a model folder, a training checkpoint or a weights file:
    :func:`videomamba.model_source.load_model`), build its model (eval mode, weights loaded strictly) and
    the view settings.

    ``num_views``/``num_crops`` override the checkpoint's test views (default 4 x 3); ``backend`` is the
    video reader ('pyav'/'decord', default $VIDEOMAMBA_VIDEO_BACKEND or 'pyav'); ``labels`` a class-name
    file (one per line) that replaces any other names; ``device`` defaults to CUDA when available;
    ``batch_size`` sets the views per forward pass (default: all views of a video in one pass, fewer when
    their activations would need more than ``ACTIVATION_BUDGET``, 8 GiB: e.g. 2 for a 64-frame 384px base);
    ``compile`` a :data:`COMPILE_MODES` entry (or True: "default") runs the forward pass under
    ``torch.compile`` (:func:`compile_forward`; the first video pays the compilation, a last batch of another
    size one recompilation; "reduce-overhead" replays CUDA graphs on a GPU).
    """
    from .model_source import load_model

    compile = "default" if compile is True else (compile or None)
    if compile is not None and compile not in COMPILE_MODES:   # before the (slow) model build
        raise PredictError(f"compile mode {compile!r}: choose from {', '.join(COMPILE_MODES)}")
    source = os.fspath(checkpoint)
    dev = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    loaded = load_model(source, device=dev)
    pre = loaded.preprocessing
    if pre.num_frames is None:
        raise CheckpointError(source, "an image model (2-D patch embedding, no temporal_pos_embedding): "
                              "predict needs a video model")
    if not loaded.num_classes:
        raise CheckpointError(source, "no classification head (no head.weight): a backbone or pretraining "
                              "checkpoint cannot classify (videomamba extract gives its features)")
    views = _positive("views", num_views if num_views is not None else pre.num_views)
    crops = _positive("crops", num_crops if num_crops is not None else pre.num_crops)
    if pre.sampler == "ssv2" and views not in (1, 2):
        raise PredictError(f"the SSv2 test protocol has 2 temporal views (or 1), not {views}")
    if batch_size is not None:
        batch_size = _positive("batch size", batch_size)
    names, label_source = resolve_labels(loaded.num_classes, labels, loaded.label_names, loaded.kind)
    return Predictor(model=loaded.model, checkpoint=source, model_name=loaded.architecture, label_names=names,
                     label_source=label_source, num_frames=pre.num_frames, input_size=pre.input_size,
                     short_side_size=pre.short_side_size, num_views=views, num_crops=crops, sampler=pre.sampler,
                     sampling_rate=pre.sampling_rate, backend=backend, device=dev, batch_size=batch_size,
                     from_training=loaded.kind == "training", source_kind=loaded.kind, mean=pre.mean, std=pre.std,
                     compile_mode=compile)


def expand_videos(videos: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str]:
    """``videos`` with each folder replaced by the video files inside it (searched recursively, sorted:
    :func:`~videomamba.data.decode.find_videos`, as ``videomamba extract`` reads a folder); files are kept as
    given, in order (a missing one is reported when it is read). A folder without videos raises
    :class:`PredictError` naming it."""
    if isinstance(videos, (str, os.PathLike)):
        videos = [videos]
    out = []
    for video in videos:
        if os.path.isdir(video):
            found = find_videos(video)
            if not found:
                raise PredictError(f"{os.fspath(video)}: no video files in the folder "
                                   f"({', '.join(VIDEO_SUFFIXES)}; searched recursively)")
            out += [str(v) for v in found]
        else:
            out.append(os.fspath(video))
    return out


def predict(videos: str | os.PathLike | Iterable[str | os.PathLike], checkpoint: str | os.PathLike, topk: int = 5,
            num_views: int | None = None, num_crops: int | None = None, backend: str | None = None,
            labels: str | os.PathLike | None = None, device: str | torch.device | None = None,
            batch_size: int | None = None, compile: str | bool | None = None) -> list[dict[str, Any]]:
    """Top-``topk`` classes of each video: a list of ``{"video", "top": [{"label", "index", "prob"}],
    "views"}`` in input order, a folder standing for the videos inside it (:func:`expand_videos`). The model
    is built once (:func:`load_predictor`). The first unreadable video raises :class:`VideoDecodeError`; to go
    on past bad files, loop over :meth:`Predictor.predict_video` yourself (as ``videomamba predict`` does)."""
    videos = expand_videos(videos)
    predictor = load_predictor(checkpoint, num_views=num_views, num_crops=num_crops, backend=backend,
                               labels=labels, device=device, batch_size=batch_size, compile=compile)
    return [predictor.predict_video(v, topk) for v in videos]


def format_result(result: Mapping[str, Any]) -> str:
    """The human-readable block of one result: the path, then ``  0.8123  label`` per class."""
    lines = [str(result["video"])]
    lines += [f"  {t['prob']:.4f}  {t['label']}" for t in result["top"]]
    return "\n".join(lines)
