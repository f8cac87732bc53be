"""2D RoPE (vggts_ros.models.layers.rope): the rotation is, bit for bit, the published
"rotate half" per axis, in float32 and float64; its cached tables follow the positions."""

from __future__ import annotations

import pytest
import torch

from vggts_ros.models.layers.rope import RotaryPositionEmbedding2D, grid_positions


def rotate_half_per_axis(x: torch.Tensor, positions: torch.Tensor, frequency: float = 100.0) -> torch.Tensor:
    """The reference formulation: each half of the features rotated by one axis with
    "rotate half", then the halves concatenated."""
    out = []
    for half, coord in zip(x.chunk(2, dim=-1), (positions[..., 0], positions[..., 1])):
        d = half.shape[-1]
        inv_freq = 1.0 / (frequency ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
        angles = coord.to(torch.float32)[..., None] * inv_freq
        angles = torch.cat((angles, angles), dim=-1).to(half.dtype)[:, None]
        first, second = half[..., : d // 2], half[..., d // 2:]
        out.append(half * angles.cos() + torch.cat((-second, first), dim=-1) * angles.sin())
    return torch.cat(out, dim=-1)


def positions_of(batch: int, rows: int, cols: int, special: int = 5) -> torch.Tensor:
    grid = grid_positions(batch, rows, cols) + 1
    return torch.cat((torch.zeros(batch, special, 2, dtype=grid.dtype), grid), dim=1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(3, 16, 37, 37, 64), (1, 4, 9, 9, 16), (2, 2, 5, 7, 8)])
def test_rotation_is_rotate_half_bit_for_bit(dtype, shape):
    b, heads, rows, cols, d = shape
    pos = positions_of(b, rows, cols)
    g = torch.Generator().manual_seed(d)
    x = torch.randn(b, pos.shape[1], heads, d, generator=g, dtype=dtype).transpose(1, 2)  # strided, as in a block
    rope = RotaryPositionEmbedding2D(100.0)
    expected = rotate_half_per_axis(x, pos)
    assert torch.equal(rope(x, pos), expected)
    assert torch.equal(rope(x, pos), expected)  # from the cached tables


def test_cached_tables_follow_the_positions():
    rope = RotaryPositionEmbedding2D(100.0)
    frame, joint = positions_of(2, 4, 4), positions_of(1, 4, 8)
    xf = torch.randn(2, 2, frame.shape[1], 8)
    xj = torch.randn(1, 2, joint.shape[1], 8)
    for _ in range(2):  # a pass alternates two positions tensors
        assert torch.equal(rope(xf, frame), rotate_half_per_axis(xf, frame))
        assert torch.equal(rope(xj, joint), rotate_half_per_axis(xj, joint))
    frame.mul_(2)  # changed in place: the tables are recomputed
    assert torch.equal(rope(xf, frame), rotate_half_per_axis(xf, frame))
    assert torch.equal(rope(xf.double(), frame), rotate_half_per_axis(xf.double(), frame))


def test_bad_shapes_are_named():
    rope = RotaryPositionEmbedding2D()
    with pytest.raises(ValueError, match="divisible by 4"):
        rope(torch.zeros(1, 1, 3, 6), torch.zeros(1, 3, 2))
    with pytest.raises(ValueError, match=r"positions must be \[B, N, 2\]"):
        rope(torch.zeros(1, 1, 3, 8), torch.zeros(1, 3))
