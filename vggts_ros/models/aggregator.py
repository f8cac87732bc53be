"""VGGT aggregator: per-frame patch tokens refined by alternating frame and global attention.

Each frame is embedded (DINOv2 or a single convolution), prefixed with one camera token
and a few register tokens, and then passed through ``depth`` pairs of blocks: a *frame*
block attends within each image, a *global* block attends across all images of the
sequence. The first frame gets its own learned camera/register tokens so the network
knows which view is the reference. After every pair, the frame and global outputs are
concatenated along channels; that per-layer list is what the heads consume.
"""

from __future__ import annotations

from typing import Iterable, List, Optional, Tuple

import torch
from torch import nn

from ..config import AggregatorConfig
from .layers import Block, PatchEmbed, RotaryPositionEmbedding2D, build_dinov2, grid_positions
from .layers.vision_transformer import DINOV2_VARIANTS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _per_frame_tokens(param: torch.Tensor, batch: int, frames: int) -> torch.Tensor:
    """Pick variant 0 for the first frame and variant 1 for the others: ``[1,2,X,C] -> [B*S,X,C]``."""
    first = param[:, :1].expand(batch, 1, *param.shape[2:])
    rest = param[:, 1:2].expand(batch, frames - 1, *param.shape[2:])
    return torch.cat((first, rest), dim=1).reshape(batch * frames, *param.shape[2:])


class Aggregator(nn.Module):
    """Alternating-attention transformer over ``[B, S, 3, H, W]`` images in ``[0, 1]``."""

    def __init__(self, cfg: Optional[AggregatorConfig] = None) -> None:
        super().__init__()
        cfg = cfg or AggregatorConfig()
        self.cfg = cfg
        if cfg.depth % cfg.aa_block_size:
            raise ValueError(f"depth {cfg.depth} is not divisible by aa_block_size {cfg.aa_block_size}")
        for kind in cfg.aa_order:
            if kind not in ("frame", "global"):
                raise ValueError(f"unknown attention type {kind!r} in aa_order")
        self.patch_size = cfg.patch_size
        self.embed_dim = cfg.embed_dim
        self.depth = cfg.depth
        self.aa_order = list(cfg.aa_order)
        self.aa_block_size = cfg.aa_block_size

        if "conv" in cfg.patch_embed:
            self.patch_embed = PatchEmbed(cfg.img_size, cfg.patch_size, 3, cfg.embed_dim)
        else:
            width = DINOV2_VARIANTS.get(cfg.patch_embed, (None,))[0]
            if width is not None and width != cfg.embed_dim:
                raise ValueError(
                    f"patch embed {cfg.patch_embed} has width {width} but embed_dim is {cfg.embed_dim}"
                )
            self.patch_embed = build_dinov2(
                cfg.patch_embed, cfg.img_size, cfg.patch_size, cfg.num_register_tokens, depth=cfg.patch_embed_depth
            )

        self.rope = RotaryPositionEmbedding2D(cfg.rope_freq) if cfg.rope_freq > 0 else None

        def make_block() -> Block:
            return Block(
                cfg.embed_dim,
                cfg.num_heads,
                mlp_ratio=cfg.mlp_ratio,
                init_values=cfg.init_values,
                qk_norm=cfg.qk_norm,
                rope=self.rope,
                onednn=True,  # the oneDNN float32 path for the products (models/cpu_linear.py)
            )

        self.frame_blocks = nn.ModuleList([make_block() for _ in range(cfg.depth)])
        self.global_blocks = nn.ModuleList([make_block() for _ in range(cfg.depth)])

        self.camera_token = nn.Parameter(torch.zeros(1, 2, 1, cfg.embed_dim))
        self.register_token = nn.Parameter(torch.zeros(1, 2, cfg.num_register_tokens, cfg.embed_dim))
        nn.init.normal_(self.camera_token, std=1e-6)
        nn.init.normal_(self.register_token, std=1e-6)
        self.patch_start_idx = 1 + cfg.num_register_tokens

    def _positions(self, n: int, h: int, w: int, device) -> Optional[torch.Tensor]:
        """RoPE positions: patches at (row+1, col+1), special tokens all at (0, 0)."""
        if self.rope is None:
            return None
        patches = grid_positions(n, h // self.patch_size, w // self.patch_size, device) + 1
        special = torch.zeros(n, self.patch_start_idx, 2, dtype=patches.dtype, device=device)
        return torch.cat((special, patches), dim=1)

    def forward(
        self, images: torch.Tensor, keep_layers: Optional[Iterable[int]] = None
    ) -> Tuple[List[Optional[torch.Tensor]], int]:
        """Return ``(tokens_per_layer, patch_start_idx)``.

        ``tokens_per_layer[i]`` is ``[B, S, P, 2C]`` (frame output then global output of
        layer ``i``). With ``keep_layers`` only those indices are materialised and the rest
        are ``None``, which saves memory when only a few layers are consumed.
        """
        if images.dim() != 5 or images.shape[2] != 3:
            raise ValueError(f"images must be [B, S, 3, H, W], got {tuple(images.shape)}")
        b, s, _, h, w = images.shape
        keep = None if keep_layers is None else {int(i) % self.depth for i in keep_layers}

        # Constants are made on the fly (not buffers) so a model built on the meta device and
        # materialised with ``to_empty`` needs nothing beyond its checkpoint.
        # They are float32 values in every precision (as the published model's buffers are).
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).to(images.device, images.dtype).view(1, 1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=torch.float32).to(images.device, images.dtype).view(1, 1, 3, 1, 1)
        x = (images - mean) / std
        patches = self.patch_embed(x.reshape(b * s, 3, h, w))
        c = patches.shape[-1]
        cam = _per_frame_tokens(self.camera_token, b, s).to(patches.dtype)
        reg = _per_frame_tokens(self.register_token, b, s).to(patches.dtype)
        tokens = torch.cat((cam, reg, patches), dim=1)
        p = tokens.shape[1]
        pos = self._positions(b * s, h, w, images.device)
        pos_global = None if pos is None else pos.reshape(b, s * p, 2)

        outputs: List[Optional[torch.Tensor]] = []
        frame_idx = global_idx = 0
        for _ in range(self.depth // self.aa_block_size):
            per_kind = {"frame": [], "global": []}
            for kind in self.aa_order:
                for _ in range(self.aa_block_size):
                    if kind == "frame":
                        tokens = self.frame_blocks[frame_idx](tokens.reshape(b * s, p, c), pos=pos)
                        frame_idx += 1
                    else:
                        tokens = self.global_blocks[global_idx](tokens.reshape(b, s * p, c), pos=pos_global)
                        global_idx += 1
                    per_kind[kind].append(tokens.reshape(b, s, p, c))
            for frame_out, global_out in zip(per_kind["frame"], per_kind["global"]):
                layer = len(outputs)
                outputs.append(torch.cat((frame_out, global_out), dim=-1) if keep is None or layer in keep else None)
        return outputs, self.patch_start_idx
