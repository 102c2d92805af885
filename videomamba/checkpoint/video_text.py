"""Loading video-text checkpoints into :class:`~videomamba.models.video_text.VideoMambaText`.

Two sources are read, both in a ``{"model": state_dict, ...}`` / ``{"module": ...}`` container or flat:

- The **official** UMT_VIDEOMAMBA files (``videomamba_m16_{5M,17M,25M}_f8_res224.pth``, docs/design.md §1.6, §4):

  * ``vision_encoder.*``: the masked-pretraining student (final norm ``norm.weight``, ``clip_decoder.{k}.*``)
    plus ``pool_norm.*``: already our names.
  * ``text_encoder.bert.*`` and the MLM head ``text_encoder.cls.predictions.*`` (pretraining, a
    ``BertForMaskedLM``), or ``text_encoder.*`` without ``bert.`` and without head (a retrieval fine-tune,
    a ``BertModel``); old BERT files spell ``LayerNorm.gamma/beta``. The ``embeddings.position_ids`` buffer
    may be saved: it is an ``arange`` the model makes itself, so it is skipped.
  * ``vision_proj``, ``text_proj``, ``itm_head``, ``temp``: our names.
  * ``clip_teacher.*``: the CLIP-B/16 visual tower in OpenAI's layout (``class_embedding``,
    ``positional_embedding``, ``conv1.weight``, ``transformer.resblocks.{i}.*``, ``ln_post``, ``proj``). The
    official video teacher inflates ``conv1`` to a ``(W, 3, 1, P, P)`` Conv3d of one frame; ours is timm's
    2-D patch embedding, so that axis of length 1 is dropped (a kernel over several frames does not fit).

- **Ours** (training checkpoints of this project): every key already ours, the teacher as
  ``clip_teacher.vit.*`` (timm) + ``clip_teacher.proj``.

What the model lacks is skipped with a reason, not an error: the teacher when the model has none (it only
serves the UTA loss), the MLM head when the model was built without it. A temporal (spatial) position
embedding of another frame count (grid) is resized linearly (bicubically), as official fine-tuning does.
"""
from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Mapping

import torch

from .adapt import resize_spatial_pos_embed, resize_temporal_pos_embed, strip_prefixes
from ..utils.checkpoint_io import CheckpointError, CheckpointMismatchError, extract_state_dict, read_checkpoint
from .report import LoadReport

TEXT, TEACHER = "text_encoder.", "clip_teacher."
TEMPORAL_POS, SPATIAL_POS = "vision_encoder.temporal_pos_embedding", "vision_encoder.pos_embed"

# why a checkpoint key is not loaded (the values of VideoTextLoadReport.skipped)
NO_TEACHER = "CLIP teacher: the model has none (only the UTA loss needs it)"
NO_MLM_HEAD = "MLM head: the model was built without it (no 'mlm' loss)"
BUFFER = "BERT index buffer: the model makes it itself"
NO_POOLER = "BERT pooler / NSP head: the fusion text encoder has none"


@dataclass
class VideoTextLoadReport:
    """What a load did. Every checkpoint key is in exactly one of ``mapping`` (loaded, -> its model key),
    ``skipped`` (with the reason), ``mismatched`` (under its model key) or ``unexpected``; every model key in
    exactly one of ``loaded``, ``mismatched`` or ``missing``. ``clean``: nothing missing, mismatched or
    unexpected (what ``strict`` asks)."""

    source: str = "state_dict"
    layout: str = ""
    loaded: list[str] = field(default_factory=list)            # model keys that got a checkpoint tensor
    mapping: dict[str, str] = field(default_factory=dict)      # checkpoint key -> model key (loaded ones)
    skipped: dict[str, str] = field(default_factory=dict)      # checkpoint key -> why it is not loaded
    missing: list[str] = field(default_factory=list)           # model keys no checkpoint tensor reached
    mismatched: dict[str, str] = field(default_factory=dict)   # model key -> the two shapes
    unexpected: list[str] = field(default_factory=list)        # checkpoint keys no model key takes
    resized: dict[str, str] = field(default_factory=dict)      # model key -> "old -> new (how)"
    prefixes_stripped: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.mismatched or self.unexpected)

    def __str__(self) -> str:
        total = len(self.loaded) + len(self.missing) + len(self.mismatched)
        lines = [f"loaded {len(self.loaded)}/{total} model tensors from {self.source}"
                 + (f" ({self.layout})" if self.layout else "")]
        if self.prefixes_stripped:
            lines.append("  prefixes stripped: " + ", ".join(repr(p) for p in self.prefixes_stripped))
        by_reason = defaultdict(list)
        for k, why in self.skipped.items():
            by_reason[why].append(k)
        for title, items in (("resized", [f"{k}: {v}" for k, v in self.resized.items()]),
                             ("skipped", [f"{why}: {_some(keys)}" for why, keys in by_reason.items()]),
                             ("shape mismatch (model keeps its init)",
                              [f"{k}: {v}" for k, v in self.mismatched.items()]),
                             ("missing (model keeps its init)", [_some(self.missing, 8)] if self.missing else []),
                             ("unexpected (ignored)", [_some(self.unexpected, 8)] if self.unexpected else [])):
            if items:
                lines.append(f"  {title}:")
                lines.extend(f"    {s}" for s in items)
        return "\n".join(lines)


