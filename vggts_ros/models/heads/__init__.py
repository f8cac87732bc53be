"""VGGT heads used by this project: the DPT decoder (track features, depth), the track head
and the camera head."""

from .camera_head import CameraHead
from .dpt_head import DPTHead
from .track_head import TrackHead

__all__ = ["CameraHead", "DPTHead", "TrackHead"]
