"""Pre-norm transformer block: x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x)))."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .attention import Attention
from .layer_scale import LayerScale
from .mlp import Mlp


class Block(nn.Module):
    """One transformer layer, shared by the DINOv2 encoder and the VGGT aggregator.

    ``init_values`` falsy means no layer scale (and no ``ls*.gamma`` keys). ``norm_eps``
    differs between the two users (DINOv2 uses 1e-6, the aggregator PyTorch's 1e-5).
    ``onednn``: attention and MLP products on the oneDNN float32 path (:mod:`..cpu_linear`).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        ffn_bias: bool = True,
        init_values: Optional[float] = None,
        qk_norm: bool = False,
        norm_eps: float = 1e-5,
        rope: Optional[nn.Module] = None,
        onednn: bool = False,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, proj_bias=proj_bias, qk_norm=qk_norm, rope=rope,
                              onednn=onednn)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), bias=ffn_bias, onednn=onednn)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()

    def forward(self, x: torch.Tensor, pos: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), pos=pos))
        return x + self.ls2(self.mlp(self.norm2(x)))
