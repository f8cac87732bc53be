"""The VGGT-S Union Segmentation Head (``Predictor`` of the reference release).

Given the backbone's tracking feature maps of a (source, target) pair, point prompts in
both views and the source mask, it predicts target-view mask logits. Its state dict is
exactly that of ``main_exp.pth`` (``prompt_encoder.*``, ``mask_decoder.*``).

Inference is split in two so that iterative refinement is cheap: :meth:`encode` computes
everything that does not depend on the previous target prediction (prompt tokens, the
source mask embedding, positional encodings, the first block's coarse source map), and
:meth:`decode` runs the transformer and mask head for one pass. ``forward`` is one
``encode`` followed by one ``decode``; several passes (with the reference's accumulating
point identity) are :func:`~.refinement.decode_with_refinement`, also used by ``predict``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...checkpoint import load_exact, read_state_dict, resolve_checkpoint
from ...config import HeadConfig
from .mask_decoder import MaskDecoder
from .point_features import sample_point_features
from .prompt_encoder import PromptEncoder
from .refinement import decode_with_refinement
from .two_way_transformer import TwoWayTransformer

CHECKPOINT_FILENAME = "main_exp.pth"
# Binary source masks enter the mask encoder as saturated logits.
MASK_LOGIT = 30.0
# Low-resolution logits are clamped to this range before being fed back.
LOW_RES_CLAMP = 32.0


@dataclass
class HeadContext:
    """Per-pair state reused by every refinement pass (see :meth:`UnionSegmentationHead.encode`)."""

    tokens: Tensor  # [B, 1 + 3N, C] mask token + prompt tokens
    src_map: Tensor  # [B, C, g, g] source features + source mask embedding
    tar_feat: Tensor  # [B, C, g, g] target features
    ca_pe: Tensor  # [1, 2 g^2, C]
    sa_pe: Tensor  # [1, 2 s^2, C * ratio]
    src_down0: Tensor  # [B, s, s, C * ratio] first block's coarse source cells
    out_hw: Tuple[int, int]  # size of the full-resolution logits


class UnionSegmentationHead(nn.Module):
    def __init__(self, cfg: Optional[HeadConfig] = None) -> None:
        super().__init__()
        cfg = HeadConfig() if cfg is None else cfg
        self.cfg = cfg
        grid = cfg.img_size // 2
        if cfg.sa_tokens <= 0 or grid // cfg.sa_tokens < 2:
            raise ValueError(f"sa_tokens={cfg.sa_tokens} too large for img_size={cfg.img_size}")
        self.sa_ratio = grid // cfg.sa_tokens
        if self.sa_ratio * cfg.sa_tokens != grid:
            raise ValueError(
                f"feature grid {grid} (img_size // 2) is not sa_tokens * ratio "
                f"({cfg.sa_tokens} * {self.sa_ratio})"
            )
        self.prompt_encoder = PromptEncoder(cfg.embed_dim, cfg.img_size, cfg.sa_tokens, self.sa_ratio)
        transformer = TwoWayTransformer(cfg.blocks, cfg.embed_dim, cfg.num_heads, self.sa_ratio)
        self.mask_decoder = MaskDecoder(cfg.embed_dim, transformer)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        source: Union[str, os.PathLike] = "zbbhhh/VGGT-S",
        cfg: Optional[HeadConfig] = None,
        device: Union[str, torch.device, None] = None,
    ) -> "UnionSegmentationHead":
        """Build the head and load ``main_exp.pth`` from a file, a directory or a HF repo id.

        Raises :class:`vggts_ros.checkpoint.CheckpointError` naming any missing, unexpected
        or mis-shaped key.
        """
        path = resolve_checkpoint(source, CHECKPOINT_FILENAME)
        state = read_state_dict(path)
        with torch.device("meta"):
            model = cls(cfg)
        model = model.to_empty(device="cpu")
        load_exact(model, state, what=f"VGGT-S head checkpoint {path}")
        model.eval()
        return model.to(device) if device is not None else model

    # ------------------------------------------------------------------ inference
    @property
    def grid(self) -> int:
        return self.cfg.img_size // 2

    @property
    def dtype(self) -> torch.dtype:
        """Parameter dtype: the head computes in float32, or in float64 after ``.double()``."""
        return self.prompt_encoder.src_point_pe.weight.dtype

    def _mask_logits(self, src_mask: Union[Tensor, np.ndarray], device: torch.device) -> Tensor:
        m = torch.as_tensor(np.asarray(src_mask) if isinstance(src_mask, np.ndarray) else src_mask)
        m = m.to(device=device, dtype=self.dtype)
        if m.dim() == 4 and m.shape[1] == 1:
            m = m[:, 0]
        if m.dim() != 3:
            raise ValueError(f"src_mask must be [B, H, W], got {tuple(m.shape)}")
        # +-MASK_LOGIT exactly, in the head's dtype.
        return ((m > 0.5).to(m.dtype) * (2 * MASK_LOGIT) - MASK_LOGIT).unsqueeze(1)

    def encode(
        self,
        feat_map: Tensor,
        src_points: Tensor,
        tar_points: Tensor,
        src_mask: Union[Tensor, np.ndarray],
        src_points_feat: Optional[Tensor] = None,
    ) -> HeadContext:
        """Prepare one batch of (source, target) pairs.

        feat_map: ``[B, 2, C, g, g]`` tracking features, frame 0 = source, 1 = target,
        ``g = img_size // 2``. src_points / tar_points: ``[B, N, 2]`` (x, y) pixels of the
        ``img_size`` inputs. src_mask: ``[B, H, W]`` binary (``> 0.5`` is object), H = W =
        img_size. src_points_feat: ``[B, N, C]``; by default sampled bilinearly from the
        source features at ``src_points``.
        """
        g = self.grid
        if feat_map.dim() != 5 or feat_map.shape[1] != 2 or tuple(feat_map.shape[-2:]) != (g, g):
            raise ValueError(f"feat_map must be [B, 2, C, {g}, {g}], got {tuple(feat_map.shape)}")
        dtype = self.dtype
        feat_map = feat_map.to(dtype)
        device = feat_map.device
        src_points = src_points.to(device=device, dtype=dtype)
        tar_points = tar_points.to(device=device, dtype=dtype)
        if src_points_feat is None:
            size = self.cfg.img_size
            src_points_feat = sample_point_features(feat_map[:, 0], src_points, (size, size))
        src_points_feat = src_points_feat.to(device=device, dtype=dtype)

        pe = self.prompt_encoder
        mask_logits = self._mask_logits(src_mask, device)
        src_map = feat_map[:, 0] + pe.embed_mask(mask_logits)
        tokens = self.mask_decoder.prepend_mask_token(pe.point_tokens(src_points, tar_points, src_points_feat))
        return HeadContext(
            tokens=tokens,
            src_map=src_map,
            tar_feat=feat_map[:, 1],
            ca_pe=pe.cross_attn_pe(),
            sa_pe=pe.self_attn_pe(),
            src_down0=self.mask_decoder.transformer.first_source_downsample(src_map),
            out_hw=(int(mask_logits.shape[-2]), int(mask_logits.shape[-1])),
        )

    def decode(self, ctx: HeadContext, prev_low_res: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """One pass. ``prev_low_res``: the previous pass's low-res logits (``None`` on the
        first pass). Returns (full-resolution logits ``[B, 1, H, W]``, clamped low-res
        logits ``[B, 1, 4g, 4g]``)."""
        tar_map = ctx.tar_feat
        if prev_low_res is not None:
            tar_map = tar_map + self.prompt_encoder.embed_low_res(prev_low_res.to(tar_map.device))
        low = self.mask_decoder(ctx.tokens, ctx.src_map, tar_map, ctx.ca_pe, ctx.sa_pe, ctx.src_down0)
        full = F.interpolate(low, size=ctx.out_hw, mode="bilinear", align_corners=False)
        return full, low.clamp(-LOW_RES_CLAMP, LOW_RES_CLAMP)

    def add_point_feature_identity(self, ctx: HeadContext, detach: bool = False) -> HeadContext:
        """A context whose source-point feature tokens carry the source-point identity
        embedding once more (``detach``: without a gradient path to it).

        The reference ``PromptEncoder`` adds that embedding to the caller's feature tensor
        in place, so a caller passing the same tensor to every refinement pass sees it
        accumulate (pass k carries it k + 1 times). :func:`decode_with_refinement` calls
        this between passes in its default ``identity="accumulate"`` mode.
        """
        n = (ctx.tokens.shape[1] - 1) // 3
        pe = self.prompt_encoder.src_point_pe.weight.view(1, 1, -1)
        extra = torch.zeros_like(ctx.tokens)
        extra[:, 1 + 2 * n :, :] = pe.detach() if detach else pe
        return replace(ctx, tokens=ctx.tokens + extra)

    def forward(
        self,
        feat_map: Tensor,
        src_points: Tensor,
        tar_points: Tensor,
        src_mask: Union[Tensor, np.ndarray],
        prev_low_res: Optional[Tensor] = None,
        src_points_feat: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tensor]:
        """``decode(encode(...), prev_low_res)``; see those methods."""
        ctx = self.encode(feat_map, src_points, tar_points, src_mask, src_points_feat)
        return self.decode(ctx, prev_low_res)

    def predict(
        self,
        feat_map: Tensor,
        src_points: Tensor,
        tar_points: Tensor,
        src_mask: Union[Tensor, np.ndarray],
        refine_iterations: int = 1,
        src_points_feat: Optional[Tensor] = None,
        identity: str = "accumulate",
    ) -> Tuple[Tensor, Tensor]:
        """First pass plus ``refine_iterations`` refinement passes; returns the last pass.
        ``identity``: point-identity semantics of :func:`decode_with_refinement`
        (``"accumulate"``, the reference's, by default)."""
        ctx = self.encode(feat_map, src_points, tar_points, src_mask, src_points_feat)
        return decode_with_refinement(self, ctx, refine_iterations, identity)
