"""Mask decoder: runs the two-way transformer and turns the mask token plus the upscaled
target-view features into low-resolution mask logits (4x the feature grid)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .common import MLP, LayerNorm2d
from .two_way_transformer import TwoWayTransformer, chunked_path, row_chunks, unpatchify


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
        weights = self.output_hypernetworks_mlps[0](hs[:, 0, :])  # [B, C/8]
        if chunked_path(keys, self.output_upscaling[0].weight):
            return self._logits_chunked(tar, weights)
        up = self.upscale(tar)  # [B, 4h, 4w, C/8]
        _, hu, wu, cu = up.shape
        logits = torch.bmm(up.reshape(b, hu * wu, cu), weights.unsqueeze(-1))
        return logits.view(b, 1, hu, wu)

    def _logits_chunked(self, tar: Tensor, weights: Tensor) -> Tensor:
        """The logits a few feature rows at a time (the upscaling acts on each feature cell
        alone, so rows of cells give rows of logits): no full-size upscaled map is made."""
        b, h, w, _ = tar.shape
        cu = weights.shape[-1]
        out = tar.new_empty(b, 1, 4 * h, 4 * w)
        # the widest tensor of a row: 4 output rows x 4w x 2 C/8 channels (the first deconv's)
        for i0, i1 in row_chunks(h, b * 4 * 4 * w * 2 * cu * tar.element_size()):
            up = self.upscale(tar[:, i0:i1])
            rows = torch.bmm(up.reshape(b, -1, cu), weights.unsqueeze(-1))
            out[:, 0, 4 * i0:4 * i1] = rows.view(b, 4 * (i1 - i0), 4 * w)
        return out

    def upscale(self, grid: Tensor) -> Tensor:
        """``output_upscaling`` on a channels-last map ``[B, h, w, C]`` -> ``[B, 4h, 4w, C/8]``."""
        deconv1, norm, act1, deconv2, act2 = self.output_upscaling
        x = unpatchify(deconv1, grid)
        x = act1(F.layer_norm(x, (x.shape[-1],), norm.weight, norm.bias, norm.eps))
        return act2(unpatchify(deconv2, x))
