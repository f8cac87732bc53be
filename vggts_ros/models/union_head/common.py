"""Small building blocks shared by the prompt encoder and the mask decoder.

Attribute names (``layers``, ``q_proj``, ``positional_encoding_gaussian_matrix`` ...)
are part of the checkpoint format and must not change.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple, Type

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..cpu_linear import linear, linear_add


class LayerNorm2d(nn.Module):
    """Layer norm over the channel axis of an ``[B, C, H, W]`` map."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(dim=1, keepdim=True)
        var = (x - mean).pow(2).mean(dim=1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


class MLP(nn.Module):
    """Plain stack of linear layers with an activation between them (none after the last)."""

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        num_layers: int,
        activation: Type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.act = activation()

    def forward(self, x: Tensor, residual: Optional[Tensor] = None) -> Tensor:
        """The stack on ``x``; with ``residual``, returns ``residual + stack(x)``."""
        last = len(self.layers) - 1
        relu = type(self.act) is nn.ReLU
        for i, layer in enumerate(self.layers):
            if i == last and residual is not None:
                return linear_add(x, layer.weight, layer.bias, residual)
            if i < last and relu:
                x = linear(x, layer.weight, layer.bias, relu=True)
                continue
            x = linear(x, layer.weight, layer.bias)
            if i < last:
                x = self.act(x)
        return x


class RandomFourierPE(nn.Module):
    """Positional encoding by projecting [-1, 1] coordinates on fixed Gaussian frequencies.

    Produces ``2 * num_feats`` channels (sines then cosines).
    """

    def __init__(self, num_feats: int) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_feats))

    def encode_unit(self, xy: Tensor) -> Tensor:
        """``xy[..., 2]`` in [0, 1] -> ``[..., 2 * num_feats]``."""
        proj = (2.0 * xy - 1.0) @ self.positional_encoding_gaussian_matrix
        proj = (2.0 * math.pi) * proj
        return torch.cat([proj.sin(), proj.cos()], dim=-1)

    def grid(self, h: int, w: int) -> Tensor:
        """Encoding of the cell centres of an ``h x w`` grid, channels last ``[h, w, C]``, in
        the dtype of the frequency buffer (float32, or float64 for a ``.double()`` head)."""
        mat = self.positional_encoding_gaussian_matrix
        ys = (torch.arange(h, device=mat.device, dtype=mat.dtype) + 0.5) / h
        xs = (torch.arange(w, device=mat.device, dtype=mat.dtype) + 0.5) / w
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        return self.encode_unit(torch.stack([xx, yy], dim=-1))

    def points(self, xy: Tensor, size_hw: Tuple[int, int]) -> Tensor:
        """Encode pixel coordinates ``[B, N, 2]`` (x, y) of an image of ``size_hw``."""
        h, w = size_hw
        dtype = self.positional_encoding_gaussian_matrix.dtype
        size = torch.tensor([float(w), float(h)], device=xy.device, dtype=dtype)
        return self.encode_unit(xy.to(dtype) / size)


class Attention(nn.Module):
    """Multi-head attention with separate q/k/v projections to ``internal_dim`` channels."""

    def __init__(self, dim: int, num_heads: int, internal_dim: int | None = None) -> None:
        super().__init__()
        internal_dim = dim if internal_dim is None else int(internal_dim)
        if internal_dim % num_heads:
            raise ValueError(f"{num_heads} heads do not divide {internal_dim} channels")
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, internal_dim)
        self.k_proj = nn.Linear(dim, internal_dim)
        self.v_proj = nn.Linear(dim, internal_dim)
        self.out_proj = nn.Linear(internal_dim, dim)

    def _heads(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, residual: Optional[Tensor] = None) -> Tensor:
        """Attention output; with ``residual``, returns ``residual + output``."""
        out = F.scaled_dot_product_attention(
            self._heads(linear(q, self.q_proj.weight, self.q_proj.bias)),
            self._heads(linear(k, self.k_proj.weight, self.k_proj.bias)),
            self._heads(linear(v, self.v_proj.weight, self.v_proj.bias)),
        )
        b, _, n, _ = out.shape
        out = out.transpose(1, 2).reshape(b, n, -1)
        if residual is None:
            return linear(out, self.out_proj.weight, self.out_proj.bias)
        return linear_add(out, self.out_proj.weight, self.out_proj.bias, residual)
