"""Update transformer and correlation lookup of the iterative point tracker."""

from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .modules import AttnBlock, CrossAttnBlock
from .utils import grid_scale, to_grid_coords


class EfficientUpdateFormer(nn.Module):
    """Alternates attention along time (per track) with attention across tracks routed
    through a small set of learned "virtual" tracks (tracks -> virtual -> virtual self ->
    tracks), then predicts coordinate and feature updates.

    The learned virtual tokens keep the published (misspelt) name ``virual_tracks``.
    """

    def __init__(
        self,
        space_depth: int = 6,
        time_depth: int = 6,
        input_dim: int = 320,
        hidden_size: int = 384,
        num_heads: int = 8,
        output_dim: int = 130,
        mlp_ratio: float = 4.0,
        add_space_attn: bool = True,
        num_virtual_tracks: int = 64,
    ) -> None:
        super().__init__()
        self.add_space_attn = add_space_attn
        self.num_virtual_tracks = num_virtual_tracks
        self.input_norm = nn.LayerNorm(input_dim)
        self.input_transform = nn.Linear(input_dim, hidden_size)
        self.output_norm = nn.LayerNorm(hidden_size)
        self.flow_head = nn.Linear(hidden_size, output_dim)
        self.time_blocks = nn.ModuleList(
            [AttnBlock(hidden_size, num_heads, mlp_ratio=mlp_ratio) for _ in range(time_depth)]
        )
        if add_space_attn:
            if space_depth < 1 or time_depth < space_depth:
                raise ValueError("need 1 <= space_depth <= time_depth when space attention is on")
            self.virual_tracks = nn.Parameter(torch.randn(1, num_virtual_tracks, 1, hidden_size))
            self.space_virtual_blocks = nn.ModuleList(
                [AttnBlock(hidden_size, num_heads, mlp_ratio=mlp_ratio) for _ in range(space_depth)]
            )
            self.space_point2virtual_blocks = nn.ModuleList(
                [CrossAttnBlock(hidden_size, num_heads, mlp_ratio=mlp_ratio) for _ in range(space_depth)]
            )
            self.space_virtual2point_blocks = nn.ModuleList(
                [CrossAttnBlock(hidden_size, num_heads, mlp_ratio=mlp_ratio) for _ in range(space_depth)]
            )
            self.space_every = time_depth // space_depth
        else:
            self.virual_tracks = None

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x [B, N, T, input_dim] -> [B, N, T, output_dim]`` (N tracks, T frames)."""
        tokens = self.input_transform(self.input_norm(x))
        initial = tokens
        b, n_real, t, c = tokens.shape
        if self.add_space_attn:
            virtual = self.virual_tracks.expand(b, -1, t, -1).to(tokens.dtype)
            tokens = torch.cat((tokens, virtual), dim=1)
        n = tokens.shape[1]
        space_idx = 0
        for i, time_block in enumerate(self.time_blocks):
            tokens = time_block(tokens.reshape(b * n, t, c)).view(b, n, t, c)
            if self.add_space_attn and i % self.space_every == 0 and space_idx < len(self.space_virtual_blocks):
                per_frame = tokens.permute(0, 2, 1, 3).reshape(b * t, n, c)
                points, virtual = per_frame[:, :n_real], per_frame[:, n_real:]
                virtual = self.space_virtual2point_blocks[space_idx](virtual, points, mask=mask)
                virtual = self.space_virtual_blocks[space_idx](virtual)
                points = self.space_point2virtual_blocks[space_idx](points, virtual, mask=mask)
                tokens = torch.cat((points, virtual), dim=1).view(b, t, n, c).permute(0, 2, 1, 3)
                space_idx += 1
        tokens = tokens[:, :n_real] + initial
        return self.flow_head(self.output_norm(tokens))


class CorrBlock:
    """Multi-scale correlation lookup around each track's current position.

    Level ``l`` is the feature map average-pooled ``l`` times by 2. For every track and
    frame the correlation ``<target, feature> / sqrt(C)`` is read on a ``(2r+1)^2`` window
    of bilinear positions with zero padding; the window is ordered with the x offset
    varying slowest, as in the published model.

    ``mode="volume"`` (default) builds each level's full ``N x H x W`` correlation volume
    and samples it, the reference order of operations. ``mode="window"`` samples the
    features on the window and takes the dot products afterwards: mathematically the same
    (bilinear sampling is linear) but ``O(N * window)`` instead of ``O(N * H * W)`` memory;
    it differs only by float rounding, which the iterative updates can amplify.
    """

    MODES = ("volume", "window")

    def __init__(self, fmaps: torch.Tensor, num_levels: int = 4, radius: int = 4, mode: str = "volume") -> None:
        if mode not in self.MODES:
            raise ValueError(f"unknown correlation mode {mode!r}; expected one of {self.MODES}")
        b, s, c, h, w = fmaps.shape
        self.mode = mode
        self.radius = radius
        self.pyramid: List[torch.Tensor] = [fmaps.reshape(b * s, c, h, w)]
        for _ in range(num_levels - 1):
            self.pyramid.append(F.avg_pool2d(self.pyramid[-1], kernel_size=2, stride=2))
        steps = torch.linspace(-radius, radius, 2 * radius + 1, device=fmaps.device, dtype=fmaps.dtype)
        self.offsets = torch.stack(torch.meshgrid(steps, steps, indexing="ij"), dim=-1)  # [K1, K1, 2]
        # Grid-sample scale factors of every level, built once on the device: corr_sample runs
        # inside the tracker's iteration loop, where a host-built tensor would sync the stream.
        self.scales = [grid_scale(*f.shape[-2:], device=fmaps.device, dtype=fmaps.dtype) for f in self.pyramid]

    def corr_sample(self, targets: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """``targets [B, S, N, C]``, ``coords [B, S, N, 2]`` (level-0 pixels) -> ``[B, S, N, levels*(2r+1)^2]``."""
        b, s, n, c = targets.shape
        k1 = 2 * self.radius + 1
        offsets = self.offsets.to(coords.dtype)
        scale = c**0.5
        out = []
        for level, fmap in enumerate(self.pyramid):
            h, w = fmap.shape[-2:]
            centre = coords.reshape(b * s * n, 1, 1, 2) / (2**level)
            window = to_grid_coords(
                (centre + offsets[None]).detach().to(fmap.dtype), h, w, self.scales[level].to(fmap.dtype)
            )  # [BSN, K1, K1, 2]
            if self.mode == "volume":
                volume = torch.matmul(targets, fmap.view(b, s, c, h * w)) / scale  # [B, S, N, HW]
                picked = F.grid_sample(
                    volume.reshape(b * s * n, 1, h, w), window, padding_mode="zeros", align_corners=True
                )
                out.append(picked.reshape(b, s, n, k1 * k1))
            else:
                grid = window.reshape(b * s, n, k1 * k1, 2)
                feats = F.grid_sample(fmap, grid, padding_mode="zeros", align_corners=True)  # [BS, C, N, K]
                corr = torch.einsum("bcnk,bnc->bnk", feats, targets.reshape(b * s, n, c)) / scale
                out.append(corr.reshape(b, s, n, k1 * k1))
        return torch.cat(out, dim=-1)
