"""Pre-norm transformer block: x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x)))."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..cpu_linear import derived, linear, linear_add, takes_fast_path
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
        if self.attn.onednn and takes_fast_path(x, self.attn.proj.weight):
            return self._forward_fused(x, pos)
        x = x + self.ls1(self.attn(self.norm1(x), pos=pos))
        return x + self.ls2(self.mlp(self.norm2(x)))

    def _forward_fused(self, x: torch.Tensor, pos: Optional[torch.Tensor]) -> torch.Tensor:
        """The same layer on the oneDNN float32 path with each layer scale folded into the
        product before it (``gamma * (W h + b) = (gamma W) h + gamma b``) and the residual
        added by that product: no pass over the activations for the scale or the sum
        (float32 rounding only differs; float64, autocast and training take ``forward``)."""
        w, b = self._scaled(self.attn.proj, self.ls1, "proj_ls1")
        x = linear_add(self.attn.attend(self.norm1(x), pos), w, b, x)
        fc1 = self.mlp.fc1
        w, b = self._scaled(self.mlp.fc2, self.ls2, "fc2_ls2")
        return linear_add(linear(self.norm2(x), fc1.weight, fc1.bias, gelu=True), w, b, x)

    def _scaled(self, layer: nn.Linear, scale: nn.Module, name: str):
        """``layer``'s weight and bias with the layer scale ``scale`` folded in (cached)."""
        if not isinstance(scale, LayerScale):
            return layer.weight, layer.bias
        gamma = scale.gamma

        def build():
            bias = gamma * layer.bias if layer.bias is not None else None
            return gamma[:, None] * layer.weight, bias

        return derived(self, name, build, params=(layer.weight, layer.bias, gamma))
