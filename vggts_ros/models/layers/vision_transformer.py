"""DINOv2 vision transformer with register tokens, as VGGT uses it for patch embedding.

Only the parts inference needs are implemented: patch projection, learned position table
(interpolated for other input sizes), class and register tokens, the blocks and the final
norm. The state-dict layout matches the published checkpoints (``cls_token``, ``pos_embed``,
``register_tokens``, ``mask_token``, ``patch_embed.proj``, ``blocks.N``, ``norm``).
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .block import Block
from .patch_embed import PatchEmbed

# name -> (width, depth, heads). VGGT builds every variant with a plain GELU MLP of ratio 4.
DINOV2_VARIANTS: Dict[str, Tuple[int, int, int]] = {
    "dinov2_vits14_reg": (384, 12, 6),
    "dinov2_vitb14_reg": (768, 12, 12),
    "dinov2_vitl14_reg": (1024, 24, 16),
    "dinov2_vitg2_reg": (1536, 40, 24),
}


class DinoVisionTransformer(nn.Module):
    """ViT encoder returning the final-normed patch tokens ``[N, P, D]``.

    ``interpolate_antialias``/``interpolate_offset`` reproduce how the position table is
    resized for inputs of another size (VGGT uses antialiased bicubic and no offset).
    """

    def __init__(
        self,
        img_size: int = 518,
        patch_size: int = 14,
        embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        num_register_tokens: int = 4,
        init_values: Optional[float] = 1.0,
        interpolate_antialias: bool = True,
        interpolate_offset: float = 0.0,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.num_register_tokens = num_register_tokens
        self.interpolate_antialias = interpolate_antialias
        self.interpolate_offset = interpolate_offset

        self.patch_embed = PatchEmbed(img_size, patch_size, 3, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.patch_embed.num_patches, embed_dim))
        self.register_tokens = (
            nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim)) if num_register_tokens else None
        )
        self.blocks = nn.ModuleList(
            [
                Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, init_values=init_values, norm_eps=1e-6, onednn=True)
                for _ in range(depth)
            ]
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        # Only used for masked pre-training; kept so checkpoints load with strict key matching.
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))

    def position_table(self, rows: int, cols: int) -> torch.Tensor:
        """Position embedding (class entry first) for a ``rows x cols`` patch grid.

        The stored table is square; for any other grid (or a non-square image with the same
        patch count) it is resized with bicubic interpolation in float32, as DINOv2 does.
        """
        table = self.pos_embed
        n_stored = table.shape[1] - 1
        if rows * cols == n_stored and rows == cols:
            return table
        side = int(math.sqrt(n_stored))
        if side * side != n_stored:
            raise ValueError(f"stored position table of {n_stored} patches is not square")
        grid = table[:, 1:].float().reshape(1, side, side, -1).permute(0, 3, 1, 2)
        if self.interpolate_offset:
            scale = ((rows + self.interpolate_offset) / side, (cols + self.interpolate_offset) / side)
            grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", antialias=self.interpolate_antialias)
        else:
            grid = F.interpolate(grid, size=(rows, cols), mode="bicubic", antialias=self.interpolate_antialias)
        if grid.shape[-2:] != (rows, cols):
            raise RuntimeError(f"position interpolation produced {tuple(grid.shape[-2:])}, wanted {(rows, cols)}")
        grid = grid.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)
        return torch.cat((table[:, :1].float(), grid), dim=1).to(table.dtype)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        n, _, h, w = images.shape
        x = self.patch_embed(images)
        x = torch.cat((self.cls_token.expand(n, -1, -1).to(x.dtype), x), dim=1)
        x = x + self.position_table(h // self.patch_size, w // self.patch_size)
        if self.register_tokens is not None:
            regs = self.register_tokens.expand(n, -1, -1).to(x.dtype)
            x = torch.cat((x[:, :1], regs, x[:, 1:]), dim=1)
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        return x[:, 1 + self.num_register_tokens :]


def build_dinov2(
    name: str,
    img_size: int,
    patch_size: int,
    num_register_tokens: int,
    depth: Optional[int] = None,
    mlp_ratio: float = 4.0,
) -> DinoVisionTransformer:
    """Build one of the named DINOv2-with-registers variants, optionally keeping only the
    first ``depth`` blocks (the keys of the kept blocks are unchanged)."""
    if name not in DINOV2_VARIANTS:
        raise ValueError(f"unknown patch embed {name!r}; expected 'conv' or one of {sorted(DINOV2_VARIANTS)}")
    width, full_depth, heads = DINOV2_VARIANTS[name]
    if depth is not None and not 0 <= depth <= full_depth:
        raise ValueError(f"patch_embed_depth must be in [0, {full_depth}] for {name}, got {depth}")
    return DinoVisionTransformer(
        img_size=img_size,
        patch_size=patch_size,
        embed_dim=width,
        depth=full_depth if depth is None else depth,
        num_heads=heads,
        mlp_ratio=mlp_ratio,
        num_register_tokens=num_register_tokens,
        init_values=1.0,
        interpolate_antialias=True,
        interpolate_offset=0.0,
    )
