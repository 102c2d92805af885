"""VisionMamba: the VideoMamba backbone for images (Conv2d patches) and videos (Conv3d tubelets).

Token layout (both as in the official code):
  image  ``[cls, p_0 .. p_{HW-1}] + pos_embed``
  video  ``[cls + pos_embed[0], frame_0 (HW tokens, row-major), frame_1, ...]`` where each patch token
         gets the spatial ``pos_embed`` of its position and the ``temporal_pos_embedding`` of its frame
         (the CLS gets no temporal embedding). The scan is spatial-first / frame-major.

API follows timm: ``forward_features`` returns the normalised tokens ``(B, 1+T*HW, D)``,
``forward_head`` pools (CLS by default) and classifies, ``forward`` gives the official logits.
"""
from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn as nn
from timm.layers import DropPath, trunc_normal_

from ..modules import BiMamba, Block
from ..ops import RMSNorm, add_norm_into, norm_forward
from .config import VideoMambaConfig
from .embed import PatchEmbed2d, PatchEmbed3d
from .hooks import installed


class VisionMamba(nn.Module):
    """Bidirectional-Mamba vision backbone.

    Args mirror the official constructors (``video_sm/models/videomamba.py``): ``img_size``,
    ``patch_size``, ``depth``, ``embed_dim``, ``num_classes``, ``drop_rate`` (after the position
    embedding), ``drop_path_rate``, ``fc_drop_rate`` (before the head), ``ssm_cfg`` (extra
    :class:`BiMamba` kwargs), ``norm_epsilon``, ``rms_norm``, ``residual_in_fp32``,
    ``fused_add_norm`` (accepted; the math is the same either way), ``kernel_size`` (tubelet),
    ``use_checkpoint`` / ``checkpoint_num``. Ours: ``num_frames=None`` builds the image layout and an
    int the video layout; ``divide_output`` halves the direction sum (Vim's fix, for new training
    runs only: the official checkpoints use the plain sum); ``global_pool`` 'token' (official) or 'avg';
    ``dt_init="mamba"`` keeps Mamba's own ``dt_proj`` initialisation (bias = softplus^-1 of dt in
    [1e-3, 0.1], i.e. long memory) instead of the official override (bias 0: dt ~ 0.69, a memory of a few
    tokens); it makes from-scratch video training far faster (the embedded default uses it) and changes
    nothing for fine-tuning from a checkpoint. ``distill_dim`` adds the self-distillation projector ``distill_head = RMSNorm + Linear(D, distill_dim)``
    (the official student's key names), used by ``forward(x, return_distill=True)``.

    Lean execution (same results, less memory): ``recompute="block"`` (default) trains each block's
    norm + mixer as one autograd function that keeps only the residual stream for backward
    (:mod:`videomamba.modules.mixer_recompute`; ``"none"``: plain autograd, every intermediate kept).
    Without gradients, sequences longer than two chunks of ``inference_chunk`` tokens run the mixer in chunks
    (shorter ones whole) and update the residual stream in place (:mod:`videomamba.modules.mixer_chunked`; 0 turns chunking off);
    ``inference_memory="fast"`` keeps one ``(B, d_inner, L)`` buffer between the two scan directions,
    ``"low"`` none (each chunk's backward direction is scanned twice: about a fifth more time).
    """

    config_class = VideoMambaConfig

    def __init__(self, config: VideoMambaConfig | None = None, *, device=None, dtype=None, **kwargs):
        """``VisionMamba(config)`` or ``VisionMamba(**kwargs)`` (the config's fields, see the class doc), or
        both: ``kwargs`` override the config's fields. The result is ``self.config``, built once."""
        super().__init__()
        self.config = c = self.config_class.build(config, **kwargs)
        self.num_classes = c.num_classes
        self.embed_dim = self.num_features = self.head_hidden_size = c.embed_dim
        self.depth = c.depth
        self.residual_in_fp32 = c.residual_in_fp32
        self.fused_add_norm = c.fused_add_norm
        self.global_pool = c.global_pool
        self.num_frames = c.num_frames
        self.is_video = c.num_frames is not None
        self.grad_checkpointing = False

        if self.is_video:
            if c.stride is not None:
                raise ValueError("VisionMamba: stride is only supported by the image layout")
            self.patch_embed = PatchEmbed3d(c.img_size, c.patch_size, c.kernel_size, c.in_chans, c.embed_dim)
            self.tubelet_size = self.patch_embed.tubelet_size
            if c.num_frames % self.tubelet_size:
                raise ValueError(f"VisionMamba: num_frames={c.num_frames} is not a multiple of the "
                                 f"tubelet size kernel_size={c.kernel_size}")
        else:
            self.patch_embed = PatchEmbed2d(c.img_size, c.patch_size, c.in_chans, c.embed_dim, stride=c.stride)
            self.tubelet_size = 1
        num_patches = self.patch_embed.num_patches

        # Parameters are registered in the official state_dict order.
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, c.embed_dim))
        if self.is_video:
            self.temporal_pos_embedding = nn.Parameter(
                torch.zeros(1, c.num_frames // self.tubelet_size, c.embed_dim))
        self.pos_drop = nn.Dropout(p=c.drop_rate)
        self.head_drop = nn.Dropout(c.fc_drop_rate) if c.fc_drop_rate > 0 else nn.Identity()
        self.head = nn.Linear(c.embed_dim, c.num_classes) if c.num_classes > 0 else nn.Identity()

        dpr = [x.item() for x in torch.linspace(0, c.drop_path_rate, c.depth, device="cpu")]
        inter_dpr = [0.0] + dpr  # block i drops the output of block i-1 (official one-step shift)
        make_norm = (partial(RMSNorm, eps=c.norm_epsilon) if c.rms_norm
                     else partial(nn.LayerNorm, eps=c.norm_epsilon))
        self.layers = nn.ModuleList([
            Block(c.embed_dim, BiMamba(c.embed_dim, layer_idx=i, divide_output=c.divide_output, **(c.ssm_cfg or {})),
                  make_norm(c.embed_dim), drop_path=inter_dpr[i], residual_in_fp32=c.residual_in_fp32)
            for i in range(c.depth)])
        self.drop_path = DropPath(c.drop_path_rate) if c.drop_path_rate > 0 else nn.Identity()
        self.norm_f = make_norm(c.embed_dim)
        # Self-distillation projector on every final token (training only; plain loads skip its keys).
        self.distill_head = (nn.Sequential(make_norm(c.embed_dim), nn.Linear(c.embed_dim, c.distill_dim))
                             if c.distill_dim else None)

        self.set_checkpoint_layers(c.checkpoint_num if c.use_checkpoint else 0)
        self.set_recompute(c.recompute)
        self.set_inference_chunk(c.inference_chunk)
        from ..modules.mixer_chunked import INFERENCE_MEMORY

        if c.inference_memory not in INFERENCE_MEMORY:
            raise ValueError(f"VisionMamba: inference_memory must be one of {INFERENCE_MEMORY}, "
                             f"got {c.inference_memory!r}")
        self.inference_memory = c.inference_memory
        if c.dt_init not in ("official", "mamba"):
            raise ValueError(f"VisionMamba: dt_init must be 'official' or 'mamba', got {c.dt_init!r}")
        kept = ({k: v.detach().clone() for k, v in self.named_parameters() if ".dt_proj" in k}
                if c.dt_init == "mamba" else {})
        self._init_official_weights(**(c.initializer_cfg or {}))
        if kept:   # undo segm_init's override of dt_proj (weight and bias) for the Mamba init
            with torch.no_grad():
                for k, p in self.named_parameters():
                    if k in kept:
                        p.copy_(kept[k])
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    # ------------------------------------------------------------------ init
    def _init_official_weights(self, rescale_prenorm_residual: bool = True, n_residuals_per_layer: int = 1,
                               initializer_range: float = 0.02):
        """The official order: Mamba's own init, then segm_init over every Linear (which overrides
        dt_proj: weight TN(.02), bias 0), trunc-normal pos_embed, zero cls/temporal pos, then
        out_proj.weight = kaiming_uniform(a=sqrt 5) / sqrt(n_residuals_per_layer * depth).
        ``initializer_cfg`` of the official constructor maps onto the keyword arguments."""
        self.apply(_segm_init_weights)
        self.head.apply(_segm_init_weights)
        trunc_normal_(self.pos_embed, std=0.02)
        if not rescale_prenorm_residual:
            return
        for layer in self.layers:
            w = layer.mixer.out_proj.weight
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))
            with torch.no_grad():
                w /= math.sqrt(n_residuals_per_layer * self.depth)

    # ------------------------------------------------------------------ timm-style API
    def set_checkpoint_layers(self, num_layers: int):
        """Recompute the mixer of the first ``num_layers`` blocks in backward (the norm is not wrapped)."""
        self.checkpoint_num = int(num_layers)
        self.config.use_checkpoint, self.config.checkpoint_num = self.checkpoint_num > 0, self.checkpoint_num
        for i, layer in enumerate(self.layers):
            layer.use_checkpoint = i < self.checkpoint_num

    def set_recompute(self, mode: str):
        """``"block"``: keep only the residual stream for backward and recompute norm + mixer there;
        ``"none"``: plain autograd. Blocks under :meth:`set_checkpoint_layers` use torch's checkpoint."""
        from ..modules.mixer_recompute import RECOMPUTE_MODES

        if mode not in RECOMPUTE_MODES:
            raise ValueError(f"VisionMamba: recompute must be one of {RECOMPUTE_MODES}, got {mode!r}")
        self.recompute = self.config.recompute = mode
        for layer in self.layers:
            layer.recompute = mode

    @property
    def inference_workspace(self):
        """The buffers the no-grad forward reuses across blocks and calls (:class:`videomamba.modules.Workspace`;
        ``.clear()`` frees them, e.g. after a long clip). Not saved, copied or pickled with the model."""
        ws = self.__dict__.get("_inference_workspace")
        if ws is None:
            from ..modules.workspace import Workspace

            ws = self.__dict__["_inference_workspace"] = Workspace()
        return ws

    def __getstate__(self):
        state = super().__getstate__()
        state = dict(state)
        state.pop("_inference_workspace", None)
        state.pop("_fused_pairs_cache", None)   # (ctypes pointers: a copy packs anew)
        return state

    def set_inference_chunk(self, tokens: int):
        """Tokens per chunk of the no-gradient path (0: never chunk)."""
        if int(tokens) < 0:
            raise ValueError(f"VisionMamba: inference_chunk must be >= 0, got {tokens}")
        self.inference_chunk = self.config.inference_chunk = int(tokens)
        for layer in self.layers:
            layer.mixer.inference_chunk = self.inference_chunk

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True):
        self.grad_checkpointing = enable
        self.set_checkpoint_layers(self.depth if enable else 0)

    @torch.jit.ignore
    def no_weight_decay(self):
        names = {"pos_embed", "cls_token"}
        if self.is_video:
            names.add("temporal_pos_embedding")
        return names

    def get_num_layers(self) -> int:
        return self.depth

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None):
        self.num_classes = self.config.num_classes = num_classes
        if global_pool is not None:
            if global_pool not in ("token", "avg"):
                raise ValueError(f"global_pool must be 'token' or 'avg', got {global_pool!r}")
            self.global_pool = self.config.global_pool = global_pool
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            self.head.apply(_segm_init_weights)

    # ------------------------------------------------------------------ forward
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels -> token sequence ``(B, 1 + T*HW, D)`` with position embeddings added."""
        if self.is_video and self._lean_inference(x):
            return self._embed_video_lean(x)
        x = self.patch_embed(x)
        if not self.is_video:
            x = x.flatten(2).transpose(1, 2)                                 # (B, HW, D)
            cls = self.cls_token.expand(x.shape[0], -1, -1)
            return torch.cat((cls, x), dim=1) + self.pos_embed
        B, D, T, H, W = x.shape
        t_pos = self.temporal_pos_embedding
        self._check_time_steps(T)
        x = x.permute(0, 2, 3, 4, 1).reshape(B, T, H * W, D)
        x = x + self.pos_embed[:, None, 1:]                                  # spatial, shared by frames
        x = x + t_pos[:, :, None]                                            # temporal, per frame
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(B, -1, -1)
        return torch.cat((cls, x.reshape(B, T * H * W, D)), dim=1)

    def _check_time_steps(self, T: int):
        """The clip must have as many tubelets as the model has temporal positions."""
        n = self.temporal_pos_embedding.shape[1]
        if T != n:
            raise ValueError(
                f"video model was built for num_frames={self.num_frames} ({n} temporal positions) but got "
                f"{T * self.tubelet_size} frames; build it with num_frames={T * self.tubelet_size} "
                f"(load_checkpoint resizes the temporal position embedding)")

    @torch.no_grad()
    def _embed_video_lean(self, x: torch.Tensor, frames_per_step: int = 4) -> torch.Tensor:
        """:meth:`embed` for videos a few frames at a time into the token tensor, so no full-size
        intermediate (conv output, permuted copy, each position-embedding sum) is ever alive."""
        if x.dim() != 5 or tuple(x.shape[-2:]) != self.patch_embed.img_size:
            return self.patch_embed(x)   # raises the shape error
        ts = self.tubelet_size
        if x.shape[2] % ts:
            raise ValueError(f"video of {x.shape[2]} frames is not a multiple of the tubelet size {ts}")
        B, T = x.shape[0], x.shape[2] // ts
        self._check_time_steps(T)
        t_pos = self.temporal_pos_embedding
        HW, D = self.patch_embed.num_patches, self.embed_dim
        tokens = patches = None
        for t0 in range(0, T, frames_per_step):
            t1 = min(t0 + frames_per_step, T)
            out = self.patch_embed.proj(x[:, :, t0 * ts:t1 * ts])                  # (B, D, t, H, W)
            if tokens is None:   # the dtype embed() gives: conv output + position embeddings
                dtype = torch.promote_types(out.dtype, self.pos_embed.dtype)
                tokens = torch.empty(B, 1 + T * HW, D, device=x.device, dtype=dtype)
                tokens[:, 0] = (self.cls_token + self.pos_embed[:, :1])[:, 0]
                patches = tokens[:, 1:].view(B, T, HW, D)
            view = patches[:, t0:t1]
            view.copy_(out.permute(0, 2, 3, 4, 1).reshape(B, t1 - t0, HW, D))
            view += self.pos_embed[:, None, 1:]                                     # the order of embed()
            view += t_pos[:, t0:t1, None]
            del out
        return tokens

    def forward_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """Run the Mamba blocks on embedded tokens and apply the final add + norm."""
        if self._lean_inference(x):
            return self._forward_blocks_lean(x.clone())
        return self._forward_blocks(x)

    def _lean_inference(self, x: torch.Tensor) -> bool:
        """No gradients, nothing tracing, no active drop path, chunking on: the residual stream can be updated
        in place, one block after another, with the mixers chunked along L."""
        from ..modules.mixer_chunked import _eager

        return (not torch.is_grad_enabled() and self.inference_chunk > 0 and _eager(x)
                and not (self.training and any(not isinstance(b.drop_path, nn.Identity) for b in self.layers))
                and not (self.training and not isinstance(self.drop_path, nn.Identity))
                and not self._blocks_hooked())

    def _blocks_hooked(self) -> bool:
        """Forward hooks on a block, its mixer or norm (feature extraction, FLOP counting) must fire: the lean
        loop does not call those modules, so it steps aside for them."""
        from torch.nn.modules import module as nn_module

        if nn_module._global_forward_hooks or nn_module._global_forward_pre_hooks:
            return True
        return any(m._forward_hooks or m._forward_pre_hooks
                   for layer in self.layers for m in (layer, layer.mixer, layer.norm))

    def _forward_blocks_lean(self, x: torch.Tensor) -> torch.Tensor:
        """``residual += mixer(norm(residual))`` per block, in place (``x`` is consumed): the official
        ``hidden + residual`` sums in the same order of blocks, without a second stream. Beyond the stream, the
        mixers' buffers come from :attr:`inference_workspace` (the backward direction's output and one chunk's
        tensors in chunks; the whole sequence's otherwise), allocated once and reused by every block."""
        from ..modules.mixer_chunked import (fused_call_conditions, fused_pairs, mixer_chunked, mixer_whole,
                                             runs_in_chunks)

        dtype = x.dtype
        residual = x.float() if self.residual_in_fp32 and x.dtype != torch.float64 else x
        B, L, _ = residual.shape
        ws = self.inference_workspace
        pending = None   # a whole-sequence block's output, added to the stream by the next block's norm pass
        conditions = fused_call_conditions(residual, dtype)   # (what the packed parameters depend on)
        pairs = fused_pairs(self, [layer.mixer for layer in self.layers],
                            torch.empty(0, dtype=dtype, device=residual.device), conditions)
        for layer, pair in zip(self.layers, pairs):
            mixer = layer.mixer
            if runs_in_chunks(mixer.inference_chunk, L):
                if pending is not None:
                    residual += pending
                    pending = None
                mixer_chunked(mixer, residual, out=residual, norm=layer.norm, accumulate=True,
                              hidden_dtype=dtype, memory=self.inference_memory, workspace=ws)
                continue
            if residual.dtype == dtype:   # residual += pending; h = norm(residual), in one pass where it can
                h = add_norm_into(layer.norm, residual, pending, ws.take("h", residual.shape, dtype, residual.device))
            else:
                if pending is not None:
                    residual += pending
                h = norm_forward(layer.norm, residual, None, prenorm=False).to(dtype)
            pending = mixer_whole(mixer, h, ws, out=h, pair=pair)   # (h is dead once projected)
            del h
        if pending is not None:
            residual += pending
        del pending
        # The final norm chunk by chunk, in place where the dtypes allow: a whole-sequence norm would hold two
        # more stream-sized temporaries, the peak of the whole forward at long clips.
        out = residual if residual.dtype == dtype else torch.empty_like(residual, dtype=dtype)
        step = max(self.inference_chunk, 1)
        for s in range(0, L, step):
            out[:, s:s + step] = norm_forward(self.norm_f, residual[:, s:s + step], None, prenorm=False).to(dtype)
        return out

    def _forward_blocks(self, x: torch.Tensor) -> torch.Tensor:
        hidden, residual = x, None
        consume = torch.is_grad_enabled() and not self._blocks_hooked()   # (a hook may keep a block's output)
        for layer in self.layers:
            hidden, residual = layer(hidden, residual, consume_input=consume)
        return norm_forward(self.norm_f, self.drop_path(hidden), residual, prenorm=False,
                            residual_in_fp32=self.residual_in_fp32)

    # ------------------------------------------------------------------ model folder
    def save_pretrained(self, directory, label_names=None, preprocessing=None, source=None):
        """Write a model folder (``config.json`` + ``model.safetensors``): see
        :mod:`videomamba.checkpoint.model_folder`."""
        return installed("save_pretrained")(self, directory, label_names=label_names, preprocessing=preprocessing, source=source)

    @classmethod
    def from_pretrained(cls, directory, device=None, **kwargs) -> "VisionMamba":
        """Build and load a model folder (:func:`videomamba.checkpoint.model_folder.from_pretrained`)."""
        return installed("from_pretrained")(directory, device=device, **kwargs)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B,3,H,W)`` or ``(B,3,T,H,W)`` -> normalised tokens ``(B, 1 + T*HW, D)``, CLS first."""
        tokens = self.pos_drop(self.embed(x))
        if self._lean_inference(tokens):
            return self._forward_blocks_lean(tokens)   # the embedding is ours to update in place
        return self._forward_blocks(tokens)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x[:, 0] if self.global_pool == "token" else x[:, 1:].mean(dim=1)
        if pre_logits:
            return x
        return self.head(self.head_drop(x))

    def forward(self, x: torch.Tensor, return_distill: bool = False):
        """Logits; with ``return_distill`` also the L2-normalised projected tokens ``(B, 1+L, distill_dim)``."""
        features = self.forward_features(x)
        logits = self.forward_head(features)
        if not return_distill:
            return logits
        if self.distill_head is None:
            raise ValueError("VisionMamba: return_distill=True needs a model built with distill_dim=...")
        return logits, nn.functional.normalize(self.distill_head(features).float(), dim=-1)


def _segm_init_weights(m: nn.Module):
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.constant_(m.bias, 0)
    elif isinstance(m, nn.LayerNorm):
        nn.init.constant_(m.bias, 0)
        nn.init.constant_(m.weight, 1.0)
