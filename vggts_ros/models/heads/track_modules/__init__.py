"""Building blocks of VGGT's iterative point tracker."""

from .base_track_predictor import BaseTrackerPredictor
from .blocks import CorrBlock, EfficientUpdateFormer

__all__ = ["BaseTrackerPredictor", "CorrBlock", "EfficientUpdateFormer"]
