"""Memory attention: the current target features cross-attend to the memory bank.

The target features ``[B, C, g, g]`` are pooled to the memory token grid, go through
``blocks`` pre-norm blocks (cross-attention to the bank's tokens, then an MLP), and the
residual updates (not the pooled features themselves) are projected and upsampled back to
``g x g``: a feature readout. Alongside, the memory's object probabilities are carried to
the current frame as a coarse mask prior (logits), mixing two routes with a learned weight:

* *in place*: each memory entry's probability at the same grid cell, entries weighted by
  a learned softmax over their ages (newest first at init). The target crop follows the
  object, so the object stays near the same cells from frame to frame, and this route
  works where appearance cannot: a token covered by an occluder still inherits the
  object it showed a frame earlier (what amodal segmentation needs);
* *by appearance*: one affinity (an identity-initialised projection of features plus
  positions, softmax over every memory token), as space-time memory networks propagate
  labels; it follows fast motion but gives an occluder's tokens the occluder's label.

:class:`TemporalMemory` adds the readout and the encoded prior to the target features
through a zero-initialised gate.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .memory_encoder import pool_to, sine_grid_pe


class CrossAttention(nn.Module):
    """Queries and memory keys share one projection (both are pooled backbone features, so
    their affinity is meaningful from the start); values have their own."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"memory attention: dim {dim} not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qk_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def _split(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        out = F.scaled_dot_product_attention(self._split(self.qk_proj(q)), self._split(self.qk_proj(k)),
                                             self._split(self.v_proj(v)))
        b, h, n, d = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * d))


class MemoryBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = max(1, int(round(dim * mlp_ratio)))
        self.norm_q = nn.LayerNorm(dim)
        self.norm_v = nn.LayerNorm(dim)
        self.cross = CrossAttention(dim, num_heads)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor, pos: Tensor, keys: Tensor, values: Tensor, memory_pos: Tensor) -> Tensor:
        """``keys`` are already normalised like the queries' input."""
        x = x + self.cross(self.norm_q(x) + pos, keys + memory_pos, self.norm_v(values))
        return x + self.mlp(self.norm_mlp(x))


class MemoryAttention(nn.Module):
    def __init__(self, dim: int, side: int, blocks: int, num_heads: int, mlp_ratio: float, ages: int = 1) -> None:
        super().__init__()
        self.dim = dim
        self.side = side
        self.in_norm = nn.LayerNorm(dim)
        self.layers = nn.ModuleList([MemoryBlock(dim, num_heads, mlp_ratio) for _ in range(blocks)])
        self.out_norm = nn.LayerNorm(dim)
        self.out_proj = nn.Linear(dim, dim)
        self.affinity = nn.Linear(dim, dim)
        nn.init.eye_(self.affinity.weight)
        nn.init.zeros_(self.affinity.bias)
        self.prior_scale = nn.Parameter(torch.tensor(8.0))  # logit of a certain object / background
        # in-place route: weight logits of ages 0 (kept first frame) .. ``ages``, newest
        # favoured; carry_mix: logit of the in-place route's share (0.88 at init)
        self.age_logits = nn.Parameter(-torch.arange(ages + 1, dtype=torch.float32) + 1.0)
        with torch.no_grad():
            self.age_logits[0] = -float(ages)
        self.carry_mix = nn.Parameter(torch.tensor(2.0))

    def forward(self, tar_feat: Tensor, memory: Tensor, memory_pos: Tensor,
                ages: Sequence[int]) -> Tuple[Tensor, Tensor]:
        """tar_feat ``[B, C, g, g]``; memory ``[B, M, 2C + 1]`` (keys, values, object
        probability; ``M = len(ages) * side^2``, entries in ``ages`` order), memory_pos
        ``[B, M, C]`` -> (feature readout ``[B, C, g, g]``, mask prior logits
        ``[B, 1, side, side]``)."""
        b, c, g, _ = tar_feat.shape
        s = self.side
        x0 = self.in_norm(pool_to(tar_feat.float(), s).flatten(2).transpose(1, 2))
        keys = self.in_norm(memory[..., :c])  # the same normalisation as the queries
        values = memory[..., c:2 * c]
        prob = memory[..., 2 * c:2 * c + 1]
        pos = sine_grid_pe(s, c, device=tar_feat.device).unsqueeze(0)
        x = x0
        for layer in self.layers:
            x = layer(x, pos, keys, values, memory_pos)
        delta = self.out_proj(self.out_norm(x - x0))  # [B, s*s, C]
        grid = delta.transpose(1, 2).reshape(b, c, s, s)
        if s != g:
            grid = F.interpolate(grid, size=(g, g), mode="bilinear", align_corners=False)
        carried = F.scaled_dot_product_attention(self.affinity(x0 + pos).unsqueeze(1),
                                                 self.affinity(keys + memory_pos).unsqueeze(1), prob.unsqueeze(1))
        idx = torch.as_tensor([min(int(a), self.age_logits.numel() - 1) for a in ages], device=tar_feat.device)
        weights = torch.softmax(self.age_logits[idx], dim=0).view(1, -1, 1, 1)
        in_place = (prob.view(b, len(ages), s * s, 1) * weights).sum(1)  # [B, s*s, 1]
        mix = torch.sigmoid(self.carry_mix)
        carried = mix * in_place + (1.0 - mix) * carried[:, 0]
        prior = self.prior_scale * (2.0 * carried - 1.0)  # [B, s*s, 1]
        return grid, prior.transpose(1, 2).reshape(b, 1, s, s)
