"""2D rotary position embedding (RoPE) for patch tokens laid out on a grid.

The head dimension is split in two halves: the first half is rotated by the token's
row index, the second by its column index. Inside each half the classic "rotate half"
formulation is used with frequencies ``base ** (-2k / d)``.
"""

from __future__ import annotations

import torch
from torch import nn


def grid_positions(batch: int, rows: int, cols: int, device=None) -> torch.Tensor:
    """Integer (row, col) of every patch in row-major order, shape ``[batch, rows*cols, 2]``."""
    r = torch.arange(rows, device=device)
    c = torch.arange(cols, device=device)
    pos = torch.stack(torch.meshgrid(r, c, indexing="ij"), dim=-1).reshape(1, rows * cols, 2)
    return pos.expand(batch, -1, -1)


class RotaryPositionEmbedding2D(nn.Module):
    """Apply 2D RoPE to per-head features ``[B, heads, N, head_dim]`` given positions ``[B, N, 2]``.

    Holds no parameters or buffers, so it never appears in a state dict.
    """

    def __init__(self, frequency: float = 100.0) -> None:
        super().__init__()
        self.frequency = float(frequency)

    def _rotate_axis(self, x: torch.Tensor, coord: torch.Tensor) -> torch.Tensor:
        d = x.shape[-1]
        inv_freq = 1.0 / (self.frequency ** (torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d))
        angles = coord.to(torch.float32)[..., None] * inv_freq  # [B, N, d/2]
        angles = torch.cat((angles, angles), dim=-1).to(x.dtype)[:, None]  # [B, 1, N, d]
        cos, sin = angles.cos(), angles.sin()
        first, second = x[..., : d // 2], x[..., d // 2 :]
        rotated = torch.cat((-second, first), dim=-1)
        return x * cos + rotated * sin

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 4:
            raise ValueError(f"2D RoPE needs a head dimension divisible by 4, got {x.shape[-1]}")
        if positions.dim() != 3 or positions.shape[-1] != 2:
            raise ValueError(f"positions must be [B, N, 2], got {tuple(positions.shape)}")
        rows, cols = x.chunk(2, dim=-1)
        return torch.cat(
            (self._rotate_axis(rows, positions[..., 0]), self._rotate_axis(cols, positions[..., 1])), dim=-1
        )
