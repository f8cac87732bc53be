"""Oriented boxes: the type, fitting one around 3D points, quaternions, comparing two boxes.

Fitting (:func:`fit_box`) chooses one axis first and finds the other two as the
minimum-area rectangle of the points projected on the plane across it (rotating calipers
on their convex hull):

* ``up`` known (gravity, e.g. a robot's base frame): the box stands upright, its z axis is
  ``up`` and its size z is the height. Right for objects resting on a floor or table.
* else the surface normals of the points (from the depth image): the direction most of
  them share (:func:`dominant_normal`), i.e. the normal of the most seen face; for a box
  that is one of its axes, and the calipers find the other two.
* else (no normals): the direction of least spread of the points (PCA), i.e. the normal
  of a mostly flat visible surface.

PCA alone (all three axes from the covariance) is not used: the covariance of a nearly
square footprint has no preferred axes (any rotation is an eigenbasis), so its box can be
up to sqrt(2) too wide, and the visible faces of a box pull its axes off the box's.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Dict, Optional

import cv2
import numpy as np


def quaternion_from_matrix(R: np.ndarray) -> np.ndarray:
    """Rotation matrix -> unit quaternion ``(x, y, z, w)`` with ``w >= 0``."""
    R = np.asarray(R, np.float64)
    tr = R[0, 0] + R[1, 1] + R[2, 2]
    # Branch on the largest of (w, x, y, z) for accuracy (Shepperd).
    cands = np.array([tr, R[0, 0], R[1, 1], R[2, 2]])
    k = int(np.argmax(cands))
    if k == 0:
        s = 2.0 * np.sqrt(1.0 + tr)
        q = np.array([(R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s, 0.25 * s])
    elif k == 1:
        s = 2.0 * np.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2])
        q = np.array([0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s, (R[2, 1] - R[1, 2]) / s])
    elif k == 2:
        s = 2.0 * np.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2])
        q = np.array([(R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s, (R[0, 2] - R[2, 0]) / s])
    else:
        s = 2.0 * np.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1])
        q = np.array([(R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s, (R[1, 0] - R[0, 1]) / s])
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def matrix_from_quaternion(q) -> np.ndarray:
    """Quaternion ``(x, y, z, w)`` -> rotation matrix."""
    x, y, z, w = np.asarray(q, np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


@dataclass(frozen=True)
class OrientedBox:
    """A box in some frame: ``center`` (3), ``size`` (extents along the box's own x, y, z)
    and ``rotation`` (3x3, its columns are the box axes in the frame; det +1)."""

    center: np.ndarray
    size: np.ndarray
    rotation: np.ndarray

    @property
    def quaternion(self) -> np.ndarray:
        """Orientation as ``(x, y, z, w)`` (``geometry_msgs/Quaternion`` order)."""
        return quaternion_from_matrix(self.rotation)

    def corners(self) -> np.ndarray:
        """The 8 corners (8x3)."""
        signs = np.array(list(itertools.product((-0.5, 0.5), repeat=3)))
        return self.center + (signs * self.size) @ self.rotation.T

    def transformed(self, T: np.ndarray) -> "OrientedBox":
        """The same box in another frame, ``T`` = 4x4 ``T_new_from_this``."""
        T = np.asarray(T, np.float64)
        return OrientedBox(T[:3, :3] @ self.center + T[:3, 3], self.size.copy(), T[:3, :3] @ self.rotation)


def _unit(v) -> np.ndarray:
    v = np.asarray(v, np.float64).reshape(3)
    n = np.linalg.norm(v)
    if not np.isfinite(n) or n == 0:
        raise ValueError(f"a direction must be a finite non-zero 3-vector, got {v.tolist()}")
    return v / n


def _perpendicular_basis(a: np.ndarray):
    helper = np.eye(3)[int(np.argmin(np.abs(a)))]
    e1 = np.cross(a, helper)
    e1 /= np.linalg.norm(e1)
    return e1, np.cross(a, e1)


def min_area_rectangle(xy: np.ndarray):
    """Minimum-area rectangle around 2D points (rotating calipers over the hull's edges).

    Returns (centre (2), long side direction (2, unit), (long, short) side lengths)."""
    xy = np.asarray(xy, np.float64)
    hull = xy
    if len(xy) >= 3:
        idx = cv2.convexHull(xy.astype(np.float32), returnPoints=False).reshape(-1)
        if len(idx):
            hull = xy[idx]
    edges = np.roll(hull, -1, axis=0) - hull
    lengths = np.linalg.norm(edges, axis=1)
    keep = lengths > 1e-12
    if not keep.any():  # all points coincide
        return hull.mean(0), np.array([1.0, 0.0]), (0.0, 0.0)
    dirs = edges[keep] / lengths[keep, None]
    perp = np.stack([-dirs[:, 1], dirs[:, 0]], axis=1)
    a = hull @ dirs.T
    b = hull @ perp.T
    ext_a = a.max(0) - a.min(0)
    ext_b = b.max(0) - b.min(0)
    k = int(np.argmin(ext_a * ext_b))  # first minimum: deterministic
    d, p = dirs[k], perp[k]
    mid_a = 0.5 * (a[:, k].max() + a[:, k].min())
    mid_b = 0.5 * (b[:, k].max() + b[:, k].min())
    centre = mid_a * d + mid_b * p
    if ext_a[k] >= ext_b[k]:
        return centre, d, (float(ext_a[k]), float(ext_b[k]))
    return centre, p, (float(ext_b[k]), float(ext_a[k]))


#: Cone (degrees) within which normals count as one face, then the narrowing refinements.
NORMAL_CONES = (10.0, 5.0, 2.0)


def dominant_normal(normals: np.ndarray, candidates: int = 64, votes: int = 2000) -> np.ndarray:
    """The direction most normals share (unsigned): the most populated face's normal.

    Each of ``candidates`` normals (evenly strided) counts the normals (``votes`` of them,
    strided) within ``NORMAL_CONES[0]`` of it; the winner is refined by the sign-aligned
    mean of the normals within each narrowing cone. Unlike the principal eigenvector of
    ``sum n n^T`` this does not depend on the faces' relative weights (three equally seen
    faces make that matrix isotropic) nor on normals across edges."""
    n = np.asarray(normals, np.float64)
    sub = n[:: max(1, len(n) // votes)]
    cand = n[:: max(1, len(n) // candidates)]
    counts = (np.abs(sub @ cand.T) >= np.cos(np.radians(NORMAL_CONES[0]))).sum(axis=0)
    best = cand[int(np.argmax(counts))]
    for cone in NORMAL_CONES:
        d = n @ best
        near = np.abs(d) >= np.cos(np.radians(cone))
        if not near.any():
            break
        m = (n[near] * np.sign(d[near])[:, None]).sum(axis=0)
        best = m / np.linalg.norm(m)
    return best


def fit_box(points: np.ndarray, *, normals: Optional[np.ndarray] = None, up=None,
            viewpoint=None, trim: float = 0.0) -> OrientedBox:
    """The oriented box around ``points`` (Nx3), see the module docstring for the method.

    ``up``: a known vertical (box z = up). ``normals``: unit surface normals (Mx3, any
    subset of the points'), used when ``up`` is not given. ``viewpoint``: where the cameras
    are (default the frame's origin), to orient a box axis found without ``up`` toward them.
    Box x is the longer side of the rectangle across z, y = z x x.

    ``trim`` > 0 makes the box robust to noisy depth: the rectangle is fitted to the points
    within the ``1 - trim`` quantile of distance from the median across z, and each extent
    spans the ``[trim, 1 - trim]`` quantiles of the points along its axis instead of their
    extremes."""
    pts = np.asarray(points, np.float64).reshape(-1, 3)
    if len(pts) == 0 or not np.isfinite(pts).all():
        raise ValueError("fit_box needs at least one point, all finite")
    mean = pts.mean(0)
    centred = pts - mean
    if up is not None:
        a = _unit(up)
    else:
        if normals is not None and len(normals) >= 3:
            a = dominant_normal(normals)
        else:
            w, V = np.linalg.eigh(centred.T @ centred)
            a = V[:, 0]  # least spread
        view = np.zeros(3) if viewpoint is None else np.asarray(viewpoint, np.float64)
        if a @ (view - mean) < 0:
            a = -a
    e1, e2 = _perpendicular_basis(a)
    xy = np.stack([centred @ e1, centred @ e2], axis=1)
    if trim > 0 and len(xy) >= 10:
        r = np.linalg.norm(xy - np.median(xy, axis=0), axis=1)
        xy_fit = xy[r <= np.quantile(r, 1.0 - trim)]
    else:
        xy_fit = xy
    _, d, _ = min_area_rectangle(xy_fit)
    x_axis = d[0] * e1 + d[1] * e2
    x_axis /= np.linalg.norm(x_axis)
    y_axis = np.cross(a, x_axis)
    R = np.stack([x_axis, y_axis, a], axis=1)
    proj = centred @ R  # coordinates along the box axes
    if trim > 0 and len(proj) >= 10:
        lo, hi = np.quantile(proj, [trim, 1.0 - trim], axis=0)
    else:
        lo, hi = proj.min(axis=0), proj.max(axis=0)
    centre = mean + R @ (0.5 * (lo + hi))
    return OrientedBox(centre, hi - lo, R)


def compare_boxes(estimate: OrientedBox, truth: OrientedBox) -> Dict[str, object]:
    """How far ``estimate`` is from ``truth`` (same frame).

    The estimate's axes are matched to the truth's by the permutation that best aligns
    them (a box's axis labels are arbitrary). Returns ``center_error`` (m),
    ``size_errors`` (per true axis, |est - true| / true), ``size_error`` (their max) and
    ``angle_deg`` (the largest angle between matched axes, sign-free)."""
    C = np.abs(truth.rotation.T @ estimate.rotation)  # C[i, j] = |cos(true i, est j)|
    best = max(itertools.permutations(range(3)), key=lambda p: sum(C[i, p[i]] for i in range(3)))
    est_size = np.array([estimate.size[best[i]] for i in range(3)])
    rel = np.abs(est_size - truth.size) / truth.size
    cosines = np.clip([C[i, best[i]] for i in range(3)], 0.0, 1.0)
    return {
        "center_error": float(np.linalg.norm(estimate.center - truth.center)),
        "size_errors": rel,
        "size_error": float(rel.max()),
        "matched_size": est_size,
        "angle_deg": float(np.degrees(np.arccos(cosines.min()))),
    }
