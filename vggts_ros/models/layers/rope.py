"""2D rotary position embedding (RoPE) for patch tokens laid out on a grid.

The head dimension is split in two halves: the first half is rotated by the token's
row index, the second by its column index. Inside each half the classic "rotate half"
formulation is used with frequencies ``base ** (-2k / d)``.
"""

from __future__ import annotations

from typing import List, Tuple

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

    Holds no parameters or buffers, so it never appears in a state dict. The cosine and
    sine tables of the last few ``positions`` tensors are kept (every block of a pass
    rotates with the same frame or global one; a tensor changed in place is recomputed), and the rotation is two products and a sum over the features
    (with the partner of each feature read from a flipped view): the same values, product
    for product, as rotating each axis half with "rotate half" and concatenating.
    """

    def __init__(self, frequency: float = 100.0) -> None:
        super().__init__()
        self.frequency = float(frequency)
        # (positions, (head_dim, dtype, version), cos, signed sin) of the last few positions tensors
        # (a pass alternates its frame and global ones); the tensor is held, so its id is its own
        self._tables: List[tuple] = []

    def _axis_angles(self, coord: torch.Tensor, d: int) -> torch.Tensor:
        """Angles ``[B, N, d/2]`` (float32) of one axis for ``d`` features of that axis."""
        inv_freq = 1.0 / (self.frequency ** (torch.arange(0, d, 2, device=coord.device, dtype=torch.float32) / d))
        return coord.to(torch.float32)[..., None] * inv_freq

    def tables(self, positions: torch.Tensor, head_dim: int, dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor]:
        """``cos`` ``[B, 1, N, 2, 1, head_dim/4]`` and the signed ``sin``
        ``[B, 1, N, 2, 2, head_dim/4]`` (``-sin`` for the first half of each axis, ``+sin``
        for the second) of ``positions`` (axis 0: rows, 1: columns)."""
        version = None if positions.is_inference() else positions._version  # in-place changes
        key = (head_dim, dtype, version)
        for hit in self._tables:
            if hit[0] is positions and hit[1] == key:
                return hit[2], hit[3]
        d = head_dim // 2
        angles = torch.stack([self._axis_angles(positions[..., a], d) for a in (0, 1)], dim=2).to(dtype)
        cos, sin = angles.cos(), angles.sin()  # [B, N, 2, q]
        cos = cos[:, None, :, :, None, :]
        sin = torch.stack((-sin, sin), dim=3)[:, None]
        self._tables = [(positions, key, cos, sin)] + self._tables[:3]
        return cos, sin

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 4:
            raise ValueError(f"2D RoPE needs a head dimension divisible by 4, got {x.shape[-1]}")
        if positions.dim() != 3 or positions.shape[-1] != 2:
            raise ValueError(f"positions must be [B, N, 2], got {tuple(positions.shape)}")
        b, h, n, d = x.shape
        cos, sin = self.tables(positions, d, x.dtype)
        halves = x.reshape(b, h, n, 2, 2, d // 4)  # [.., axis, half, q]
        return (halves * cos + halves.flip(-2) * sin).reshape(b, h, n, d)
