"""Read the architecture a VideoMamba state dict was saved from, so the matching model can be built.

Everything comes from tensor shapes (docs/design.md §1.6): ``patch_embed.proj.weight`` gives the width,
input channels, patch size and (Conv3d) tubelet; ``pos_embed`` the square patch grid;
``temporal_pos_embedding`` the frame count; ``layers.{i}`` the depth; ``head`` the label count; the
first mixer its ``d_state``/``expand``/``d_conv``/``dt_rank``.
"""
from __future__ import annotations

import math
import re
from typing import Any, Mapping

import torch

from .adapt import fold_training_head, strip_prefixes
from ..utils.checkpoint_io import CheckpointError, extract_state_dict
from .report import LoadReport

_LAYER = re.compile(r"^layers\.(\d+)\.")

# Width -> registered variant (docs/design.md §1.5); the depth decides whether the name alone is enough.
VARIANT_BY_DIM = {192: "videomamba_tiny", 384: "videomamba_small", 576: "videomamba_middle", 768: "videomamba_base"}


def variant_for(embed_dim: int | None, depth: int | None = None) -> str | None:
    """The registered variant with this width (and depth, when given), or None."""
    from ..models.variants import VARIANT_ARGS

    name = VARIANT_BY_DIM.get(embed_dim)
    if name is None or (depth is not None and VARIANT_ARGS[name]["depth"] != depth):
        return None
    return name


def embed_dim_of(sd: Mapping[str, torch.Tensor]) -> int | None:
    """Token width from the first tensor that records it, or None."""
    for key, axis in (("patch_embed.proj.weight", 0), ("cls_token", -1), ("pos_embed", -1),
                      ("norm_f.weight", 0), ("norm.weight", 0), ("layers.0.norm.weight", 0),
                      ("layers.0.mixer.in_proj.weight", 1)):
        t = sd.get(key)
        if torch.is_tensor(t) and t.dim() > 0:
            return int(t.shape[axis])
    return None


def depth_of(sd: Mapping[str, Any]) -> int:
    """1 + the highest ``layers.{i}`` index (0 when there are no layers)."""
    idx = [int(m.group(1)) for k in sd if (m := _LAYER.match(k))]
    return max(idx) + 1 if idx else 0


def normalise_state_dict(state_dict: Any, source: str = "state_dict") -> dict[str, torch.Tensor]:
    """A container or a flat dict -> the flat backbone state dict, known prefixes stripped."""
    sd = state_dict
    if not (isinstance(sd, Mapping) and sd and all(torch.is_tensor(v) for v in sd.values())):
        sd = extract_state_dict(sd, source=source)
    report = LoadReport(source=source)
    sd = strip_prefixes(dict(sd), set(), report)
    fold_training_head(sd, report)   # a factored training head reads as the plain head it computes
    return sd


def _fmt(shape) -> str:
    return "(" + ",".join(str(s) for s in shape) + ")"


def infer_model_config(state_dict: Any, source: str = "state_dict") -> dict[str, Any]:
    """kwargs for :func:`videomamba.create_model` that rebuild the model ``state_dict`` was saved from.

    Accepts a flat state dict or a training container (``model``/``module``/``state_dict``), with or
    without the ``module.``/``vision_encoder.``/``backbone.``/``encoder.`` prefixes. Returns ``name``
    (the registered variant when width and depth match one, else ``'videomamba_tiny'`` overridden by the
    explicit sizes), ``embed_dim``, ``depth``, ``patch_size``, ``img_size`` (square, from the patch
    grid), ``num_frames`` (None for an image model), ``num_classes`` (0 without a head), ``in_chans``;
    for a video model ``kernel_size`` (the tubelet); and only when they differ from the defaults
    ``ssm_cfg``, ``rms_norm=False`` and ``distill_dim``. Usage: ``create_model(**infer_model_config(sd))``.

    Cannot be read from weights (pass them yourself if they differ): a patch ``stride`` other than the
    patch size (image models) and a non-square grid (raises :class:`CheckpointError`).
    """
    sd = normalise_state_dict(state_dict, source)
    pe = sd.get("patch_embed.proj.weight")
    if pe is None or pe.dim() not in (4, 5):
        sample = ", ".join(repr(k) for k in list(sd)[:2])
        raise CheckpointError(source, "not a VideoMamba state dict: no 4-D/5-D patch_embed.proj.weight "
                              f"(keys look like {sample})")
    embed_dim, in_chans = int(pe.shape[0]), int(pe.shape[1])
    ph, pw = (int(s) for s in pe.shape[-2:])
    patch_size = ph if ph == pw else (ph, pw)
    depth = depth_of(sd)
    if depth == 0:
        raise CheckpointError(source, "not a VideoMamba state dict: no layers.{i}.* tensors")

    pos = sd.get("pos_embed")
    if pos is None or pos.dim() != 3:
        raise CheckpointError(source, "no 3-D pos_embed: the image size cannot be inferred")
    n = int(pos.shape[1]) - 1
    side = math.isqrt(max(n, 0))
    if n <= 0 or side * side != n:
        raise CheckpointError(source, f"pos_embed {_fmt(pos.shape)} holds {n} patch positions, not a square "
                              "grid: the image size cannot be inferred; pass img_size=(H, W) yourself")
    img_size = side * ph if ph == pw else (side * ph, side * pw)

    tpos = sd.get("temporal_pos_embedding")
    video = pe.dim() == 5 or tpos is not None
    tubelet = int(pe.shape[2]) if pe.dim() == 5 else 1
    num_frames = (int(tpos.shape[1]) if tpos is not None else 1) * tubelet if video else None

    head = sd.get("head.weight")
    num_classes = int(head.shape[0]) if head is not None and head.dim() == 2 else 0

    name = variant_for(embed_dim, depth) or "videomamba_tiny"
    cfg: dict[str, Any] = {"name": name, "embed_dim": embed_dim, "depth": depth, "patch_size": patch_size,
                           "img_size": img_size, "num_frames": num_frames, "num_classes": num_classes,
                           "in_chans": in_chans}
    if video:
        cfg["kernel_size"] = tubelet
    ssm = _ssm_cfg(sd, embed_dim)
    if ssm:
        cfg["ssm_cfg"] = ssm
    if "layers.0.norm.bias" in sd:  # LayerNorm (RMSNorm has no bias)
        cfg["rms_norm"] = False
    distill = sd.get("distill_head.1.weight")
    if distill is not None:
        cfg["distill_dim"] = int(distill.shape[0])
    return cfg


