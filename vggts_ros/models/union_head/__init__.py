"""Union Segmentation Head of VGGT-S (prompt encoder, two-way transformer, mask decoder)."""

from .point_features import sample_point_features
from .union_head import CHECKPOINT_FILENAME, HeadContext, UnionSegmentationHead

__all__ = ["CHECKPOINT_FILENAME", "HeadContext", "UnionSegmentationHead", "sample_point_features"]
