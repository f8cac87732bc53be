"""Non-overlapping patch embedding: one strided convolution, then flatten to tokens."""

from __future__ import annotations

import torch
from torch import nn


class PatchEmbed(nn.Module):
    """Image ``[N, C, H, W]`` -> tokens ``[N, (H/p)*(W/p), D]`` in row-major patch order.

    ``img_size`` only fixes ``num_patches`` (used to size a learned position table);
    any input whose sides are multiples of the patch size is accepted.
    """

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768) -> None:
        super().__init__()
        self.patch_size = int(patch_size)
        self.img_size = int(img_size)
        self.grid = self.img_size // self.patch_size
        self.num_patches = self.grid * self.grid
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {p}")
        return self.proj(x).flatten(2).transpose(1, 2)
