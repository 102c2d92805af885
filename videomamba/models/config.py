"""Model configurations: one dataclass per model family, built once and held by the model as ``model.config``.

A config is everything that rebuilds a model (its architecture and the options that change its outputs or its
training) and nothing else: the weights live beside it. It is what every checkpoint of every task saves
(``extra.model_config``), what a model folder's ``config.json`` dumps (``model_args``) and what rebuilds the
model from either (:func:`videomamba.models.model_from_config`). Each default is defined here once.

* :class:`VideoMambaConfig`: the backbone, :class:`~videomamba.models.VisionMamba` (image or video).
* :class:`MaskedStudentConfig`: the masked-pretraining student (the backbone plus the CLIP decoders).
* :class:`VideoTextVisionConfig`: the vision encoder of the video-text model (the student plus ``pool_norm``).
* :class:`VideoTextConfig`: the video-text model (vision encoder, BERT text/fusion encoder, projections).

``to_dict()`` gives plain JSON data with a ``model_type`` (which family) and ``architecture`` (the registered
variant, e.g. ``videomamba_tiny``; None for a model built directly from the class); ``from_dict`` checks it
and names an unknown key.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

# The default number of frames of a video student (the official pretraining clips are 8 frames).
STUDENT_FRAMES = 8


def _json_ready(value):
    if isinstance(value, (tuple, list)):
        return [_json_ready(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    return value


@dataclass
class VideoMambaConfig:
    """The backbone's configuration (the constructor arguments of :class:`~videomamba.models.VisionMamba`;
    see its docstring for what each one does)."""

    model_type: ClassVar[str] = "videomamba"

    architecture: str | None = None            # the registered variant that built it, if any
    img_size: int | tuple[int, int] = 224
    patch_size: int = 16
    stride: int | tuple[int, int] | None = None   # image layout only: overlapping patches
    depth: int = 24
    embed_dim: int = 192
    in_chans: int = 3
    num_classes: int = 1000
    num_frames: int | None = None               # None: the image layout; an int: the video layout
    kernel_size: int = 1                        # the tubelet size
    drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    fc_drop_rate: float = 0.0
    ssm_cfg: dict | None = None                 # extra BiMamba arguments (d_state, d_conv, expand, ...)
    norm_epsilon: float = 1e-5
    rms_norm: bool = True
    residual_in_fp32: bool = True
    fused_add_norm: bool = True                 # accepted for the official flag; the math is the same
    divide_output: bool = False                 # design decision D1: the checkpoints use the plain sum
    global_pool: str = "token"
    distill_dim: int | None = None
    dt_init: str = "official"                   # design decision D3
    initializer_cfg: dict | None = None
    # How it runs (the same outputs either way): gradient checkpointing, recomputation, chunked inference.
    use_checkpoint: bool = False
    checkpoint_num: int = 0
    recompute: str = "block"
    inference_chunk: int = 2048
    inference_memory: str = "fast"

    @classmethod
    def build(cls, config: "VideoMambaConfig | Mapping | None" = None, **overrides) -> "VideoMambaConfig":
        """``config`` (an instance or a dict) with ``overrides`` applied; constructor aliases are resolved here:
        ``channels`` is ``in_chans`` and ``bimamba`` must be true (VideoMamba is bidirectional)."""
        if "channels" in overrides:
            channels = overrides.pop("channels")
            if channels is not None:
                overrides["in_chans"] = channels
        if not overrides.pop("bimamba", True):
            raise ValueError(f"{cls.__name__}: bimamba=False is not supported; VideoMamba is bidirectional")
        if config is None:
            base = {}
        elif isinstance(config, VideoMambaConfig):
            if not overrides and isinstance(config, cls):
                return config
            base = config.fields()
        elif isinstance(config, Mapping):
            base = dict(config)
        else:
            raise TypeError(f"{cls.__name__}: config must be a {cls.__name__} or a dict, got {type(config).__name__}")
        base.pop("model_type", None)
        merged = {**base, **overrides}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(merged) - known)
        if unknown:
            raise TypeError(f"{cls.__name__}: unexpected argument {unknown[0]!r} (known: {', '.join(sorted(known))})")
        return cls(**merged)

    def fields(self) -> dict[str, Any]:
        """The fields as a dict (values not copied)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data: ``model_type`` and every field."""
        return {"model_type": self.model_type, **_json_ready(self.fields())}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "model config") -> "VideoMambaConfig":
        """The config ``to_dict`` wrote; a key this family does not have raises ``ValueError`` naming it."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: a model config must be a mapping, got {type(data).__name__}")
        kind = data.get("model_type", cls.model_type)
        if kind != cls.model_type:
            raise ValueError(f"{source}: model_type {kind!r} is not {cls.model_type!r}")
        try:
            return cls.build(None, **{k: v for k, v in data.items() if k != "model_type"})
        except TypeError as err:
            raise ValueError(f"{source}: {err}") from None

    def kwargs(self) -> dict[str, Any]:
        """The ``create_model(architecture, **kwargs)`` arguments that rebuild the model."""
        return {k: v for k, v in self.fields().items() if k != "architecture"}