def _some(keys, shown: int = 3) -> str:
    keys = list(keys)
    head = ", ".join(keys[:shown]) + (", ..." if len(keys) > shown else "")
    return f"{len(keys)} tensor{'s' if len(keys) != 1 else ''} ({head})"


def _shape(shape) -> str:
    return "(" + ",".join(str(s) for s in shape) + ")"


# ---------------------------------------------------------------------------------------------- names
def _text_name(rest: str) -> tuple[str | None, str | None]:
    """``(our key, None)`` or ``(None, skip reason)`` of a key after ``text_encoder.``."""
    from ..models.text_bert import bert_key

    if rest.endswith(("position_ids", "token_type_ids")):
        return None, BUFFER
    ours = bert_key(rest)   # adds `bert.` to a bare BertModel key, renames LayerNorm.gamma/beta
    return (TEXT + ours, None) if ours is not None else (None, NO_POOLER)


def _teacher_names(teacher: torch.nn.Module) -> dict[str, str]:
    """Checkpoint name (without ``clip_teacher.``; OpenAI's or ours) -> our model key. Built from the model's
    own keys through the timm -> OpenAI rename, so no weights are touched (works on the meta device)."""
    from ..models.clip_teacher import _openai_name

    names = {}
    for k in teacher.state_dict():
        names[k] = TEACHER + k
        if k.startswith("vit."):
            try:
                names[_openai_name(k[len("vit."):])] = TEACHER + k
            except KeyError:   # a timm tensor OpenAI's tower has not (none in build_clip_vit's towers)
                pass
    return names


def _model_name(key: str, model, teacher_names: dict[str, str]) -> tuple[str | None, str | None]:
    """``(our key, None)`` or ``(None, skip reason)``; our key may still be absent from the model."""
    if key.startswith(TEACHER):
        if model.clip_teacher is None:
            return None, NO_TEACHER
        return teacher_names.get(key[len(TEACHER):], key), None
    if key.startswith(TEXT):
        name, why = _text_name(key[len(TEXT):])
        if name is not None and name.startswith(TEXT + "cls.") and model.text_encoder.cls is None:
            return None, NO_MLM_HEAD
        return name, why
    return key, None


def _layout(keys) -> str:
    keys = list(keys)
    if any(k.startswith(TEXT + "bert.") for k in keys):
        text = "text_encoder.bert.*" + (" + MLM head" if any(k.startswith(TEXT + "cls.") for k in keys) else "")
    elif any(k.startswith(TEXT) for k in keys):
        text = "text_encoder.* (BertModel, retrieval layout)"
    else:
        text = "no text encoder"
    if any(k.startswith(TEACHER + "vit.") for k in keys):
        teacher = "teacher in our (timm) layout"
    elif any(k.startswith(TEACHER) for k in keys):
        teacher = "teacher in OpenAI's layout"
    else:
        teacher = "no teacher"
    return f"{text}, {teacher}"


# ---------------------------------------------------------------------------------------------- values
def _fit(name: str, value: torch.Tensor, want: torch.Size, model, report: VideoTextLoadReport):
    """``value`` in the model's shape ``want``, or None where it cannot be made to fit."""
    if value.shape == want:
        return value
    orig, how = value.shape, None
    if name == TEMPORAL_POS and value.dim() == 3 and value.shape[-1] == want[-1]:
        value, how = resize_temporal_pos_embed(value, want[1]), "linear"
    elif name == SPATIAL_POS and value.dim() == 3 and value.shape[-1] == want[-1]:
        try:
            value = resize_spatial_pos_embed(value, tuple(model.vision_encoder.patch_embed.grid_size))
        except ValueError:   # not a square grid: the source grid is unknown
            return None
        how = "bicubic, CLS kept"
    elif name.startswith(TEACHER) and [s for s in value.shape if s != 1] == [s for s in want if s != 1]:
        # OpenAI's class/positional_embedding lack timm's leading 1s; the official video teacher's conv1 is
        # a Conv3d of one frame (W, 3, 1, P, P) where timm's patch conv is 2-D
        value = value.reshape(want)
    if value.shape != want:
        return None
    if how is not None:
        report.resized[name] = f"{_shape(orig)} -> {_shape(want)} ({how})"
    return value


