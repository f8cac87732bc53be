"""Projected points as 3-D markers and camera intrinsics for RViz/Foxglove, without ROS.

RViz's Camera display (and Foxglove's image panel) draws 3-D markers through the
camera's ``CameraInfo``. A pixel ``(u, v)`` placed on its viewing ray, at any depth in
the camera's optical frame (x right, y down, z forward), is drawn exactly on that pixel.
So the projected points of each object become a POINTS marker on those rays at a fixed
depth, plus a text label, in the target camera's frame: they line up with the image
and the mask overlay. These functions build the marker contents; the node fills the
``visualization_msgs/Marker`` fields from them.

When a camera publishes no ``CameraInfo``, :func:`nominal_intrinsics` gives a pinhole
model of the image size (principal point at the centre, a stated field of view) to
publish alongside the masks, so that images, masks and markers still agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from vggts_ros.visualize import color_of


@dataclass
class MarkerSpec:
    """Contents of one marker: ``kind`` is ``points`` or ``text`` (positions in metres in
    the camera's optical frame, colour RGBA in 0..1)."""

    ns: str
    id: int
    kind: str
    positions: np.ndarray  # Nx3
    color: Tuple[float, float, float, float]
    scale: float
    text: str = ""


@dataclass
class ObjectPointsView:
    """What the markers of one object in one target camera need."""

    object_id: int
    target_xy: np.ndarray  # Nx2 pixels
    visibility: np.ndarray  # N in [0, 1]
    label: str = ""
    extra: Dict = field(default_factory=dict)


def check_intrinsics(K: np.ndarray) -> np.ndarray:
    K = np.asarray(K, np.float64).reshape(3, 3)
    if not (K[0, 0] > 0 and K[1, 1] > 0 and np.isfinite(K).all()):
        raise ValueError(f"camera matrix must have positive focal lengths, got fx={K[0, 0]}, fy={K[1, 1]}")
    return K


def projection_matrix(matrix: np.ndarray) -> np.ndarray:
    """A 3x4 projection ``P`` from a ``CameraInfo`` ``P`` (12 values) or ``K`` (9 values, as
    ``[K | 0]``). ``P`` is what RViz's Camera display and Foxglove project with: for a
    rectified or stereo camera it differs from ``K`` (other focal lengths and principal
    point, and ``P[3] = -fx * baseline`` for a right camera)."""
    m = np.asarray(matrix, np.float64).reshape(-1)
    if m.size == 9:
        P = np.hstack([m.reshape(3, 3), np.zeros((3, 1))])
    elif m.size == 12:
        P = m.reshape(3, 4)
    else:
        raise ValueError(f"a camera matrix has 9 (K) or 12 (P) values, got {m.size}")
    check_intrinsics(P[:, :3])
    if not np.allclose(P[2], [0.0, 0.0, 1.0, 0.0]):
        raise ValueError(f"the projection's last row must be [0, 0, 1, 0], got {P[2].tolist()}")
    return P


def pixels_to_rays(uv: np.ndarray, K: np.ndarray, depth: float = 1.0) -> np.ndarray:
    """Pixels ``Nx2`` -> points ``Nx3`` at ``depth`` (optical frame) that ``K`` (3x3) or ``P``
    (3x4, with its translation column) projects onto those pixels."""
    P = projection_matrix(K)
    if not depth > 0:
        raise ValueError(f"depth must be > 0, got {depth}")
    uv = np.asarray(uv, np.float64).reshape(-1, 2)
    rhs = np.stack([uv[:, 0] * depth, uv[:, 1] * depth, np.full(len(uv), float(depth))], axis=1) - P[:, 3]
    return np.linalg.solve(P[:, :3], rhs.T).T


def rays_to_pixels(points: np.ndarray, K: np.ndarray) -> np.ndarray:
    """The inverse: optical-frame points ``Nx3`` -> pixels ``Nx2`` through ``K`` or ``P``."""
    P = projection_matrix(K)
    pts = np.asarray(points, np.float64).reshape(-1, 3)
    p = pts @ P[:, :3].T + P[:, 3]
    return p[:, :2] / p[:, 2:3]


def projected_point_markers(objects: Sequence[ObjectPointsView], K: np.ndarray, depth: float = 1.0,
                            point_size: float = 0.01, min_visibility: float = 0.5,
                            ns: str = "vggts") -> List[MarkerSpec]:
    """Per object: a POINTS marker of its visible projected points (id ``2*object_id``)
    and a text label above them (id ``2*object_id + 1``), coloured as in the overlays.
    Objects with no visible point get neither (the node should then delete them). ``K``:
    the camera's ``P`` (3x4) where it has one, which is what viewers project with."""
    out: List[MarkerSpec] = []
    for obj in objects:
        xy = np.asarray(obj.target_xy, np.float64).reshape(-1, 2)
        vis = np.asarray(obj.visibility, np.float64).reshape(-1)
        if len(vis) != len(xy):
            raise ValueError(f"object {obj.object_id}: {len(xy)} points but {len(vis)} visibilities")
        keep = (vis >= min_visibility) & np.isfinite(xy).all(axis=1)
        if not keep.any():
            continue
        rgb = tuple(float(c) / 255.0 for c in color_of(obj.object_id))
        pts = pixels_to_rays(xy[keep], K, depth)
        out.append(MarkerSpec(ns, 2 * obj.object_id, "points", pts, rgb + (1.0,), point_size))
        top = pts[np.argmin(pts[:, 1])].copy()
        top[1] -= 3 * point_size  # just above the highest point (y points down)
        out.append(MarkerSpec(ns, 2 * obj.object_id + 1, "text", top[None], rgb + (1.0,), 3 * point_size,
                              obj.label or f"object {obj.object_id}"))
    return out


def nominal_intrinsics(width: int, height: int, hfov_deg: float = 60.0) -> np.ndarray:
    """Pinhole ``K`` for an image of that size: square pixels, centred principal point."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if not 0 < hfov_deg < 180:
        raise ValueError(f"horizontal field of view must be in (0, 180) degrees, got {hfov_deg}")
    f = 0.5 * width / math.tan(math.radians(hfov_deg) / 2)
    return np.array([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]])


def camera_info_fields(width: int, height: int, K: Optional[np.ndarray] = None,
                       hfov_deg: float = 60.0) -> Dict:
    """Field values of a ``sensor_msgs/CameraInfo`` without distortion (``plumb_bob``, zero
    coefficients) for ``K`` (default :func:`nominal_intrinsics`)."""
    K = check_intrinsics(nominal_intrinsics(width, height, hfov_deg) if K is None else K)
    P = np.hstack([K, np.zeros((3, 1))])
    return dict(width=int(width), height=int(height), distortion_model="plumb_bob", d=[0.0] * 5,
                k=K.reshape(-1).tolist(), r=np.eye(3).reshape(-1).tolist(), p=P.reshape(-1).tolist())