@dataclass
class MaskedStudentConfig(VideoMambaConfig):
    """The masked-pretraining student: a headless video backbone plus ``clip_return_layers`` CLIP decoders
    (see :class:`~videomamba.models.VideoMambaPretrain`)."""

    model_type: ClassVar[str] = "videomamba_masked_student"

    num_classes: int = 0
    num_frames: int | None = STUDENT_FRAMES
    clip_output_dim: int = 512
    clip_decoder_embed_dim: int | None = None
    clip_return_layers: int = 1
    clip_student_return_interval: int = 1
    clip_target: str = "official"               # design decision D4

    def __post_init__(self):
        self.num_classes = 0   # a student has no head, whatever a config file says


# The vision tokens the text's fusion layers cross-attend to (VTM, MLM, re-ranking):
FUSION_TOKENS = {
    "patches": "the final-norm patch tokens, the CLS left out (official)",
    "patches+cls": "each patch token plus the CLS token: what the clip holds as a whole (a shallow encoder "
                   "keeps its motion in the CLS, which reads the sequence end to end) in every token",
}


@dataclass
class VideoTextVisionConfig(MaskedStudentConfig):
    """The vision encoder of the video-text model: the student plus ``pool_norm``."""

    model_type: ClassVar[str] = "videomamba_video_text_vision"

    add_pool_norm: bool = True
    fusion_tokens: str = "patches"              # what the fusion layers attend to: see FUSION_TOKENS

    def __post_init__(self):
        super().__post_init__()
        if self.fusion_tokens not in FUSION_TOKENS:
            raise ValueError(f"fusion_tokens must be one of {sorted(FUSION_TOKENS)}, got {self.fusion_tokens!r}")


@dataclass
class VideoTextConfig:
    """The video-text model: ``vision`` (``variant`` and the encoder's constructor ``kwargs``), ``text``
    (the BERT ``config`` dict, ``fusion_layer``, ``tokenizer`` folder, ``pool``), the shared ``embed_dim`` of
    the contrastive projections, the initial ``temp``erature, ``keep_temporal`` and ``mlm_prob``. Its dict is
    what video-text checkpoints save as ``extra.video_text_model``."""

    model_type: ClassVar[str] = "videomamba_video_text"

    vision: dict = field(default_factory=dict)
    text: dict = field(default_factory=dict)
    embed_dim: int = 512
    temp: float = 0.07
    keep_temporal: bool = True
    mlm_prob: float = 0.5

    def to_dict(self) -> dict[str, Any]:
        return _json_ready({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "video-text model config") -> "VideoTextConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known - {"model_type"})
        if unknown:
            raise ValueError(f"{source}: unexpected key {unknown[0]!r} (known: {', '.join(sorted(known))})")
        return cls(**{k: v for k, v in data.items() if k in known})


CONFIG_CLASSES = {c.model_type: c for c in (VideoMambaConfig, MaskedStudentConfig, VideoTextVisionConfig)}
