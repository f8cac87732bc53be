"""Attention blocks of the tracker's update transformer."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ...layers.mlp import Mlp


class MultiheadAttention(nn.Module):
    """Scaled-dot-product multi-head attention with ``nn.MultiheadAttention``'s parameter
    layout (packed ``in_proj_weight``/``in_proj_bias`` and ``out_proj``), batch-first."""

    def __init__(self, embed_dim: int, num_heads: int) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, query: torch.Tensor, context: torch.Tensor, attn_mask: Optional[torch.Tensor] = None):
        b, n, c = query.shape
        m = context.shape[1]
        hd = c // self.num_heads
        wq, wkv = self.in_proj_weight.split((c, 2 * c))
        bq, bkv = self.in_proj_bias.split((c, 2 * c))
        q = F.linear(query, wq, bq).view(b, n, self.num_heads, hd).transpose(1, 2)
        k, v = F.linear(context, wkv, bkv).view(b, m, 2, self.num_heads, hd).permute(2, 0, 3, 1, 4)
        if attn_mask is not None and attn_mask.dtype == torch.bool:
            attn_mask = ~attn_mask  # nn.MultiheadAttention: True = blocked; SDPA: True = allowed
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, c))


class AttnBlock(nn.Module):
    """Self-attention block. Note the residual is taken from the *normalised* input, as in
    the published tracker: ``y = norm1(x); y = y + attn(y); y + mlp(norm2(y))``."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size)
        self.norm2 = nn.LayerNorm(hidden_size)
        self.attn = MultiheadAttention(hidden_size, num_heads)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        x = x + self.attn(x, x)
        return x + self.mlp(self.norm2(x))


class CrossAttnBlock(nn.Module):
    """Cross-attention block from ``x`` to ``context`` with the same normalised-residual form."""

    def __init__(self, hidden_size: int, num_heads: int = 1, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size)
        self.norm_context = nn.LayerNorm(hidden_size)
        self.norm2 = nn.LayerNorm(hidden_size)
        self.cross_attn = MultiheadAttention(hidden_size, num_heads)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = self.norm1(x)
        x = x + self.cross_attn(x, self.norm_context(context), attn_mask=mask)
        return x + self.mlp(self.norm2(x))
