"""Memory encoder: one predicted target mask plus that target's features -> memory tokens.

The backbone features of the target ``[B, C, g, g]`` and the object probability of the
head's low-resolution logits are pooled to the memory token grid (``side x side``). Each
memory token is a (key, value) pair, as in space-time memory networks: the *key* is the
pooled feature itself (the memory attention compares it with the current frame's pooled
features through the same projection, so matching works before any training), the
*value* fuses feature and mask probability with a small MLP and learned object/background
embeddings, and the pooled object probability itself rides along (the memory attention
propagates it to the current frame). Spatial position is a fixed 2-D sine encoding; temporal position (the age of
an entry) a learned table added when the bank is read (:meth:`MemoryEncoder.age_encoding`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sine_grid_pe(side: int, dim: int, device=None, dtype=torch.float32) -> Tensor:
    """Fixed 2-D sine/cosine encoding ``[side * side, dim]`` (row-major), half the
    channels for y, half for x, geometric frequencies over the unit square."""
    if dim % 4:
        raise ValueError(f"sine position encoding needs dim divisible by 4, got {dim}")
    quarter = dim // 4
    freqs = torch.exp(torch.arange(quarter, device=device, dtype=torch.float32) * (-math.log(100.0) / max(1, quarter)))
    coords = (torch.arange(side, device=device, dtype=torch.float32) + 0.5) / side * (2 * math.pi)
    ang = coords[:, None] * freqs[None, :] * side  # [side, quarter]
    enc = torch.cat([ang.sin(), ang.cos()], dim=1)  # [side, dim/2]
    y = enc[:, None, :].expand(side, side, dim // 2)
    x = enc[None, :, :].expand(side, side, dim // 2)
    return torch.cat([y, x], dim=2).reshape(side * side, dim).to(dtype)


def pool_to(x: Tensor, side: int) -> Tensor:
    """Average ``[B, C, h, w]`` onto a ``side x side`` grid (exact cells when divisible)."""
    if x.shape[-2:] == (side, side):
        return x
    return F.adaptive_avg_pool2d(x, (side, side))


class MemoryEncoder(nn.Module):
    def __init__(self, dim: int, side: int, ages: int) -> None:
        super().__init__()
        self.dim = dim
        self.side = side
        self.feat_norm = nn.LayerNorm(dim)
        self.fuse = nn.Sequential(nn.Linear(dim + 1, dim), nn.GELU(), nn.Linear(dim, dim))
        self.object_embed = nn.Parameter(torch.zeros(dim))
        self.background_embed = nn.Parameter(torch.zeros(dim))
        nn.init.normal_(self.object_embed, std=0.5)
        nn.init.normal_(self.background_embed, std=0.5)
        # ages 1..K of recent entries at rows 1..K; row 0 = the kept first frame
        self.age_table = nn.Embedding(ages + 1, dim)
        nn.init.normal_(self.age_table.weight, std=0.02)
        self.out_norm = nn.LayerNorm(dim)

    def forward(self, tar_feat: Tensor, low_res: Tensor) -> Tensor:
        """tar_feat ``[B, C, g, g]``, low_res ``[B, 1, h, w]`` logits -> ``[B, side^2, 2C + 1]``
        (key channels, value channels, object probability)."""
        prob = torch.sigmoid(low_res.float())
        m = pool_to(prob, self.side).flatten(2).transpose(1, 2)  # [B, N, 1]
        key = pool_to(tar_feat.float(), self.side).flatten(2).transpose(1, 2)  # [B, N, C]
        x = self.fuse(torch.cat([self.feat_norm(key), m], dim=2))
        value = self.out_norm(x + m * self.object_embed + (1.0 - m) * self.background_embed)
        return torch.cat([key, value, m], dim=2)

    def position(self, device=None) -> Tensor:
        """Spatial encoding of the memory token grid ``[1, side^2, C]``."""
        return sine_grid_pe(self.side, self.dim, device=device).unsqueeze(0)

    def age_encoding(self, age: int) -> Tensor:
        """``[1, 1, C]`` temporal encoding: age 0 = the kept first frame, 1 = newest."""
        idx = min(int(age), self.age_table.num_embeddings - 1)
        return self.age_table.weight[idx].view(1, 1, -1)
