"""VGGT heads used by this project: the DPT feature decoder and the track head."""

from .dpt_head import DPTHead
from .track_head import TrackHead

__all__ = ["DPTHead", "TrackHead"]
