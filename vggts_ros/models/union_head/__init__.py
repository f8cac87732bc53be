"""Union Segmentation Head of VGGT-S (prompt encoder, two-way transformer, mask decoder)."""

from .point_features import sample_point_features
from .refinement import IDENTITY_MODES, check_identity, decode_with_refinement
from .union_head import CHECKPOINT_FILENAME, HeadContext, UnionSegmentationHead

__all__ = [
    "CHECKPOINT_FILENAME",
    "HeadContext",
    "IDENTITY_MODES",
    "UnionSegmentationHead",
    "check_identity",
    "decode_with_refinement",
    "sample_point_features",
]
