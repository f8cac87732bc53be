"""DPT (dense prediction transformer) decoder over the aggregator's token layers.

Four chosen layers are reshaped back to patch grids, projected to four channel widths,
brought to four scales (x4, x2, x1, x0.5), and fused coarse-to-fine by RefineNet-style
blocks. In ``feature_only`` mode (what the track head uses) the result is a dense feature
map at ``1/down_ratio`` of the image resolution. Otherwise (VGGT's depth head: two output
channels, ``exp`` on the value, ``1 + exp`` on the confidence) a small convolution stack
turns it into per-pixel predictions: the first ``output_dim - 1`` channels are the value,
the last one its confidence.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..cpu_linear import linear, takes_fast_path

# Above this many output elements F.interpolate can overflow int32 indexing; split the batch.
_INTERP_LIMIT = 1610612736


def resize_bilinear(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Bilinear resize with aligned corners, chunked over the batch for very large outputs."""
    size = (int(size[0]), int(size[1]))
    total = size[0] * size[1] * x.shape[0] * x.shape[1]
    if total <= _INTERP_LIMIT:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)
    pieces = x.chunk(total // _INTERP_LIMIT + 1, dim=0)
    return torch.cat([F.interpolate(t, size=size, mode="bilinear", align_corners=True) for t in pieces], dim=0)


def sincos_1d(positions: torch.Tensor, dim: int, omega_0: float = 100.0) -> torch.Tensor:
    """``[M] -> [M, dim]``: sines then cosines of ``pos / omega_0**(2k/dim)``, computed in float64."""
    k = torch.arange(dim // 2, dtype=torch.float64, device=positions.device) / (dim / 2.0)
    angles = positions.reshape(-1).to(torch.float64)[:, None] * (1.0 / omega_0**k)[None]
    return torch.cat((angles.sin(), angles.cos()), dim=1).float()


def uv_grid(width: int, height: int, aspect_ratio: float, dtype=None, device=None) -> torch.Tensor:
    """Pixel-centre coordinates normalised by the image diagonal, ``[height, width, 2]`` (u, v)."""
    diag = (1 + aspect_ratio**2) ** 0.5
    span_u, span_v = aspect_ratio / diag, 1 / diag
    u = torch.linspace(-span_u * (width - 1) / width, span_u * (width - 1) / width, width, dtype=dtype, device=device)
    v = torch.linspace(-span_v * (height - 1) / height, span_v * (height - 1) / height, height, dtype=dtype, device=device)
    uu, vv = torch.meshgrid(u, v, indexing="xy")
    return torch.stack((uu, vv), dim=-1)


def add_uv_pos_embed(x: torch.Tensor, width: int, height: int, ratio: float = 0.1) -> torch.Tensor:
    """Add a small sinusoidal embedding of the normalised (u, v) grid to a ``[N, C, h, w]`` map."""
    h, w = x.shape[-2:]
    c = x.shape[1]
    grid = uv_grid(w, h, width / height, dtype=x.dtype, device=x.device).reshape(-1, 2)
    emb = torch.cat((sincos_1d(grid[:, 0], c // 2), sincos_1d(grid[:, 1], c // 2)), dim=-1)
    emb = (emb.view(h, w, c) * ratio).permute(2, 0, 1)[None].to(x.dtype)
    return x + emb


class ResidualConvUnit(nn.Module):
    """ReLU-conv-ReLU-conv with a skip connection.

    The published model applies an in-place ReLU to the block input, so the skip path
    carries ``relu(x)`` rather than ``x``; this reproduces that explicitly.
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1, bias=True)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        return self.conv2(F.relu(self.conv1(x))) + x


class FeatureFusionBlock(nn.Module):
    """Merge a coarser path with a skip feature, refine, upsample, and mix with a 1x1 conv."""

    def __init__(self, features: int, has_residual: bool = True) -> None:
        super().__init__()
        self.has_residual = has_residual
        if has_residual:
            self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)
        self.out_conv = nn.Conv2d(features, features, 1, bias=True)

    def forward(self, x: torch.Tensor, skip: Optional[torch.Tensor] = None, size=None) -> torch.Tensor:
        if self.has_residual and skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        if size is None:
            size = (x.shape[-2] * 2, x.shape[-1] * 2)
        return self.out_conv(resize_bilinear(x, size))


# Activations of the prediction channels and of the confidence channel (``feature_only=False``).
VALUE_ACTIVATIONS = {"exp": torch.exp, "linear": lambda x: x}
CONF_ACTIVATIONS = {"expp1": lambda c: 1 + c.exp(), "expp0": torch.exp, "sigmoid": torch.sigmoid}


class DPTHead(nn.Module):
    """DPT decoder with the published key layout (``norm``, ``projects``, ``resize_layers``, ``scratch.*``).

    With ``feature_only=False`` the extra ``output_conv2`` stack is built and the forward
    returns ``(value [B, S, H, W, output_dim - 1], confidence [B, S, H, W])`` after
    ``activation`` / ``conf_activation`` (VGGT's depth head: ``output_dim=2``, ``"exp"``,
    ``"expp1"``).
    """

    def __init__(
        self,
        dim_in: int,
        patch_size: int = 14,
        output_dim: int = 4,
        features: int = 256,
        out_channels: Sequence[int] = (256, 512, 1024, 1024),
        intermediate_layer_idx: Sequence[int] = (4, 11, 17, 23),
        pos_embed: bool = True,
        feature_only: bool = False,
        down_ratio: int = 1,
        activation: str = "exp",
        conf_activation: str = "expp1",
    ) -> None:
        super().__init__()
        if not feature_only:
            if activation not in VALUE_ACTIVATIONS:
                raise ValueError(f"unknown DPT activation {activation!r}; expected one of {sorted(VALUE_ACTIVATIONS)}")
            if conf_activation not in CONF_ACTIVATIONS:
                raise ValueError(
                    f"unknown DPT confidence activation {conf_activation!r}; expected one of {sorted(CONF_ACTIVATIONS)}"
                )
            if output_dim < 2:
                raise ValueError(f"a predicting DPT head needs output_dim >= 2 (value + confidence), got {output_dim}")
        self.activation = activation
        self.conf_activation = conf_activation
        self.patch_size = patch_size
        self.pos_embed = pos_embed
        self.feature_only = feature_only
        self.down_ratio = down_ratio
        self.intermediate_layer_idx = list(intermediate_layer_idx)
        oc = list(out_channels)

        self.norm = nn.LayerNorm(dim_in)
        self.projects = nn.ModuleList([nn.Conv2d(dim_in, c, kernel_size=1) for c in oc])
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(oc[0], oc[0], kernel_size=4, stride=4),
                nn.ConvTranspose2d(oc[1], oc[1], kernel_size=2, stride=2),
                nn.Identity(),
                nn.Conv2d(oc[3], oc[3], kernel_size=3, stride=2, padding=1),
            ]
        )
        self.scratch = nn.Module()
        for i, c in enumerate(oc, start=1):
            setattr(self.scratch, f"layer{i}_rn", nn.Conv2d(c, features, 3, padding=1, bias=False))
        self.scratch.refinenet1 = FeatureFusionBlock(features)
        self.scratch.refinenet2 = FeatureFusionBlock(features)
        self.scratch.refinenet3 = FeatureFusionBlock(features)
        self.scratch.refinenet4 = FeatureFusionBlock(features, has_residual=False)
        if feature_only:
            self.scratch.output_conv1 = nn.Conv2d(features, features, 3, padding=1)
        else:
            self.scratch.output_conv1 = nn.Conv2d(features, features // 2, 3, padding=1)
            self.scratch.output_conv2 = nn.Sequential(
                nn.Conv2d(features // 2, 32, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(32, output_dim, 1),
            )

    def forward(
        self,
        tokens_list: List[torch.Tensor],
        images: torch.Tensor,
        patch_start_idx: int,
        frames_chunk_size: Optional[int] = 8,
    ):
        """Decode the token layers: features ``[B, S, C, H/down, W/down]`` (``feature_only``)
        or ``(value, confidence)`` (see the class). Frames are processed
        ``frames_chunk_size`` at a time to bound memory (the result does not depend on it)."""
        b, s, _, h, w = images.shape
        step = s if not frames_chunk_size or frames_chunk_size >= s else int(frames_chunk_size)
        chunks = [self._decode(tokens_list, h, w, patch_start_idx, i, min(i + step, s)) for i in range(0, s, step)]
        if self.feature_only:
            return chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=1)
        if len(chunks) == 1:
            return chunks[0]
        return tuple(torch.cat(parts, dim=1) for parts in zip(*chunks))

    def _decode(self, tokens_list, h: int, w: int, patch_start_idx: int, f0: int, f1: int) -> torch.Tensor:
        ph, pw = h // self.patch_size, w // self.patch_size
        maps = []
        for i, layer in enumerate(self.intermediate_layer_idx):
            t = tokens_list[layer]
            if t is None:
                raise ValueError(f"token layer {layer} is needed by the DPT head but was not kept")
            t = t[:, f0:f1, patch_start_idx:]
            b, s = t.shape[:2]
            x = self.norm(t.reshape(b * s, -1, t.shape[-1]))
            proj = self.projects[i]
            weight = proj.weight.view(proj.out_channels, -1)
            if takes_fast_path(x, weight):
                # the 1x1 projection as a product over the tokens (oneDNN, CPU float32),
                # before the tokens are laid out as a grid: no copy of the wide map
                x = linear(x, weight, proj.bias).permute(0, 2, 1).reshape(b * s, proj.out_channels, ph, pw)
            else:
                # elsewhere (float64 parity, CUDA, training) the reference's own convolution:
                # a product over the tokens sums in another order, and the tracker's
                # iterations amplify that in float64 beyond its tolerance (SSE4.2: 1.3e-8)
                x = proj(x.permute(0, 2, 1).reshape(b * s, x.shape[-1], ph, pw))
            if self.pos_embed:
                x = add_uv_pos_embed(x, w, h)
            maps.append(self.resize_layers[i](x))

        out = self._fuse(maps)
        out_size = (int(ph * self.patch_size / self.down_ratio), int(pw * self.patch_size / self.down_ratio))
        out = resize_bilinear(out, out_size)
        if self.pos_embed:
            out = add_uv_pos_embed(out, w, h)
        if self.feature_only:
            return out.reshape(b, s, *out.shape[1:])
        return self._predict(self.scratch.output_conv2(out), b, s)

    def _predict(self, out: torch.Tensor, b: int, s: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """``[b*s, C, H, W]`` raw output -> activated value ``[b, s, H, W, C-1]`` and confidence ``[b, s, H, W]``."""
        out = out.permute(0, 2, 3, 1)
        value = VALUE_ACTIVATIONS[self.activation](out[..., :-1])
        conf = CONF_ACTIVATIONS[self.conf_activation](out[..., -1])
        return value.reshape(b, s, *value.shape[1:]), conf.reshape(b, s, *conf.shape[1:])

    def _fuse(self, maps: List[torch.Tensor]) -> torch.Tensor:
        sc = self.scratch
        l1, l2, l3, l4 = sc.layer1_rn(maps[0]), sc.layer2_rn(maps[1]), sc.layer3_rn(maps[2]), sc.layer4_rn(maps[3])
        out = sc.refinenet4(l4, size=l3.shape[2:])
        out = sc.refinenet3(out, l3, size=l2.shape[2:])
        out = sc.refinenet2(out, l2, size=l1.shape[2:])
        out = sc.refinenet1(out, l1)
        return sc.output_conv1(out)
