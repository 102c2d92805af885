"""The CLIP teacher of masked (UMT-style) pretraining, on timm's CLIP ViT.

The official teacher (UMT/VideoMamba ``clip_b16``) is the OpenAI CLIP ViT-B/16 visual tower: width 768,
12 pre-norm residual blocks of 12 heads, patch 16 at 224 px, QuickGELU, LayerNorm eps 1e-5, ``ln_pre``
after the position embedding, ``ln_post`` and ``proj (768, 512)`` at the end. Here it is timm's
``vit_base_patch16_clip_224`` architecture (:func:`build_clip_vit`) plus the ``proj`` matrix.

What :class:`CLIPTeacher` returns for a clip ``(B, C, T, H, W)`` (or an image ``(B, C, H, W)``, T=1),
every frame run independently and resized bicubically to the teacher's size first if needed:

* ``features (K, B, 1 + T*N, out_dim)``: a block's output *before* ``ln_post``; the CLS token of the T
  frames averaged into one, then the T*N patch tokens frame-major; times ``proj``, L2-normalised. K=1
  is the last block; ``return_layers=K, interval=I`` gives blocks ``depth-1-(K-1)*I, ..., depth-1``.
* ``attn (B, T, N)``: the last block's softmax attention of the CLS query to the N patch keys (of all
  1+N keys, so a row does not sum to 1), averaged over heads.

Weight files (:func:`load_clip_teacher`; the layout is told from the keys):

* ``openai-visual``: the "extracted" teacher file of the official ``extract.ipynb``, OpenAI's visual keys
  without prefix: ``class_embedding (W)``, ``positional_embedding (1+N, W)``, ``conv1.weight (W, 3, P, P)``
  (no bias), ``ln_pre.*``, ``transformer.resblocks.{i}.{ln_1, attn.in_proj_weight/bias (3W, W),
  attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}.*``, ``ln_post.*``, ``proj (W, out_dim)``;
* ``openai-clip``: a whole OpenAI CLIP state dict, the same under ``visual.`` (text-tower keys ignored),
  or OpenAI's TorchScript download (``ViT-B-16.pt``) which holds that state dict;
* ``timm-vit``: a state dict of a timm ``vit_*_clip_*`` model (``cls_token``, ``pos_embed``,
  ``patch_embed.proj.*``, ``norm_pre.*``, ``blocks.{i}.*``, ``norm.*``; a ``head.*`` is ignored). It has no
  CLIP projection, so ``proj`` is the identity: the target is the last block's output itself. A patch
  conv bias (timm ViTs without ``pre_norm`` have one, OpenAI's ``conv1`` has none) is folded, exactly,
  into the patch rows of the position embedding: both are added to every patch token and nothing else.
  So every input ends up as the pure OpenAI layout, which :func:`convert_clip` writes;

any of them also inside a ``model`` / ``state_dict`` / ``module`` container. The architecture comes
from the shapes; heads default to width // 64 (true of every OpenAI CLIP ViT).
"""
from __future__ import annotations

import os
import re
import warnings
import zipfile
from pathlib import Path
from typing import Mapping, NamedTuple

import timm
import torch
import torch.nn.functional as F
from torch import nn

from ..utils.checkpoint_io import (DEFAULT_MODEL_KEYS, CheckpointError, atomic_write, extract_state_dict,
                             read_checkpoint, save_checkpoint)

__all__ = ["CLIPTeacher", "TeacherOutput", "build_clip_vit", "load_clip_teacher", "teacher_from_state_dict", "convert_clip"]


