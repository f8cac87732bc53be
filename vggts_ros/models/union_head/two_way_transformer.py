"""Two-way transformer of the Union Segmentation Head.

The image side is a source and a target feature map laid side by side (``[B, C, g, 2g]``,
flattened to tokens). Each block first runs a coarse self-attention over both views (each
view is patchified by a strided conv to ``sa_tokens x sa_tokens`` cells, attended jointly,
and un-patchified by a transposed conv), then the SAM-style token self-attention,
token->image and image->token cross-attentions.

On the CPU in float32 (inference) the image side, ``g x 2g`` tokens and the bulk of the
head's memory traffic, is processed a few coarse rows at a time (:func:`chunked_path`,
``TwoWayBlock._forward_chunked``, :class:`TokenToImageAttention`): the same function, with
every intermediate a few MB instead of ~70 MB per view. Float64, CUDA and training run the
plain formulation.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from ..cpu_linear import derived, linear, linear_add, takes_fast_path
from .common import MLP, Attention

# The image side of a block is processed in chunks of about this many bytes per tensor
# on the CPU float32 path (see ``TwoWayBlock._forward_chunked``).
CHUNK_BYTES = 8 << 20
_FLASH_CPU = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def chunked_path(keys: Tensor, weight: Tensor) -> bool:
    """Whether the image side runs chunk by chunk: the oneDNN float32 path of
    :mod:`..cpu_linear` (CPU float32, inference) and a CPU attention kernel that returns
    its log-sum-exp."""
    return _FLASH_CPU is not None and takes_fast_path(keys, weight)


def row_chunks(rows: int, row_bytes: int) -> List[Tuple[int, int]]:
    """``[start, end)`` ranges covering ``rows`` rows, each about ``CHUNK_BYTES``."""
    step = max(1, CHUNK_BYTES // max(1, row_bytes))
    return [(i, min(rows, i + step)) for i in range(0, rows, step)]


class TokenToImageAttention:
    """``attn(queries, image + pe, image, residual)`` for a few query tokens over image
    tokens that arrive chunk by chunk: each chunk's keys and values are projected and
    attended on their own, and the chunks' outputs are combined by their log-sum-exp (the
    softmax over all image tokens, summed in another order). No tensor the size of the
    whole image side is made."""

    def __init__(self, attn: Attention, queries: Tensor) -> None:
        self.attn = attn
        self.q = attn._heads(linear(queries, attn.q_proj.weight, attn.q_proj.bias))
        self.parts: List[Tuple[Tensor, Tensor]] = []

    def add(self, image_pe: Tensor, image: Tensor) -> None:
        """One chunk ``[B, n, C]`` of the image tokens with and without their encoding."""
        a = self.attn
        k = a._heads(linear(image_pe, a.k_proj.weight, a.k_proj.bias))
        v = a._heads(linear(image, a.v_proj.weight, a.v_proj.bias))
        out, lse = _FLASH_CPU(self.q, k, v)
        self.parts.append((out, lse))

    def result(self, residual: Tensor) -> Tensor:
        """``residual`` + the attention output (output projection applied)."""
        lse = torch.stack([lse for _, lse in self.parts]).logsumexp(0)
        out = None
        for part, part_lse in self.parts:
            term = part * (part_lse - lse).exp().unsqueeze(-1)
            out = term if out is None else out + term
        b, _, n, _ = out.shape
        out = out.transpose(1, 2).reshape(b, n, -1)
        a = self.attn
        return linear_add(out, a.out_proj.weight, a.out_proj.bias, residual)


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
        t = self._coarse_cells(keys, sa_pe, grid_hw, src_down)
        _, s_h, s_w2, _ = t.shape
        # un-patchify both views at once, added to the keys in the same pass
        r = h // s_h
        fine = _unpatch_cells(self.upsampling, t)
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
        keys_owned: bool = False,
    ) -> Tuple[Tensor, Tensor]:
        """``keys_owned``: the caller hands ``keys`` over (the chunked CPU path may then
        update it in place instead of copying it)."""
        if chunked_path(keys, self.upsampling.weight):
            return self._forward_chunked(queries, keys, query_pe, ca_pe, sa_pe, grid_hw, src_down, keys_owned)
        keys = self.coarse_image_attention(keys, sa_pe, grid_hw, src_down)
        queries = self._token_attention(queries, query_pe)

        q = queries + query_pe
        k = keys + ca_pe
        queries = self.norm2(self.cross_attn_token_to_image(q, k, keys, residual=queries))
        queries = self.norm3(self.token_mlp(queries, residual=queries))

        q = queries + query_pe
        keys = self.norm4(self.cross_attn_image_to_token(k, q, queries, residual=keys))
        return queries, keys

    def _token_attention(self, queries: Tensor, query_pe: Tensor) -> Tensor:
        """The tokens' self-attention (without residual and PE in the first block)."""
        if self.first:
            queries = self.self_attn_token(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = self.self_attn_token(q, q, queries, residual=queries)
        return self.norm1(queries)

    def _coarse_cells(self, keys: Tensor, sa_pe: Tensor, grid_hw: Tuple[int, int],
                      src_down: Optional[Tensor]) -> Tensor:
        """The coarse self-attention's output cells ``[B, s, 2s, C']`` (before un-patchifying)."""
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
        return t.view(b, s_h, s_w2, c2)

    def _forward_chunked(self, queries: Tensor, keys: Tensor, query_pe: Tensor, ca_pe: Tensor, sa_pe: Tensor,
                         grid_hw: Tuple[int, int], src_down: Optional[Tensor],
                         keys_owned: bool = False) -> Tuple[Tensor, Tensor]:
        """``forward`` on the CPU float32 path with the image side (``h x 2w`` tokens, the
        bulk of the head's memory traffic) processed a few coarse rows at a time, in place
        in ``keys`` (a copy of it unless ``keys_owned``): un-patchify + norm and the
        token->image attention in one sweep, then (after the tokens' MLP) the image->token attention + norm in a second.
        Every chunk's tensors stay a few MB, so they stay in cache and are never fresh
        pages from the system. The same function as ``forward`` (float32 rounding aside)."""
        b, _, c = keys.shape
        h, w = grid_hw
        cells = self._coarse_cells(keys, sa_pe, grid_hw, src_down)
        _, s_h, s_w2, _ = cells.shape
        r = h // s_h
        row = r * 2 * w  # image tokens per coarse row
        if not keys_owned:
            keys = keys.clone()
        queries = self._token_attention(queries, query_pe)
        to_image = TokenToImageAttention(self.cross_attn_token_to_image, queries + query_pe)
        chunks = row_chunks(s_h, b * row * c * keys.element_size())  # coarse rows
        for i0, i1 in chunks:
            t0, t1 = i0 * row, i1 * row
            part = keys[:, t0:t1]
            fine = _unpatch_cells(self.upsampling, cells[:, i0:i1])
            x = self.norm_nf((part.view(b, i1 - i0, r, s_w2, r, c) + fine).view(b, -1, c))
            part.copy_(x)
            to_image.add(x + ca_pe[:, t0:t1], x)
        queries = self.norm2(to_image.result(queries))
        queries = self.norm3(self.token_mlp(queries, residual=queries))

        q = queries + query_pe
        for i0, i1 in chunks:  # the image tokens are the queries here: each chunk on its own
            t0, t1 = i0 * row, i1 * row
            part = keys[:, t0:t1]
            part.copy_(self.norm4(self.cross_attn_image_to_token(part + ca_pe[:, t0:t1], q, queries, residual=part)))
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
                queries, keys, tokens, ca_pe, sa_pe, (h, w), src_down=src_down0 if i == 0 else None, keys_owned=True
            )
        q = queries + tokens
        if chunked_path(keys, self.final_attn_token_to_image.k_proj.weight):
            attn = TokenToImageAttention(self.final_attn_token_to_image, q)
            for t0, t1 in row_chunks(keys.shape[1], b * c * keys.element_size()):
                part = keys[:, t0:t1]
                attn.add(part + ca_pe[:, t0:t1], part)
            return self.norm_final_attn(attn.result(queries)), keys
        queries = self.norm_final_attn(self.final_attn_token_to_image(q, keys + ca_pe, keys, residual=queries))
        return queries, keys
