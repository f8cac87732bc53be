"""Transformer building blocks shared by the VGGT aggregator and its DINOv2 patch embedding."""

from .attention import Attention
from .block import Block
from .layer_scale import LayerScale
from .mlp import Mlp
from .patch_embed import PatchEmbed
from .rope import RotaryPositionEmbedding2D, grid_positions
from .vision_transformer import DINOV2_VARIANTS, DinoVisionTransformer, build_dinov2

__all__ = [
    "Attention",
    "Block",
    "LayerScale",
    "Mlp",
    "PatchEmbed",
    "RotaryPositionEmbedding2D",
    "grid_positions",
    "DINOV2_VARIANTS",
    "DinoVisionTransformer",
    "build_dinov2",
]
