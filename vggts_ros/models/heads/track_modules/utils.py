"""Sampling and sinusoidal-embedding helpers of the point tracker."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sincos_table(positions: torch.Tensor, dim: int, base: float = 10000.0) -> torch.Tensor:
    """``[M] -> [M, dim]``: ``sin`` then ``cos`` of ``pos / base**(2k/dim)`` evaluated in float64."""
    k = torch.arange(dim // 2, dtype=torch.float64, device=positions.device) / (dim / 2.0)
    angles = positions.reshape(-1).to(torch.float64)[:, None] * (1.0 / base**k)[None]
    return torch.cat((angles.sin(), angles.cos()), dim=1).float()


def _lerp_rows(table: torch.Tensor, coord: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of ``table`` rows at fractional indices, clamped to the valid range."""
    n = table.shape[0]
    c = coord.clamp(0, n - 1)
    i0 = c.floor().long().clamp(max=n - 1)
    i1 = (i0 + 1).clamp(max=n - 1)
    t = (c - i0.to(c.dtype)).unsqueeze(-1)
    return table[i0] * (1 - t) + table[i1] * t


def grid_pos_embed_at(points: torch.Tensor, dim: int, height: int, width: int) -> torch.Tensor:
    """Bilinear sample (border padding) of the 2D sin-cos grid embedding at ``points`` ``[..., 2]``.

    The grid embedding spends its first ``dim/2`` channels on the column index and the rest
    on the row index, so its bilinear sample separates into two 1D interpolations; this
    avoids materialising the ``dim x height x width`` grid.
    """
    dev = points.device
    table_x = sincos_table(torch.arange(width, dtype=torch.float32, device=dev), dim // 2)
    table_y = sincos_table(torch.arange(height, dtype=torch.float32, device=dev), dim // 2)
    pts = points.float()
    return torch.cat((_lerp_rows(table_x, pts[..., 0]), _lerp_rows(table_y, pts[..., 1])), dim=-1)


def flow_embedding(xy: torch.Tensor, channels: int) -> torch.Tensor:
    """``[..., 2] -> [..., 2*channels]``: interleaved sin/cos of x then of y, frequencies ``k*1000/channels``."""
    freq = torch.arange(0, channels, 2, device=xy.device, dtype=torch.float32) * (1000.0 / channels)
    parts = []
    for axis in range(2):
        a = xy[..., axis : axis + 1].float() * freq
        parts.append(torch.stack((a.sin(), a.cos()), dim=-1).flatten(-2))
    return torch.cat(parts, dim=-1)


def to_grid_coords(xy: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pixel coordinates (x, y), 0 = first pixel centre, to ``grid_sample``'s [-1, 1] (aligned corners)."""
    scale = torch.tensor([2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)], device=xy.device, dtype=xy.dtype)
    return xy * scale - 1


def sample_points(fmap: torch.Tensor, xy: torch.Tensor, padding_mode: str = "border") -> torch.Tensor:
    """Bilinear feature lookup: ``fmap [B, C, H, W]``, ``xy [B, N, 2]`` pixels -> ``[B, N, C]``."""
    h, w = fmap.shape[-2:]
    grid = to_grid_coords(xy.detach().to(fmap.dtype), h, w).unsqueeze(2)
    out = F.grid_sample(fmap, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)
    return out.squeeze(-1).transpose(1, 2)
