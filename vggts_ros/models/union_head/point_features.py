"""Bilinear sampling of a dense feature map at pixel coordinates."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def sample_point_features(feat: Tensor, points: Tensor, img_hw: Sequence[int]) -> Tensor:
    """Features of ``feat`` ``[B, C, h, w]`` at ``points`` ``[B, N, 2]`` (x, y).

    Points are pixels of an image of size ``img_hw = (H, W)`` whose corners map onto the
    corner cells of the feature map (``align_corners=True``); points outside are clamped
    to the border. Returns ``[B, N, C]`` in float64 for float64 features, else float32.
    """
    img_h, img_w = int(img_hw[0]), int(img_hw[1])
    dtype = torch.float64 if feat.dtype == torch.float64 else torch.float32
    pts = points.to(device=feat.device, dtype=dtype)
    gx = (2 * pts[..., 0] / (img_w - 1) - 1).clamp(-1, 1)
    gy = (2 * pts[..., 1] / (img_h - 1) - 1).clamp(-1, 1)
    grid = torch.stack([gx, gy], dim=-1).unsqueeze(2)  # [B, N, 1, 2]
    out = F.grid_sample(feat.to(dtype), grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out[..., 0].transpose(1, 2)
