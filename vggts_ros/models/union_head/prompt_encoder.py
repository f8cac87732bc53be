"""Prompt encoder of the Union Segmentation Head.

Turns the point prompts (source points, their projections in the target view and the
backbone features sampled at the source points) into tokens, the source mask and the
previous target prediction into dense maps on the feature grid, and provides the dense
positional encodings of both attention scales.
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .common import LayerNorm2d, RandomFourierPE


class PromptEncoder(nn.Module):
    """Sparse and dense prompt embeddings.

    ``grid`` is the side of the backbone feature map (``img_size // 2``); the self-attention
    branch works on ``sa_tokens x sa_tokens`` maps of ``embed_dim * sa_ratio`` channels.
    """

    def __init__(
        self,
        embed_dim: int,
        img_size: int,
        sa_tokens: int,
        sa_ratio: int,
        mask_in_chans: int = 16,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.img_size = img_size
        self.sa_tokens = sa_tokens
        self.grid = img_size // 2
        # A previous low-resolution prediction is resampled to this side before encoding.
        self.mask_input_size = 2 * self.grid
        sa_dim = embed_dim * sa_ratio

        self.ca_pe_layer = RandomFourierPE(embed_dim // 2)
        self.sa_pe_layer = RandomFourierPE(sa_dim // 2)
        self.ca_src_img_pe = nn.Embedding(1, embed_dim)
        self.ca_tar_img_pe = nn.Embedding(1, embed_dim)
        self.sa_src_img_pe = nn.Embedding(1, sa_dim)
        self.sa_tar_img_pe = nn.Embedding(1, sa_dim)
        self.src_point_pe = nn.Embedding(1, embed_dim)
        self.tar_point_pe = nn.Embedding(1, embed_dim)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )

    @staticmethod
    def _pair_pe(layer: RandomFourierPE, side: int, src_id: nn.Embedding, tar_id: nn.Embedding) -> Tensor:
        base = layer.grid(side, side)  # [side, side, C]
        pair = torch.cat([base + src_id.weight.view(1, 1, -1), base + tar_id.weight.view(1, 1, -1)], dim=1)
        return pair.reshape(1, side * 2 * side, -1)

    def cross_attn_pe(self) -> Tensor:
        """Dense PE of the side-by-side (source | target) feature map as tokens
        ``[1, grid * 2 grid, C]`` (row-major)."""
        return self._pair_pe(self.ca_pe_layer, self.grid, self.ca_src_img_pe, self.ca_tar_img_pe)

    def self_attn_pe(self) -> Tensor:
        """The same for the coarse maps: ``[1, sa_tokens * 2 sa_tokens, C * ratio]``."""
        return self._pair_pe(self.sa_pe_layer, self.sa_tokens, self.sa_src_img_pe, self.sa_tar_img_pe)

    def point_tokens(self, src_points: Tensor, tar_points: Tensor, src_points_feat: Tensor) -> Tensor:
        """``[B, 3N, C]``: source-point PEs, target-point PEs, source-point features.

        Points are pixel coordinates (x, y) of the ``img_size`` square input.
        ``src_points_feat`` is not modified.
        """
        size: Tuple[int, int] = (self.img_size, self.img_size)
        src_id = self.src_point_pe.weight.view(1, 1, -1)
        src = self.ca_pe_layer.points(src_points + 0.5, size) + src_id
        tar = self.ca_pe_layer.points(tar_points + 0.5, size) + self.tar_point_pe.weight.view(1, 1, -1)
        return torch.cat([src, tar, src_points_feat + src_id], dim=1)

    def embed_mask(self, mask_logits: Tensor) -> Tensor:
        """``[B, 1, 2g, 2g]`` logits -> ``[B, C, g, g]``."""
        return self.mask_downscaling(mask_logits)

    def embed_low_res(self, low_res: Tensor) -> Tensor:
        """Encode a previous low-resolution prediction ``[B, 1, h, w]`` (any size)."""
        side = self.mask_input_size
        resized = F.interpolate(
            low_res.to(self.src_point_pe.weight.dtype), size=(side, side), mode="bilinear", align_corners=False, antialias=True
        )
        return self.mask_downscaling(resized)