def build_clip_vit(img_size: int = 224, patch_size: int = 16, width: int = 768, layers: int = 12,
                   heads: int | None = None, act_layer: str = "quick_gelu") -> nn.Module:
    """timm's CLIP ViT (``vit_base_patch16_clip_224``: pre-norm, LayerNorm eps 1e-5, no patch-conv bias)
    at the given size, without a head (``norm`` is CLIP's ``ln_post``)."""
    return timm.create_model("vit_base_patch16_clip_224", pretrained=False, num_classes=0, img_size=img_size,
                             patch_size=patch_size, embed_dim=width, depth=layers,
                             num_heads=heads or width // 64, act_layer=act_layer)


class TeacherOutput(NamedTuple):
    features: torch.Tensor   # (K, B, 1 + T*N, out_dim), L2-normalised
    attn: torch.Tensor       # (B, T, N), last block, CLS query -> patch keys, mean over heads


class CLIPTeacher(nn.Module):
    """A frozen CLIP visual tower giving the distillation targets (see the module docstring).

    ``proj`` is ``(width, out_dim)``; the identity for a timm-layout source.
    """

    def __init__(self, vit: nn.Module, proj: torch.Tensor):
        super().__init__()
        self.vit = vit
        self.proj = nn.Parameter(proj.detach().clone().float())
        self.img_size = vit.patch_embed.img_size[0]
        self.patch_size = vit.patch_embed.patch_size[0]
        self.num_patches = vit.patch_embed.num_patches
        self.width, self.out_dim = self.proj.shape
        self.source_format = None   # set by load_clip_teacher
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        # a teacher: stays in eval mode whatever the parent model does
        return super().train(False)

    def describe(self) -> str:
        return (f"width {self.width}, {len(self.vit.blocks)} layers, {self.vit.blocks[0].attn.num_heads} heads, "
                f"patch {self.patch_size}, {self.img_size} px, out_dim {self.out_dim}")

    @torch.no_grad()
    def forward(self, x: torch.Tensor, return_layers: int = 1, interval: int = 1) -> TeacherOutput:
        depth = len(self.vit.blocks)
        first = depth - 1 - (return_layers - 1) * interval
        if return_layers < 1 or interval < 1 or first < 0:
            raise ValueError(f"return_layers={return_layers}, interval={interval} do not fit {depth} blocks")
        if x.dim() == 4:
            x = x.unsqueeze(2)
        B, C, T, H, W = x.shape
        frames = x.transpose(1, 2).reshape(B * T, C, H, W).to(self.proj.dtype)
        if (H, W) != (self.img_size, self.img_size):
            frames = F.interpolate(frames, size=(self.img_size,) * 2, mode="bicubic", align_corners=False)

        vit = self.vit
        h = vit.norm_pre(vit._pos_embed(vit.patch_embed(frames)))
        keep = set(range(first, depth, interval))
        outs = []
        for i, blk in enumerate(vit.blocks):
            if i == depth - 1:
                attn = self._cls_attention(blk, h)
            h = blk(h)
            if i in keep:
                outs.append(self._target(h, B, T))
        return TeacherOutput(torch.stack(outs), attn.reshape(B, T, -1))

    @staticmethod
    def _cls_attention(blk: nn.Module, h: torch.Tensor) -> torch.Tensor:
        """(B*T, N): softmax attention of the CLS query over all keys, patch columns, mean over heads.
        timm's Attention runs fused SDPA and returns no weights, so they are recomputed from its qkv."""
        a = blk.attn
        qkv = a.qkv(blk.norm1(h)).reshape(h.shape[0], h.shape[1], 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4)
        q, k = a.q_norm(qkv[0][:, :, :1]), a.k_norm(qkv[1])           # only the CLS query is needed
        w = (q * a.scale @ k.transpose(-2, -1)).softmax(dim=-1)      # (BT, heads, 1, 1+N)
        return w[:, :, 0, 1:].mean(dim=1)

    def _target(self, h: torch.Tensor, B: int, T: int) -> torch.Tensor:
        h = h.reshape(B, T, h.shape[1], h.shape[2])
        tokens = torch.cat([h[:, :, :1].mean(dim=1), h[:, :, 1:].reshape(B, -1, h.shape[-1])], dim=1)
        return F.normalize(tokens @ self.proj, dim=-1)


# ----------------------------------------------------------------------------- weight files
_BLOCK_TIMM_TO_OPENAI = (("norm1.", "ln_1."), ("norm2.", "ln_2."), ("attn.qkv.", "attn.in_proj_"),
                         ("attn.proj.", "attn.out_proj."), ("mlp.fc1.", "mlp.c_fc."), ("mlp.fc2.", "mlp.c_proj."))
_TOP_TIMM_TO_OPENAI = {"cls_token": "class_embedding", "pos_embed": "positional_embedding",
                       "patch_embed.proj.weight": "conv1.weight", "norm_pre.weight": "ln_pre.weight",
                       "norm_pre.bias": "ln_pre.bias", "norm.weight": "ln_post.weight", "norm.bias": "ln_post.bias"}


def _openai_name(timm_key: str) -> str:
    """OpenAI visual name of a timm CLIP ViT key (the inverse of timm's ``_convert_openai_clip`` renames)."""
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)", timm_key)
    if m is None:
        return _TOP_TIMM_TO_OPENAI[timm_key]
    rest = m.group(2)
    for t, o in _BLOCK_TIMM_TO_OPENAI:
        if rest.startswith(t):
            rest = o + rest[len(t):]
            break
    return f"transformer.resblocks.{m.group(1)}.{rest}"


