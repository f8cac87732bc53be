"""Memory attention: the current target features cross-attend to the memory bank.

The target features ``[B, C, g, g]`` are pooled to the memory token grid, go through
``blocks`` pre-norm blocks (cross-attention to the bank's tokens, then an MLP), and the
residual updates (not the pooled features themselves) are projected and upsampled back to
``g x g``: a readout that :class:`TemporalMemory` adds to the target features through a
zero-initialised gate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .memory_encoder import pool_to, sine_grid_pe


class CrossAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"memory attention: dim {dim} not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def _split(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        out = F.scaled_dot_product_attention(self._split(self.q_proj(q)), self._split(self.k_proj(k)),
                                             self._split(self.v_proj(v)))
        b, h, n, d = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * d))


class MemoryBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = max(1, int(round(dim * mlp_ratio)))
        self.norm_q = nn.LayerNorm(dim)
        self.norm_m = nn.LayerNorm(dim)
        self.cross = CrossAttention(dim, num_heads)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor, pos: Tensor, memory: Tensor, memory_pos: Tensor) -> Tensor:
        m = self.norm_m(memory)
        x = x + self.cross(self.norm_q(x) + pos, m + memory_pos, m)
        return x + self.mlp(self.norm_mlp(x))


class MemoryAttention(nn.Module):
    def __init__(self, dim: int, side: int, blocks: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.dim = dim
        self.side = side
        self.in_norm = nn.LayerNorm(dim)
        self.layers = nn.ModuleList([MemoryBlock(dim, num_heads, mlp_ratio) for _ in range(blocks)])
        self.out_norm = nn.LayerNorm(dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, tar_feat: Tensor, memory: Tensor, memory_pos: Tensor) -> Tensor:
        """tar_feat ``[B, C, g, g]``; memory / memory_pos ``[B, M, C]`` -> readout ``[B, C, g, g]``."""
        b, c, g, _ = tar_feat.shape
        s = self.side
        x0 = self.in_norm(pool_to(tar_feat.float(), s).flatten(2).transpose(1, 2))
        pos = sine_grid_pe(s, c, device=tar_feat.device).unsqueeze(0)
        x = x0
        for layer in self.layers:
            x = layer(x, pos, memory, memory_pos)
        delta = self.out_proj(self.out_norm(x - x0))  # [B, s*s, C]
        grid = delta.transpose(1, 2).reshape(b, c, s, s)
        if s == g:
            return grid
        return F.interpolate(grid, size=(g, g), mode="bilinear", align_corners=False)
