"""Plain data types exchanged between the segmentation backends, the CLI and the node.

Conventions: images are ``HxWx3`` ``uint8`` RGB NumPy arrays, masks ``HxW`` (nonzero =
object), points are ``(x, y)`` in pixels of the image they belong to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, List, Optional, Protocol, Sequence

import numpy as np

from vggts_ros.config import ROLES  # noqa: F401  (camera roles, declared with the camera settings)

if TYPE_CHECKING:  # pragma: no cover
    from vggts_ros.geometry.camera import ViewGeometry
    from vggts_ros.stream import StreamState, StreamStep
    from vggts_ros.geometry.objects3d import Object3D

# Targets whose view is wide and far away get the square crop around the projected
# points before decoding; close views are resized whole (SPEC pipeline step 3).
CROPPED_ROLES = ("exo", "aerial", "ground")


@dataclass
class TargetView:
    image: np.ndarray
    role: str = "exo"
    name: str = ""

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"unknown camera role {self.role!r}; expected one of {ROLES}")


@dataclass
class SegmentationResult:
    """What one (source, target) decode produces, in target-frame pixels."""

    mask: np.ndarray  # HxW bool, the target frame's size
    source_points: np.ndarray  # Nx2 float32, source pixels
    target_points: np.ndarray  # Nx2 float32, target pixels
    visibility: np.ndarray  # N float32 in [0, 1]
    confidence: np.ndarray  # N float32 in [0, 1]
    score: float = 0.0  # mean foreground probability inside the mask (0 when empty)
    logits: Optional[np.ndarray] = None  # HxW float32 when the backend has them
    timings: dict = field(default_factory=dict)  # stage -> seconds
    # The object in 3D in this target camera's optical frame (vggts_ros.geometry.objects3d.Object3D)
    # when the caller had depth for it (vggts_ros.geometry.results3d.results_in_3d, the set
    # processor's 3D step); None otherwise.
    object3d: Optional["Object3D"] = None
    # Which method produced the mask (backend specific, e.g. the geometric backend's
    # "object_features" or "scene_homography+colour"), and why it is empty when it is.
    path: str = ""
    reason: str = ""
    # VGGT's geometry heads (PipelineConfig.geometry_heads): the target camera's and the
    # source camera's vggts_ros.geometry.camera.ViewGeometry, None when off (or when a
    # reused target skipped the first pass).
    geometry: Optional["ViewGeometry"] = None
    source_geometry: Optional["ViewGeometry"] = None


class Segmentor(Protocol):
    """Any backend that finds the source object in other views (the VGGT-S pipeline, the
    weight-free geometric backend, a test backend). Every method a caller uses is here.

    ``init_stream()`` returns the caller-owned state of one stream
    (:class:`vggts_ros.stream.StreamState`); ``segment_objects(..., state=, step=)`` uses it
    for one synchronised set (a :class:`vggts_ros.stream.StreamStep`); without them a call is
    stateless. ``result[o][t]`` is object ``o`` in target ``t``.
    """

    name: str

    def init_stream(self) -> "StreamState":
        ...

    def segment(
        self, source_image: np.ndarray, source_mask: np.ndarray, targets: Sequence[TargetView]
    ) -> List[SegmentationResult]:
        ...

    def segment_objects(
        self, source_image: np.ndarray, masks: Sequence[np.ndarray], targets: Sequence[TargetView],
        *, state: Optional["StreamState"] = None, step: Optional["StreamStep"] = None,
    ) -> List[List[SegmentationResult]]:
        ...