def _ssm_cfg(sd: Mapping[str, torch.Tensor], d_model: int) -> dict[str, Any]:
    """The BiMamba kwargs of layer 0 that differ from the defaults (d_state 16, expand 2, d_conv 4,
    dt_rank ceil(D/16), conv bias, no projection bias)."""
    p = "layers.0.mixer."
    out: dict[str, Any] = {}
    a_log, in_proj = sd.get(p + "A_log"), sd.get(p + "in_proj.weight")
    if a_log is not None and a_log.dim() == 2 and int(a_log.shape[1]) != 16:
        out["d_state"] = int(a_log.shape[1])
    if in_proj is not None and in_proj.dim() == 2:
        d_inner = int(in_proj.shape[0]) // 2
        if d_inner != 2 * d_model:
            out["expand"] = d_inner // d_model if d_inner % d_model == 0 else d_inner / d_model
    conv = sd.get(p + "conv1d.weight")
    if conv is not None and conv.dim() == 3 and int(conv.shape[-1]) != 4:
        out["d_conv"] = int(conv.shape[-1])
    dt = sd.get(p + "dt_proj.weight")
    if dt is not None and dt.dim() == 2 and int(dt.shape[1]) != math.ceil(d_model / 16):
        out["dt_rank"] = int(dt.shape[1])
    if conv is not None and p + "conv1d.bias" not in sd:
        out["conv_bias"] = False
    if p + "in_proj.bias" in sd:
        out["bias"] = True
    return out


def _variant_hint(dim: int | None) -> str:
    name = VARIANT_BY_DIM.get(dim)
    return f" ({name}?)" if name else ""


def architecture_mismatch(state_dict: Mapping[str, torch.Tensor], model_state: Mapping[str, torch.Tensor],
                          report: LoadReport, raw_keys: list[str] | None = None) -> str | None:
    """One line saying why ``state_dict`` (prefixes stripped) holds weights of another architecture than
    ``model_state``, or None when it is the same architecture (sizes that :func:`adapt_state_dict`
    adapts, a head of another label set and extra tensors are fine). ``raw_keys``: the checkpoint's
    keys before prefix stripping, to quote them as the file has them.

    The rule: with ``layers.{i}`` keys the checkpoint is a VideoMamba one, and it must agree with the
    model on the embed dim, the depth and every block/patch-embedding tensor shape that cannot be
    adapted; whatever it is, at least one block tensor (``layers.*``) must load.
    """
    ck_depth, md_depth = depth_of(state_dict), depth_of(model_state)
    if ck_depth:
        ck_dim, md_dim = embed_dim_of(state_dict), embed_dim_of(model_state)
        if ck_dim is not None and md_dim is not None and ck_dim != md_dim:
            return (f"embed dim {ck_dim} in the checkpoint{_variant_hint(ck_dim)}, "
                    f"{md_dim} in the model{_variant_hint(md_dim)}")
        if md_depth and ck_depth != md_depth:
            return f"depth {ck_depth} in the checkpoint, {md_depth} in the model"
        bad = [k for k in report.dropped if not k.startswith(("head.", "distill_head.")) and k != "pos_embed"]
        if bad:
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            return f"tensor shapes disagree: {bad[0]}: {report.dropped[bad[0]]}{more}"
    if md_depth and not any(_LAYER.match(k) for k in report.loaded):
        backbone = [k for k in model_state if not k.startswith(("head.", "distill_head."))]
        n_ok = sum(k in report.loaded for k in backbone)
        others = [k for k in report.unexpected if not k.startswith("head.")] or list(report.unexpected)
        if raw_keys is not None and others:
            wanted = set(others)
            others = [k for k in raw_keys if _strip(k, report.prefixes_stripped) in wanted]
        seen = (f"checkpoint keys look like {', '.join(repr(k) for k in others[:2])}" if others
                else "the checkpoint holds no other tensors")
        return (f"weights of another architecture: {n_ok} of {len(backbone)} model tensors match, "
                f"none of them in layers.* ({seen})")
    return None


def _strip(key: str, prefixes: list[str]) -> str:
    for p in prefixes:
        if key.startswith(p):
            key = key[len(p):]
    return key