def _tied(model: torch.nn.Module) -> dict[str, list[str]]:
    """Model key -> the other keys of the same parameter (the MLM decoder is tied to the word embeddings):
    a checkpoint that saved only one of them still fills both."""
    groups = defaultdict(list)
    for name, p in model.named_parameters(remove_duplicate=False):
        groups[id(p)].append(name)
    return {n: [m for m in names if m != n] for names in groups.values() if len(names) > 1 for n in names}


def _account_model_keys(model, target, out, report: VideoTextLoadReport) -> None:
    tied = _tied(model)
    for k in target:
        if k in out or any(t in out for t in tied.get(k, ())):
            report.loaded.append(k)
        elif k not in report.mismatched:
            report.missing.append(k)


def convert_video_text_state_dict(sd: Mapping[str, torch.Tensor], model: torch.nn.Module,
                                  source: str = "state_dict") -> tuple[dict[str, torch.Tensor], VideoTextLoadReport]:
    """An official or our own video-text state dict -> ``(state dict in the model's names and shapes, report)``.

    Nothing is loaded and no weight is read beyond its shape (meta tensors work, for model and dict alike).
    See :class:`VideoTextLoadReport` for how every key is accounted for."""
    target = model.state_dict()
    report = VideoTextLoadReport(source=str(source))
    strip = LoadReport()
    sd = strip_prefixes(dict(sd), set(target), strip, prefixes=("module.",))   # a DDP-wrapped save
    report.prefixes_stripped, report.layout = strip.prefixes_stripped, _layout(sd)
    teacher_names = _teacher_names(model.clip_teacher) if model.clip_teacher is not None else {}
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        name, why = _model_name(key, model, teacher_names)
        if name is None:
            report.skipped[key] = why
        elif name not in target:
            report.unexpected.append(key)
        else:
            fitted = _fit(name, value, target[name].shape, model, report)
            if fitted is None:
                from_key = f"{key} " if key != name else ""   # the file's own name where it differs
                report.mismatched[name] = (f"checkpoint {from_key}{_shape(value.shape)}, "
                                           f"model {_shape(target[name].shape)}")
            else:
                out[name], report.mapping[key] = fitted, name
    _account_model_keys(model, target, out, report)
    return out, report


# ---------------------------------------------------------------------------------------------- loading
def load_video_text_checkpoint(model: torch.nn.Module, path_or_state_dict: str | os.PathLike | Mapping,
                               strict: bool = True, log=print, source: str | None = None) -> VideoTextLoadReport:
    """Load an official UMT_VIDEOMAMBA checkpoint, or one of our training checkpoints, into a
    :class:`~videomamba.models.video_text.VideoMambaText` and return (and ``log``) the report.

    Raises :class:`~videomamba.checkpoint.CheckpointError` naming the file: always when no tensor of it fits
    the model; with ``strict`` (a :class:`CheckpointMismatchError`, ``.report`` attached) when a model
    tensor is missing, a shape does not fit or a checkpoint key has no place in the model. Keys the model
    lacks by construction (teacher, MLM head) are skipped, never an error. The model is untouched when it
    raises. ``source`` names an already-read checkpoint (a mapping) in errors."""
    if isinstance(path_or_state_dict, Mapping):
        source, obj = source or "state_dict", path_or_state_dict
    else:
        source = str(path_or_state_dict)
        obj = read_checkpoint(path_or_state_dict)
    sd = extract_state_dict(obj, source=source)
    mapped, report = convert_video_text_state_dict(sd, model, source)
    if not report.loaded:
        raise CheckpointError(source, f"no tensor fits this video-text model: not a video-text checkpoint? "
                              f"it holds {_some(sd)}", report=report)
    if strict and not report.clean:
        raise CheckpointMismatchError(source, _strict_summary(report), report=report)
    model.load_state_dict(mapped, strict=False)
    if log is not None:
        log(str(report))
    return report


def _strict_summary(report: VideoTextLoadReport) -> str:
    parts = []
    if report.mismatched:
        items = [f"{k}: {v}" for k, v in report.mismatched.items()]
        parts.append(f"{len(items)} shape mismatch{'es' if len(items) > 1 else ''} "
                     f"({'; '.join(items[:3])}{'; ...' if len(items) > 3 else ''})")
    if report.missing:
        parts.append(f"missing {_some(report.missing)}")
    if report.unexpected:
        parts.append(f"unexpected {_some(report.unexpected)}")
    return "strict load failed: " + "; ".join(parts)


__all__ = ["VideoTextLoadReport", "convert_video_text_state_dict", "load_video_text_checkpoint"]
