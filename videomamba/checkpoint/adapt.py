"""Make any official VideoMamba state dict fit a given model.

Handles: DDP/backbone/encoder/UMT prefixes, the masked-pretrain ``norm`` <-> ``norm_f`` rename,
2D -> 3D patch-embed inflation (center or average), bicubic resizing of the spatial position
embedding (CLS row kept), linear resizing of the temporal one, and a head whose shape differs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..modules.factored_head import fold_factored_head
from ..utils.checkpoint_io import CheckpointError
from .report import LoadReport

# Tried in this order; 'vision_encoder.' marks a UMT (video-text) checkpoint.
KNOWN_PREFIXES = ("module.", "vision_encoder.", "backbone.", "encoder.")


@dataclass
class AdaptResult:
    state_dict: dict[str, torch.Tensor]
    report: LoadReport


def strip_prefixes(sd: dict[str, torch.Tensor], model_keys: set[str], report: LoadReport,
                   prefixes=KNOWN_PREFIXES) -> dict[str, torch.Tensor]:
    for p in prefixes:
        hits = [k for k in sd if k.startswith(p)]
        if not hits or any(k.startswith(p) for k in model_keys):
            continue
        # Keys without the prefix stay (e.g. a UMT checkpoint's text encoder) and are reported as unexpected.
        sd = {(k[len(p):] if k.startswith(p) else k): v for k, v in sd.items()}
        report.prefixes_stripped.append(p)
    return sd


def inflate_patch_weight(w: torch.Tensor, target_shape: torch.Size, center: bool = True) -> torch.Tensor:
    """Conv2d ``(D,C,p,p)`` (or another Conv3d) weight -> Conv3d ``(D,C,t,p,p)``.

    center=True: zeros except frame ``t//2``; center=False: the 2-D kernel repeated and divided by t.
    A 3-D source is first summed over time, which is exact for a static input.
    """
    w2d = w if w.dim() == 4 else w.sum(dim=2)
    if len(target_shape) == 4:
        return w2d
    t = target_shape[2]
    if center:
        out = torch.zeros(*w2d.shape[:2], t, *w2d.shape[2:], dtype=w2d.dtype)
        out[:, :, t // 2] = w2d
        return out
    return w2d.unsqueeze(2).repeat(1, 1, t, 1, 1) / t


def resize_spatial_pos_embed(pos: torch.Tensor, new_grid: tuple[int, int], num_prefix: int = 1) -> torch.Tensor:
    """``(1, prefix + h*w, D)`` -> ``(1, prefix + H*W, D)``: bicubic (align_corners=False), CLS kept."""
    prefix, grid = pos[:, :num_prefix], pos[:, num_prefix:]
    n = grid.shape[1]
    side = int(round(math.sqrt(n)))
    if side * side != n:
        raise ValueError(f"cannot resize: {n} positions are not a square grid, so the source grid is unknown")
    D = grid.shape[-1]
    dtype = grid.dtype
    grid = grid.float().reshape(1, side, side, D).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=new_grid, mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], D).to(dtype)
    return torch.cat((prefix, grid), dim=1)


def resize_temporal_pos_embed(pos: torch.Tensor, new_t: int) -> torch.Tensor:
    """``(1, T, D)`` -> ``(1, new_t, D)`` with linear interpolation (align_corners=False)."""
    dtype = pos.dtype
    out = F.interpolate(pos.float().permute(0, 2, 1), size=new_t, mode="linear", align_corners=False)
    return out.permute(0, 2, 1).to(dtype)


def _fmt(shape) -> str:
    return "(" + ",".join(str(s) for s in shape) + ")"


# Heads that exist only while training (the self-distillation projector, the masked-pretraining decoders):
# a plain backbone skips them without making a strict load fail, as the official --load_from_distill does
# and as official fine-tuning ignores `clip_decoder.*`.
TRAINING_ONLY_PREFIXES = ("distill_head.", "clip_decoder.")


def fold_training_head(sd: dict[str, torch.Tensor], report: LoadReport) -> bool:
    """:func:`fold_factored_head` in place, an incomplete layout said as a one-line checkpoint error naming
    ``report.source``; True when a factored head was folded."""
    try:
        return bool(fold_factored_head(sd))
    except ValueError as err:
        raise CheckpointError(report.source, str(err), report=report) from None


def adapt_state_dict(state_dict: dict[str, torch.Tensor], model: torch.nn.Module, inflate: str = "center",
                     report: LoadReport | None = None) -> AdaptResult:
    """Return a state dict that ``model.load_state_dict(..., strict=False)`` accepts, plus a report."""
    if inflate not in ("center", "average"):
        raise ValueError(f"inflate must be 'center' or 'average', got {inflate!r}")
    report = report or LoadReport()
    target = model.state_dict()
    sd = strip_prefixes(dict(state_dict), set(target), report)
    if "head.weight" in target and "head.base.weight" not in target and fold_training_head(sd, report):
        report.notes.append("head: the factored training head (head.base + head.factors.*) folded into one "
                            "linear head of the same logits")

    # The masked-pretraining student (and the video-text vision encoder) names its final norm `norm`, the
    # backbone `norm_f`: either way round, the final norm loads.
    for suffix in ("weight", "bias"):
        for old, new in ((f"norm.{suffix}", f"norm_f.{suffix}"), (f"norm_f.{suffix}", f"norm.{suffix}")):
            if old in sd and new not in sd and new in target and old not in target:
                sd[new] = sd.pop(old)
                report.renamed[old] = new

    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key not in target and key.startswith(TRAINING_ONLY_PREFIXES):
            report.skipped.append(key)
            continue
        if key not in target:
            report.unexpected.append(key)
            continue
        want = target[key].shape
        if value.shape == want:
            out[key] = value
            grid = tuple(getattr(getattr(model, "patch_embed", None), "grid_size", (0, 0)))
            if key == "pos_embed" and grid[0] != grid[1]:
                report.notes.append(f"pos_embed: same token count, assumed the same {grid[0]}x{grid[1]} grid "
                                    "(a checkpoint does not record its grid shape)")
            continue
        how = None
        if key == "patch_embed.proj.weight" and value.dim() in (4, 5) and len(want) in (4, 5) \
                and value.shape[:2] == want[:2] and value.shape[-2:] == want[-2:]:
            value = inflate_patch_weight(value, want, center=(inflate == "center"))
            how = "2D->3D " + inflate if len(want) == 5 and sd[key].dim() == 4 else "temporal kernel folded"
        elif key == "pos_embed" and value.dim() == 3 and value.shape[-1] == want[-1]:
            try:
                value = resize_spatial_pos_embed(value, tuple(model.patch_embed.grid_size))
                how = "bicubic, CLS kept"
            except ValueError as err:
                report.dropped[key] = str(err)
                continue
        elif key == "temporal_pos_embedding" and value.dim() == 3 and value.shape[-1] == want[-1]:
            value = resize_temporal_pos_embed(value, want[1])
            how = "linear"
        if how is not None and value.shape == want:
            report.resized[key] = f"{_fmt(sd[key].shape)} -> {_fmt(want)} ({how})"
            out[key] = value
        elif key.startswith("head."):
            report.dropped[key] = f"shape {_fmt(value.shape)} != model {_fmt(want)} (new label set)"
        else:
            report.dropped[key] = f"shape {_fmt(value.shape)} cannot be adapted to model {_fmt(want)}"

    report.missing = [k for k in target if k not in out and k not in report.dropped]
    report.loaded = [k for k in target if k in out]
    return AdaptResult(out, report)
