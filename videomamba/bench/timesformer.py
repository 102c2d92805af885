"""TimeSformer-Ti: the DeiT-Ti video baseline of VideoMamba's efficiency comparison (Fig. 1).

Re-implementation, in plain PyTorch, of the behaviour of the official
``video_sm/models/deit.py`` (``deit_tiny_patch16_224``):

* Conv3d patch embedding, kernel/stride ``(1, 16, 16)`` (tubelet 1), dim 192;
* CLS token; spatial position embedding ``(1, 1 + HW, D)`` (its slot 0 is added to
  the CLS token) and temporal position embedding ``(1, T, D)`` added to the patch
  tokens only;
* temporal-first token order: ``'(b t) n m -> b (n t) m'``, i.e. token
  ``1 + n * T + t`` is spatial position ``n`` of frame ``t``, CLS at index 0;
* 12 pre-norm blocks with **joint space-time attention** over all ``1 + T*HW``
  tokens, 3 heads, MLP ratio 4, qkv bias, LayerNorm eps 1e-6;
* final LayerNorm, linear head on the CLS token.

Parameter/buffer names follow the official model so its state dicts load as-is.

``attention="naive"`` materialises the ``(B, heads, L, L)`` attention matrix
(``softmax(q k^T * scale) v``), as in the paper's comparison; ``attention="sdpa"``
uses :func:`torch.nn.functional.scaled_dot_product_attention`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_

__all__ = ["TimeSformerTiny", "timesformer_tiny"]

_ATTENTION_MODES = ("naive", "sdpa")


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attention: str = "naive"):
        super().__init__()
        if attention not in _ATTENTION_MODES:
            raise ValueError(f"attention must be one of {_ATTENTION_MODES}, got {attention!r}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.attention = attention
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, heads, N, head_dim)
        if self.attention == "naive":
            attn = (q @ k.transpose(-2, -1)) * self.scale  # (B, heads, N, N)
            attn = attn.softmax(dim=-1)
            x = attn @ v
        else:
            x = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_path: float = 0.0, attention: str = "naive", eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attention=attention)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x


class PatchEmbed(nn.Module):
    def __init__(self, img_size: int = 224, patch_size: int = 16, kernel_size: int = 1,
                 in_chans: int = 3, embed_dim: int = 192):
        super().__init__()
        self.grid = img_size // patch_size
        self.num_patches = self.grid * self.grid
        self.proj = nn.Conv3d(in_chans, embed_dim,
                              kernel_size=(kernel_size, patch_size, patch_size),
                              stride=(kernel_size, patch_size, patch_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)  # (B, D, T, H', W')


class TimeSformerTiny(nn.Module):
    """DeiT-Ti with joint space-time attention ("TimeSformer-Ti"). Input ``(B, 3, T, H, W)``."""

    def __init__(self, img_size: int = 224, num_frames: int = 8, num_classes: int = 400,
                 attention: str = "naive", *, patch_size: int = 16, embed_dim: int = 192,
                 depth: int = 12, num_heads: int = 3, mlp_ratio: float = 4.0,
                 drop_path_rate: float = 0.0):
        super().__init__()
        if attention not in _ATTENTION_MODES:
            raise ValueError(f"attention must be one of {_ATTENTION_MODES}, got {attention!r}")
        self.img_size = img_size
        self.num_frames = num_frames
        self.num_classes = num_classes
        self.attention = attention
        self.num_features = self.embed_dim = embed_dim

        self.patch_embed = PatchEmbed(img_size, patch_size, 1, 3, embed_dim)
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim))
        self.temporal_pos_embedding = nn.Parameter(torch.zeros(1, num_frames, embed_dim))

        dpr = [v.item() for v in torch.linspace(0, drop_path_rate, depth)]
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, drop_path=dpr[i], attention=attention)
            for i in range(depth)
        ])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()

        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def no_weight_decay(self):
        return {"pos_embed", "cls_token", "temporal_pos_embedding"}

    def set_attention(self, attention: str) -> None:
        """Switch every block between ``"naive"`` and ``"sdpa"`` (same weights)."""
        if attention not in _ATTENTION_MODES:
            raise ValueError(f"attention must be one of {_ATTENTION_MODES}, got {attention!r}")
        self.attention = attention
        for blk in self.blocks:
            blk.attn.attention = attention

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` -> token sequence ``(B, 1 + HW*T, D)``, temporal-first.

        Index 0 is CLS; index ``1 + n * T + t`` is spatial patch ``n`` of frame ``t``.
        """
        x = self.patch_embed(x)
        B, C, T, H, W = x.shape
        x = x.permute(0, 2, 3, 4, 1).reshape(B, T, H * W, C)    # (B, T, N, D)
        x = x + self.pos_embed[:, 1:].unsqueeze(1)                # spatial pos
        x = x + self.temporal_pos_embedding[:, :T].unsqueeze(2)   # temporal pos
        x = x.transpose(1, 2).reshape(B, H * W * T, C)            # b (n t) m
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(B, -1, -1)
        return torch.cat((cls, x), dim=1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        return x[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def timesformer_tiny(**kw) -> TimeSformerTiny:
    """Factory for :class:`TimeSformerTiny` (DeiT-Ti, joint space-time attention)."""
    return TimeSformerTiny(**kw)
