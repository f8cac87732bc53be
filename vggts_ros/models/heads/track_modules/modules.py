"""Attention blocks of the tracker's update transformer.

Attention is ``torch.nn.MultiheadAttention`` itself: its parameter names are those of
the checkpoint, and using the same kernels keeps the iterative tracker numerically on
the reference trajectory (its updates amplify rounding differences from step to step).
For the same reason the default ``need_weights=True`` is kept: it selects the kernel the
published model ran with, although the weights themselves are discarded.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ...layers.mlp import Mlp


class AttnBlock(nn.Module):
    """Self-attention block. Note the residual is taken from the *normalised* input, as in
    the published tracker: ``y = norm1(x); y = y + attn(y); y + mlp(norm2(y))``."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size)
        self.norm2 = nn.LayerNorm(hidden_size)
        self.attn = nn.MultiheadAttention(hidden_size, num_heads, batch_first=True)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        x = x + self.attn(x, x, x)[0]
        return x + self.mlp(self.norm2(x))


class CrossAttnBlock(nn.Module):
    """Cross-attention block from ``x`` to ``context`` with the same normalised-residual form.
    ``mask`` follows ``nn.MultiheadAttention`` (True = not allowed to attend)."""

    def __init__(self, hidden_size: int, num_heads: int = 1, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size)
        self.norm_context = nn.LayerNorm(hidden_size)
        self.norm2 = nn.LayerNorm(hidden_size)
        self.cross_attn = nn.MultiheadAttention(hidden_size, num_heads, batch_first=True)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = self.norm1(x)
        ctx = self.norm_context(context)
        x = x + self.cross_attn(x, ctx, ctx, attn_mask=mask)[0]
        return x + self.mlp(self.norm2(x))
