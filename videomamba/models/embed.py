"""Patch embeddings: Conv2d for images, Conv3d with a (tubelet, p, p) kernel for videos."""
from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import to_2tuple


class PatchEmbed2d(nn.Module):
    """``(B, C, H, W) -> (B, D, H/p, W/p)``; the input size must equal ``img_size``."""

    def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=192, stride=None):
        super().__init__()
        self.img_size = to_2tuple(img_size)
        self.patch_size = to_2tuple(patch_size)
        stride = self.patch_size if stride is None else to_2tuple(stride)
        self.grid_size = tuple((s - p) // st + 1 for s, p, st in zip(self.img_size, self.patch_size, stride))
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(f"image model expects input (B, C, {self.img_size[0]}, {self.img_size[1]}), "
                             f"got {tuple(x.shape)}; build the model with img_size=... to change it")
        return self.proj(x)


class PatchEmbed3d(nn.Module):
    """``(B, C, T, H, W) -> (B, D, T/t, H/p, W/p)`` with a ``(tubelet, p, p)`` Conv3d."""

    def __init__(self, img_size=224, patch_size=16, kernel_size=1, in_chans=3, embed_dim=192):
        super().__init__()
        self.img_size = to_2tuple(img_size)
        self.patch_size = to_2tuple(patch_size)
        self.tubelet_size = int(kernel_size)
        self.grid_size = (self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        k = (self.tubelet_size, *self.patch_size)
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=k, stride=k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(f"video model expects input (B, C, T, {self.img_size[0]}, {self.img_size[1]}), "
                             f"got {tuple(x.shape)}; build the model with img_size=... to change it")
        return self.proj(x)
