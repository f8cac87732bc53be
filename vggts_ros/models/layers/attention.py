"""Multi-head self-attention with optional per-head QK LayerNorm and 2D RoPE."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..cpu_linear import linear


class Attention(nn.Module):
    """Fused-QKV self-attention.

    Parameter names (``qkv``, ``q_norm``, ``k_norm``, ``proj``) follow the published
    checkpoints. ``rope`` (if given) rotates queries and keys after the QK norm. ``onednn``:
    the QKV and output products on the oneDNN float32 path of :mod:`..cpu_linear`.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        qk_norm: bool = False,
        norm_eps: float = 1e-5,
        rope: Optional[nn.Module] = None,
        onednn: bool = False,
    ) -> None:
        super().__init__()
        self.onednn = onednn
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.q_norm = nn.LayerNorm(self.head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.rope = rope

    def forward(self, x: torch.Tensor, pos: Optional[torch.Tensor] = None) -> torch.Tensor:
        out = self.attend(x, pos)
        return linear(out, self.proj.weight, self.proj.bias) if self.onednn else self.proj(out)

    def attend(self, x: torch.Tensor, pos: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The heads' outputs ``[B, N, C]`` before the output projection ``proj``."""
        b, n, c = x.shape
        qkv = linear(x, self.qkv.weight, self.qkv.bias) if self.onednn else self.qkv(x)
        q, k, v = qkv.view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q = self.q_norm(q)
        k = self.k_norm(k)
        if self.rope is not None and pos is not None:
            q = self.rope(q, pos)
            k = self.rope(k, pos)
        if q.dtype != v.dtype:  # QK LayerNorm under autocast comes back in float32
            q, k = q.to(v.dtype), k.to(v.dtype)
        out = F.scaled_dot_product_attention(q, k, v)
        return out.transpose(1, 2).reshape(b, n, c)
