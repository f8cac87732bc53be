"""Sampling and sinusoidal-embedding helpers of the point tracker."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sincos_table(positions: torch.Tensor, dim: int, base: float = 10000.0) -> torch.Tensor:
    """``[M] -> [M, dim]``: ``sin`` then ``cos`` of ``pos / base**(2k/dim)`` evaluated in float64."""
    k = torch.arange(dim // 2, dtype=torch.float64, device=positions.device) / (dim / 2.0)
    angles = positions.reshape(-1).to(torch.float64)[:, None] * (1.0 / base**k)[None]
    return torch.cat((angles.sin(), angles.cos()), dim=1).float()


def grid_pos_embed(dim: int, height: int, width: int, device=None) -> torch.Tensor:
    """2D sin-cos embedding of every feature-map pixel, ``[1, dim, height, width]``.

    The first ``dim/2`` channels encode the column (x) and the rest the row (y). Each
    half depends on one coordinate only, so the 1D tables are evaluated once and
    broadcast; the values equal a direct per-pixel evaluation.
    """
    table_x = sincos_table(torch.arange(width, dtype=torch.float32, device=device), dim // 2)  # [W, D/2]
    table_y = sincos_table(torch.arange(height, dtype=torch.float32, device=device), dim // 2)  # [H, D/2]
    half_x = table_x.t()[:, None, :].expand(-1, height, -1)
    half_y = table_y.t()[:, :, None].expand(-1, -1, width)
    return torch.cat((half_x, half_y), dim=0)[None]


def flow_frequencies(channels: int, device=None) -> torch.Tensor:
    """Frequencies ``k * 1000 / channels`` (k even, < channels) of :func:`flow_embedding`, float32."""
    return torch.arange(0, channels, 2, device=device, dtype=torch.float32) * (1000.0 / channels)


def flow_embedding(xy: torch.Tensor, channels: int, freq: torch.Tensor = None) -> torch.Tensor:
    """``[..., 2] -> [..., 2*channels]``: interleaved sin/cos of x then of y, frequencies ``k*1000/channels``.

    The angles are computed in ``xy``'s precision and the embedding is rounded to float32
    (the published tracker writes it into a float32 buffer), then returned in ``xy``'s dtype.
    ``freq`` (from :func:`flow_frequencies`) may be passed to avoid rebuilding it per call.
    """
    if freq is None:
        freq = flow_frequencies(channels, xy.device)
    parts = []
    for axis in range(2):
        a = xy[..., axis : axis + 1] * freq
        parts.append(torch.stack((a.sin(), a.cos()), dim=-1).flatten(-2))
    return torch.cat(parts, dim=-1).to(torch.float32).to(xy.dtype)


def grid_scale(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Per-axis factor (x, y) of :func:`to_grid_coords` for a ``height x width`` map."""
    return torch.tensor([2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)], device=device, dtype=dtype)


def to_grid_coords(xy: torch.Tensor, height: int, width: int, scale: torch.Tensor = None) -> torch.Tensor:
    """Pixel coordinates (x, y), 0 = first pixel centre, to ``grid_sample``'s [-1, 1] (aligned corners).

    ``scale`` (from :func:`grid_scale`, on ``xy``'s device and dtype) may be precomputed so
    that a loop does not build a host tensor on every call.
    """
    if scale is None:
        scale = grid_scale(height, width, xy.device, xy.dtype)
    return xy * scale - 1


def sample_points(fmap: torch.Tensor, xy: torch.Tensor, padding_mode: str = "border") -> torch.Tensor:
    """Bilinear feature lookup: ``fmap [B, C, H, W]``, ``xy [B, N, 2]`` pixels -> ``[B, N, C]``."""
    h, w = fmap.shape[-2:]
    grid = to_grid_coords(xy.detach().to(fmap.dtype), h, w).unsqueeze(2)
    out = F.grid_sample(fmap, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)
    return out.squeeze(-1).transpose(1, 2)


def _fma_f32(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """float32 ``a * b + c`` rounded once (as an FMA instruction), on any device: the
    product of two float32 values is exact in float64, the float64 sum is rounded to odd,
    and rounding that to float32 is then the correctly rounded result."""
    p = a.double() * b.double()
    c = c.double()
    s = p + c
    bp = s - p
    err = (p - (s - bp)) + (c - bp)  # s + err == p + c exactly
    fix = (err != 0) & ((s.view(torch.int64) & 1) == 0)
    s = torch.where(fix, torch.nextafter(s, torch.where(err > 0, torch.inf, -torch.inf).to(s)), s)
    return s.float()


def sample_points_f32_exact(fmap: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """:func:`sample_points` (bilinear, border padding) of a float32 ``fmap [B, C, H, W]``
    at ``xy [B, N, 2]``, with a fixed float32 arithmetic: the one of PyTorch's vectorised
    (AVX2 / AVX-512) CPU ``grid_sample`` kernel, whose weighted sum of the four corners is
    compiled to fused multiply-adds. Returns ``[B, N, C]`` float32.

    Used for the tracker's float32 position-embedding lookup, the one float32 step the
    published tracker keeps in every precision: with ``grid_sample`` it rounds differently
    on CPUs without those kernels (``ATEN_CPU_CAPABILITY=default``), which the iterations
    amplify to ~1e-3 px even in float64 runs. Bit-identical to ``grid_sample`` on AVX2 /
    AVX-512 CPUs.
    """
    h, w = fmap.shape[-2:]
    f32 = torch.float32
    g = to_grid_coords(xy.detach().to(f32), h, w)  # the same float32 steps as sample_points
    half = torch.tensor([(w - 1) / 2.0, (h - 1) / 2.0], dtype=f32).to(g.device)
    top = torch.tensor([float(w - 1), float(h - 1)], dtype=f32).to(g.device)
    pix = torch.minimum(torch.clamp_min((g + 1) * half, 0), top)  # unnormalise, clip to the border
    corner = pix.floor()
    frac = pix - corner  # distance to the west / north neighbour
    rest = 1 - frac
    wx, nx = frac[..., 0], rest[..., 0]  # weights of the east / west columns
    wy, ny = frac[..., 1], rest[..., 1]  # weights of the south / north rows
    ix = corner[..., 0].long()
    iy = corner[..., 1].long()
    ix1 = (ix + 1).clamp_max(w - 1)
    iy1 = (iy + 1).clamp_max(h - 1)
    has_e = (ix + 1 < w).to(f32)
    has_s = (iy + 1 < h).to(f32)
    flat = fmap.flatten(2)  # [B, C, H*W]

    def corner_values(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
        idx = (yy * w + xx).unsqueeze(1).expand(-1, flat.shape[1], -1)
        return flat.gather(2, idx).transpose(1, 2)  # [B, N, C]

    v_nw = corner_values(iy, ix)
    v_ne = corner_values(iy, ix1) * has_e[..., None]
    v_sw = corner_values(iy1, ix) * has_s[..., None]
    v_se = corner_values(iy1, ix1) * (has_e * has_s)[..., None]
    weights = [(ny * nx), (ny * wx), (wy * nx), (wy * wx)]
    out = v_nw * weights[0][..., None]
    for value, weight in zip((v_ne, v_sw, v_se), weights[1:]):
        out = _fma_f32(value, weight[..., None].expand_as(value), out)
    return out