def _read(path: Path, map_location) -> tuple[dict[str, torch.Tensor], str | None]:
    """``(flat state dict, container key or None)``; OpenAI's own download is a TorchScript archive."""
    if _is_torchscript(path):
        try:
            with warnings.catch_warnings():   # torch.jit is deprecated, but it is how OpenAI ships the weights
                warnings.simplefilter("ignore", FutureWarning)
                obj = torch.jit.load(str(path), map_location=map_location).state_dict()
        except Exception as err:
            msg = " ".join(str(err).split())[:200]
            raise CheckpointError(path, f"cannot load this TorchScript archive ({type(err).__name__}: {msg})") from err
    else:
        obj = read_checkpoint(path, map_location=map_location)
    container = next((k for k in DEFAULT_MODEL_KEYS if isinstance(obj, Mapping) and isinstance(obj.get(k), Mapping)),
                     None)
    return extract_state_dict(obj, source=str(path)), container


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("/constants.pkl") for n in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _missing(path, what: str, missing, unexpected=()) -> CheckpointError:
    def some(keys):
        keys = sorted(keys, key=_natural)
        return ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")

    parts = [f"missing {len(missing)} keys ({some(missing)})"] if missing else []
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys ({some(unexpected)})")
    return CheckpointError(path, f"not a {what}: " + "; ".join(parts))


def _natural(key: str):
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", key)]


def _layout(sd: Mapping[str, torch.Tensor]) -> str | None:
    if any(k.startswith("visual.") for k in sd):
        return "openai-clip"
    if "conv1.weight" in sd or "class_embedding" in sd or any(k.startswith("transformer.resblocks.") for k in sd):
        return "openai-visual"
    if "patch_embed.proj.weight" in sd or "cls_token" in sd or any(k.startswith("blocks.") for k in sd):
        return "timm-vit"
    return None


_WHAT = {True: "CLIP visual tower", False: "timm CLIP ViT"}


def _architecture(path, sd: Mapping[str, torch.Tensor], openai: bool) -> dict:
    """``build_clip_vit`` arguments from the shapes (in the file's own key names)."""
    blocks, patch, pos = (("transformer.resblocks.", "conv1.weight", "positional_embedding") if openai
                          else ("blocks.", "patch_embed.proj.weight", "pos_embed"))
    idx = [int(m.group(1)) for k in sd if (m := re.match(re.escape(blocks) + r"(\d+)\.", k))]
    if patch not in sd or pos not in sd or not idx:
        need = [k for k in (patch, pos) if k not in sd] + ([] if idx else [blocks + "0.*"])
        raise _missing(path, _WHAT[openai], need)
    width, _, p = sd[patch].shape[:3]
    tokens = sd[pos].shape[-2]
    grid = round((tokens - 1) ** 0.5)
    if grid * grid + 1 != tokens:
        raise CheckpointError(path, f"the position embedding has {tokens} tokens, not 1 + a square patch grid")
    return dict(img_size=grid * p, patch_size=p, width=width, layers=max(idx) + 1)


def _patch_conv_2d(sd: Mapping[str, torch.Tensor], key: str, source) -> Mapping[str, torch.Tensor]:
    """The official video teacher saves its patch conv inflated to one frame, a Conv3d weight ``(W, 3, 1, P, P)``
    (as the video-text loader also reads it): the same weights as the image conv ``(W, 3, P, P)``."""
    w = sd.get(key)
    if w is None or w.dim() != 5:
        return sd
    if w.shape[2] != 1:
        raise CheckpointError(source, f"{key} is {tuple(w.shape)}: a patch conv over {w.shape[2]} frames is not a "
                              "CLIP image tower (a one-frame (W, 3, 1, P, P) or (W, 3, P, P) conv is)")
    return {**sd, key: w.squeeze(2)}


def _to_timm(sd: dict[str, torch.Tensor], openai: bool, vit: nn.Module):
    """``(timm state dict without head, proj)`` of an OpenAI or timm-layout state dict."""
    if openai:
        proj = sd["proj"]
        sd = timm.models.vision_transformer._convert_openai_clip(sd, vit, prefix="")
        del sd["head.weight"], sd["head.bias"]   # that is proj (transposed): kept as our own parameter instead
        return sd, proj
    sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
    bias, pe = sd.get("patch_embed.proj.bias"), sd["pos_embed"]
    if bias is not None and pe.dim() == 3 and pe.shape[-1] == bias.numel():
        # a conv bias is a constant added to every patch token, just like the patch rows of pos_embed
        sd["pos_embed"] = torch.cat([pe[:, :1], pe[:, 1:] + bias.to(pe.dtype)], dim=1)
        del sd["patch_embed.proj.bias"]
    return sd, torch.eye(pe.shape[-1])


