"""Two-way transformer of the Union Segmentation Head.

The image side is a source and a target feature map laid side by side (``[B, C, g, 2g]``,
flattened to tokens). Each block first runs a coarse self-attention over both views (each
view is patchified by a strided conv to ``sa_tokens x sa_tokens`` cells, attended jointly,
and un-patchified by a transposed conv), then the SAM-style token self-attention,
token->image and image->token cross-attentions.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..cpu_linear import derived, linear
from .common import MLP, Attention


def patchify(conv: nn.Conv2d, grid: Tensor) -> Tensor:
    """``conv`` (kernel == stride == r, no padding) applied to ``grid`` ``[B, h, w, C]``
    (channels last), returned as coarse cells ``[B, h/r, w/r, C_out]``.

    Non-overlapping patches make the convolution one matrix product."""
    b, h, w, c = grid.shape
    r = conv.stride[0]
    s_h, s_w = h // r, w // r
    patches = grid.reshape(b, s_h, r, s_w, r, c).permute(0, 1, 3, 2, 4, 5).reshape(b * s_h * s_w, r * r * c)
    (weight,) = derived(conv, "patch_matrix",
                        lambda: (conv.weight.permute(0, 2, 3, 1).reshape(conv.out_channels, r * r * c),))
    return linear(patches, weight, conv.bias).view(b, s_h, s_w, conv.out_channels)


def _unpatch_matrix(deconv: nn.ConvTranspose2d) -> Tuple[Tensor, Tensor]:
    """``deconv``'s weight as a ``[r * r * C_out, C_in]`` matrix (rows ordered y, x, channel)
    and its bias repeated to match."""
    r = deconv.stride[0]
    c_in, c_out = deconv.in_channels, deconv.out_channels
    return derived(deconv, "unpatch_matrix",
                   lambda: (deconv.weight.permute(2, 3, 1, 0).reshape(r * r * c_out, c_in), deconv.bias.repeat(r * r)))


def _unpatch_cells(deconv: nn.ConvTranspose2d, cells: Tensor) -> Tensor:
    """``[B, s_h, s_w, C_in]`` -> a ``[B, s_h, r, s_w, r, C_out]`` view (not contiguous)."""
    b, s_h, s_w, c_in = cells.shape
    r = deconv.stride[0]
    weight, bias = _unpatch_matrix(deconv)
    out = linear(cells.reshape(-1, c_in), weight, bias)
    return out.view(b, s_h, s_w, r, r, deconv.out_channels).permute(0, 1, 3, 2, 4, 5)


def unpatchify(deconv: nn.ConvTranspose2d, cells: Tensor) -> Tensor:
    """``deconv`` (kernel == stride == r) applied to ``cells`` ``[B, s_h, s_w, C_in]``,
    returned channels last ``[B, s_h * r, s_w * r, C_out]``."""
    b, s_h, s_w, _ = cells.shape
    r = deconv.stride[0]
    return _unpatch_cells(deconv, cells).reshape(b, s_h * r, s_w * r, deconv.out_channels)


class TwoWayBlock(nn.Module):
    """One block; ``first`` drops the residual and PE of the token self-attention."""

    def __init__(self, dim: int, num_heads: int, sa_ratio: int, first: bool) -> None:
        super().__init__()
        sa_dim = dim * sa_ratio
        self.first = first
        self.downsampling = nn.Conv2d(dim, sa_dim, kernel_size=sa_ratio, stride=sa_ratio)
        self.upsampling = nn.ConvTranspose2d(sa_dim, dim, kernel_size=sa_ratio, stride=sa_ratio)
        # The coarse attention projects to sa_dim / (sa_ratio / 2) channels (256 for 128 x 7).
        self.self_attn_img = Attention(sa_dim, num_heads, internal_dim=int(sa_dim // (sa_ratio / 2)))
        self.norm0 = nn.LayerNorm(sa_dim)
        self.img_mlp = MLP(sa_dim, 4 * sa_dim, sa_dim, num_layers=2)
        self.norm_ffn = nn.LayerNorm(sa_dim)
        self.norm_nf = nn.LayerNorm(dim)

        self.self_attn_token = Attention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.token_mlp = MLP(dim, 4 * dim, dim, num_layers=2)
        self.norm3 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = Attention(dim, num_heads)
        self.norm4 = nn.LayerNorm(dim)

    def coarse_image_attention(
        self, keys: Tensor, sa_pe: Tensor, grid_hw: Tuple[int, int], src_down: Optional[Tensor]
    ) -> Tensor:
        """Self-attention of both views at the coarse scale, added back to ``keys``.

        ``keys``: ``[B, h * 2w, C]`` (row-major over the side-by-side map). ``src_down``:
        the source half's coarse cells ``[B, s, s, C']`` when already known."""
        b, _, c = keys.shape
        h, w = grid_hw
        grid = keys.reshape(b, h, 2 * w, c)
        if src_down is None:  # both views in one product (patches never straddle the seam)
            coarse = patchify(self.downsampling, grid)
        else:
            coarse = torch.cat([src_down, patchify(self.downsampling, grid[:, :, w:])], dim=2)
        _, s_h, s_w2, c2 = coarse.shape
        t = coarse.reshape(b, s_h * s_w2, c2)
        qk = t + sa_pe
        t = self.norm0(self.self_attn_img(qk, qk, t, residual=t))
        t = self.norm_ffn(self.img_mlp(t, residual=t))
        # un-patchify both views at once, added to the keys in the same pass
        r = h // s_h
        fine = _unpatch_cells(self.upsampling, t.view(b, s_h, s_w2, c2))
        return self.norm_nf((keys.reshape(b, s_h, r, s_w2, r, c) + fine).view(b, h * 2 * w, c))

    def forward(
        self,
        queries: Tensor,
        keys: Tensor,
        query_pe: Tensor,
        ca_pe: Tensor,
        sa_pe: Tensor,
        grid_hw: Tuple[int, int],
        src_down: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tensor]:
        keys = self.coarse_image_attention(keys, sa_pe, grid_hw, src_down)

        if self.first:
            queries = self.self_attn_token(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = self.self_attn_token(q, q, queries, residual=queries)
        queries = self.norm1(queries)

        q = queries + query_pe
        k = keys + ca_pe
        queries = self.norm2(self.cross_attn_token_to_image(q, k, keys, residual=queries))
        queries = self.norm3(self.token_mlp(queries, residual=queries))

        q = queries + query_pe
        keys = self.norm4(self.cross_attn_image_to_token(k, q, queries, residual=keys))
        return queries, keys


class TwoWayTransformer(nn.Module):
    def __init__(self, depth: int, dim: int, num_heads: int, sa_ratio: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(TwoWayBlock(dim, num_heads, sa_ratio, first=(i == 0)) for i in range(depth))
        self.final_attn_token_to_image = Attention(dim, num_heads)
        self.norm_final_attn = nn.LayerNorm(dim)

    def first_source_downsample(self, src_map: Tensor) -> Tensor:
        """The first block's coarse source cells (channels last); they do not depend on
        the target side, so refinement passes can reuse them."""
        return patchify(self.layers[0].downsampling, src_map.permute(0, 2, 3, 1))

    def forward(
        self,
        tokens: Tensor,
        src_map: Tensor,
        tar_map: Tensor,
        ca_pe: Tensor,
        sa_pe: Tensor,
        src_down0: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tensor]:
        """``src_map``/``tar_map``: ``[B, C, g, g]`` with the mask priors already added.
        ``ca_pe``/``sa_pe`` are token-shaped (``[1, L, C]``). Returns (tokens, image tokens)."""
        b, c, h, w = src_map.shape
        keys = src_map.new_empty(b, h, 2 * w, c)  # side by side, channels last: one copy per view
        keys[:, :, :w] = src_map.permute(0, 2, 3, 1)
        keys[:, :, w:] = tar_map.permute(0, 2, 3, 1)
        keys = keys.view(b, h * 2 * w, c)
        queries = tokens
        for i, layer in enumerate(self.layers):
            queries, keys = layer(
                queries, keys, tokens, ca_pe, sa_pe, (h, w), src_down=src_down0 if i == 0 else None
            )
        q = queries + tokens
        queries = self.norm_final_attn(self.final_attn_token_to_image(q, keys + ca_pe, keys, residual=queries))
        return queries, keys
