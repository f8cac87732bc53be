"""Mask decoder: runs the two-way transformer and turns the mask token plus the upscaled
target-view features into low-resolution mask logits (4x the feature grid)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .common import MLP, LayerNorm2d
from .two_way_transformer import TwoWayTransformer, unpatchify


class MaskDecoder(nn.Module):
    def __init__(self, dim: int, transformer: TwoWayTransformer) -> None:
        super().__init__()
        self.transformer = transformer
        self.mask_tokens = nn.Embedding(1, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList([MLP(dim, dim, dim // 8, num_layers=3)])

    def prepend_mask_token(self, point_tokens: Tensor) -> Tensor:
        """``[B, M, C]`` -> ``[B, 1 + M, C]`` with the learned mask token first."""
        token = self.mask_tokens.weight.unsqueeze(0).expand(point_tokens.shape[0], -1, -1)
        return torch.cat([token, point_tokens], dim=1)

    def forward(
        self,
        tokens: Tensor,
        src_map: Tensor,
        tar_map: Tensor,
        ca_pe: Tensor,
        sa_pe: Tensor,
        src_down0: Optional[Tensor] = None,
    ) -> Tensor:
        """``tokens`` already start with the mask token. Returns ``[B, 1, 4g, 4g]`` logits."""
        hs, keys = self.transformer(tokens, src_map, tar_map, ca_pe, sa_pe, src_down0)
        b, c, h, w = tar_map.shape
        tar = keys.reshape(b, h, 2 * w, c)[:, :, w:]
        up = self.upscale(tar)  # [B, 4h, 4w, C/8]
        weights = self.output_hypernetworks_mlps[0](hs[:, 0, :])  # [B, C/8]
        _, hu, wu, cu = up.shape
        logits = torch.bmm(up.reshape(b, hu * wu, cu), weights.unsqueeze(-1))
        return logits.view(b, 1, hu, wu)

    def upscale(self, grid: Tensor) -> Tensor:
        """``output_upscaling`` on a channels-last map ``[B, h, w, C]`` -> ``[B, 4h, 4w, C/8]``."""
        deconv1, norm, act1, deconv2, act2 = self.output_upscaling
        x = unpatchify(deconv1, grid)
        x = act1(F.layer_norm(x, (x.shape[-1],), norm.weight, norm.bias, norm.eps))
        return act2(unpatchify(deconv2, x))