def load_clip_teacher(path: str | os.PathLike, map_location="cpu", heads: int | None = None) -> CLIPTeacher:
    """A :class:`CLIPTeacher` from an OpenAI (extracted or whole) CLIP or timm CLIP ViT file.

    ``heads`` overrides width // 64. Anything but exactly one visual tower (a key missing or left over, a
    shape that does not fit) raises :class:`~videomamba.checkpoint.CheckpointError` naming the file.
    ``teacher.source_format`` says which layout was read.
    """
    path = Path(path)
    sd, container = _read(path, map_location)
    teacher = teacher_from_state_dict(sd, path, heads)
    if container is not None:
        teacher.source_format = f"{teacher.source_format} in '{container}'"
    return teacher


def teacher_from_state_dict(sd: Mapping[str, torch.Tensor], source: str | os.PathLike = "<state dict>",
                            heads: int | None = None) -> CLIPTeacher:
    """:func:`load_clip_teacher` for a state dict already in memory (e.g. the ``clip_teacher.*`` part of an
    official video-text checkpoint, prefix stripped); ``source`` names it in errors."""
    layout = _layout(sd)
    if layout is None:
        keys = sorted(sd, key=_natural)
        raise CheckpointError(source, "no CLIP visual tower (OpenAI or timm layout) found: it holds "
                              f"{len(keys)} tensors ({', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''})")
    if layout == "openai-clip":   # the visual tower; the text tower is not needed
        sd = {k[len("visual."):]: v for k, v in sd.items() if k.startswith("visual.")}
    openai = layout != "timm-vit"
    sd = _patch_conv_2d(sd, "conv1.weight" if openai else "patch_embed.proj.weight", source)
    arch = _architecture(source, sd, openai)
    try:
        vit = build_clip_vit(**arch, heads=heads)
    except (AssertionError, ValueError) as err:   # e.g. a width that the heads do not divide
        raise CheckpointError(source, f"cannot build a CLIP ViT of width {arch['width']} ({err})") from err

    # strict, in the file's own names: every tensor of the tower and nothing else (a timm head and
    # patch bias are handled by _to_timm)
    expected = set(vit.state_dict())
    expected = {_openai_name(k) for k in expected} | {"proj"} if openai else expected | {"patch_embed.proj.bias"}
    have = set(sd) if openai else {k for k in sd if not k.startswith("head.")} | {"patch_embed.proj.bias"}
    if expected != have:
        raise _missing(source, _WHAT[openai], expected - have, have - expected)
    tsd, proj = _to_timm(dict(sd), openai, vit)
    if proj.dim() != 2 or proj.shape[0] != arch["width"]:
        raise CheckpointError(source, f"proj is {tuple(proj.shape)}, expected ({arch['width']}, out_dim)")
    try:
        vit.load_state_dict(tsd, strict=True)
    except RuntimeError as err:   # a shape that does not fit (the keys were checked above)
        msg = " ".join(str(err).split())
        raise CheckpointError(source, f"shapes do not fit one CLIP ViT ({msg[:300]})") from err
    teacher = CLIPTeacher(vit, proj)
    teacher.source_format = layout
    return teacher


def _openai_state_dict(teacher: CLIPTeacher) -> dict[str, torch.Tensor]:
    """The teacher's weights in the extracted OpenAI visual layout (what ``extract.ipynb`` writes)."""
    sd = {}
    for k, v in teacher.vit.state_dict().items():
        if k in ("cls_token", "pos_embed"):
            v = v.reshape(v.shape[-2:]) if k == "pos_embed" else v.reshape(-1)
        sd[_openai_name(k)] = v.detach().cpu().contiguous()
    sd["proj"] = teacher.proj.detach().cpu().contiguous()
    return sd


def convert_clip(src: str | os.PathLike | CLIPTeacher, dst: str | os.PathLike) -> Path:
    """Write ``src`` (any file :func:`load_clip_teacher` takes, or a loaded teacher) in the extracted OpenAI
    visual layout, atomically: a torch ``.pth`` flat dict of tensors (``.safetensors`` if ``dst`` ends so).
    A timm-layout source gets the identity ``proj`` and its patch bias folded into ``positional_embedding``,
    so the file has exactly OpenAI's keys and loads into the official code too."""
    teacher = src if isinstance(src, CLIPTeacher) else load_clip_teacher(src)
    sd, dst = _openai_state_dict(teacher), Path(dst)
    if dst.suffix == ".safetensors":
        return save_checkpoint(sd, dst)
    atomic_write(dst, lambda tmp: torch.save(sd, tmp))
    return dst
