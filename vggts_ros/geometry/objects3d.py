"""Where each masked object is in 3D: per camera from its depth, fused over cameras.

Per object and camera (:func:`estimate_object`), in the camera's optical frame (x right,
y down, z forward):

1. **Usable depth**: pixels without a reading (NaN), outside ``[min_depth, max_depth]``,
   below ``min_depth_confidence`` (with a confidence map, e.g. VGGT's) and depth-edge
   pixels (a jump of more than ``edge_jump`` of the depth to a 4-neighbour: where a
   sensor mixes two surfaces, and where a mask's outline crosses onto what lies behind)
   are dropped. Optionally the mask's border is eroded (``erode_px``, default 0: measured
   on the bundled scenes it only cost accuracy once the steps below run, see
   docs/geometry.md).
2. **Support surface and completion** (``complete``): a predicted mask often covers only
   the part of the object that the source camera saw (the top of a box and not its
   sides), and its outline may spill onto the floor. With depth both are fixable: the
   support surface (floor, table) is the dominant plane around the mask (RANSAC with a
   fixed seed, then least squares); what rises above it inside the column over the
   mask's footprint, connected to the mask without a depth jump, is the object and is
   added; mask pixels on the plane are dropped. Refused (the mask kept) when no plane is
   found, when the plane runs through the mask, or when the region would grow more than
   ``max_growth`` times.
3. **Outliers**: ``|z - median| > outlier_k * sigma`` with ``sigma = max(1.4826 MAD,
   outlier_floor * median)`` (median absolute deviation: a 50 % breakdown point).
4. **Points**: unprojected as ``depth_image_proc`` does, ``x = (u - cx) z / fx``,
   ``y = (v - cy) z / fy``, ``z``.
5. **Summary**: centroid = mean of the points (the visible surface's centroid); an oriented
   box (:func:`vggts_ros.geometry.boxes.fit_box`) upright on a given ``up``, else on the
   support plane when one was found, else with axes from the surface normals. The support
   plane's residuals measure the depth's noise: on quiet depth the box spans the points'
   extremes and its bottom is brought down to the plane when it ends within
   ``contact_band`` of it (the band in which the object cannot be told from the floor); on
   noisy depth (relative sigma >= ``quiet_depth``, or unknown) it spans the
   ``[box_trim, 1 - box_trim]`` quantiles. Confidence = usable share of the region x
   min(1, points / full_points) x the mask's score.

No mask, depth, intrinsics or too few usable points give no estimate and a ``reason``.

Fusion (:func:`fuse_objects`): each camera's points are moved into the reference frame by
its pose ``T_ref_from_cam`` and merged, so cameras seeing different sides give one box
around all of them. With the cameras' masks and depths (``evidence``), each point is put
to the other cameras (multi-view consistency): a camera that sees the same surface there
inside its mask votes for it; one that sees the same surface outside its mask, or sees
past the point (free space), votes against; one for which it is hidden or out of view
abstains. Points with more votes against than for are dropped.

All arithmetic is float64 and deterministic.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

from .boxes import OrientedBox, fit_box
from .depth import Intrinsics


@dataclass
class Object3DConfig:
    """How points behind a mask are chosen and summarised (see the module docstring)."""

    erode_px: int = 0  # mask border removed, pixels (elliptic kernel); 0 = none
    min_points: int = 20  # fewer usable points: no estimate
    full_points: int = 200  # points for full support in the confidence
    min_depth: float = 0.05  # m; nearer readings are no reading
    max_depth: float = math.inf  # m
    min_depth_confidence: float = 0.0  # with a confidence map: lower pixels dropped
    edge_jump: float = 0.05  # relative depth jump to a 4-neighbour that marks a depth edge; 0 = off
    outlier_k: float = 3.5  # MAD multiplier (Iglewicz-Hoaglin's 3.5)
    outlier_floor: float = 0.005  # sigma never below this fraction of the median depth
    normal_step: int = 2  # px between the neighbours that give a surface normal
    max_normals: int = 4000  # normals per camera and object (evenly strided): enough for the box's axes
    # Support surface and completion (step 2).
    complete: bool = True
    support_window: float = 1.0  # searched around the mask's box, in box sizes per side
    support_samples: int = 3000  # depth pixels (at most, evenly strided) the plane is fitted to
    support_iterations: int = 64  # RANSAC hypotheses (fixed seed: deterministic)
    plane_tol: float = 0.005  # fraction of the depth: within this of the plane is on it
    support_min_share: float = 0.3  # plane inliers / samples, below: no support surface found
    footprint_margin: float = 0.15  # the mask's footprint grows by this share of its size
    max_growth: float = 5.0  # completed region / mask pixels, above: completion refused
    upright_on_support: bool = True  # the box stands on the support plane (else: axes from the normals)
    contact_band: float = 2.0  # x plane_tol x depth: a box ending this close to the plane stands on it
    # Noisy depth (the support plane's residuals measure it, relative to the depth): the
    # plane's band widens to 2 sigma, and when sigma >= quiet_depth (or no plane was found
    # to measure it) box extents span the [box_trim, 1 - box_trim] quantiles of the points
    # instead of their extremes, without the contact extension.
    box_trim: float = 0.01
    quiet_depth: float = 0.001
    # Fusion.
    consistency: bool = True  # drop points the other cameras contradict
    consistency_tol: float = 0.02  # fraction of the depth within which two cameras see one surface


@dataclass(frozen=True)
class SupportPlane:
    """The surface an object stands on, ``normal . x = offset`` in some frame; ``normal``
    points to the side the cameras (and the object) are on. ``band``: the height (m) above
    it within which a camera could not tell the object from the surface."""

    normal: np.ndarray
    offset: float
    share: float = 0.0  # inliers / samples of the fit
    band: float = 0.0
    noise: float = 0.0  # robust sigma of the fit's residuals / depth (the sensor's relative noise)

    def height(self, points: np.ndarray) -> np.ndarray:
        return np.asarray(points, np.float64) @ self.normal - self.offset

    def transformed(self, T: np.ndarray) -> "SupportPlane":
        """The plane in another frame, ``T`` = 4x4 ``T_new_from_this``."""
        T = np.asarray(T, np.float64)
        n = T[:3, :3] @ self.normal
        return SupportPlane(n, float(self.offset + n @ T[:3, 3]), self.share, self.band, self.noise)


@dataclass
class Object3D:
    """One object's 3D estimate in one frame.

    ``centroid``: mean of its points (the visible surface for one camera, the merged
    surfaces when fused); ``box``: the oriented box around them (with its own centre).
    Without an estimate ``centroid`` and ``box`` are None and ``reason`` says why.
    ``cloud``: the points (Nx3 float32, for ``object_cloud``)."""

    object_id: int
    label: str = ""
    centroid: Optional[np.ndarray] = None
    box: Optional[OrientedBox] = None
    points: int = 0
    confidence: float = 0.0
    cameras: Tuple[str, ...] = ()
    reason: str = ""
    cloud: Optional[np.ndarray] = field(default=None, repr=False)
    normals: Optional[np.ndarray] = field(default=None, repr=False)  # Mx3 unit surface normals
    support: Optional[SupportPlane] = field(default=None, repr=False)
    note: str = ""  # e.g. why the mask was not completed (the estimate is still valid)

    @property
    def ok(self) -> bool:
        return self.centroid is not None and not self.reason

    @property
    def size(self) -> np.ndarray:
        """Box size (x, y, z extents; z is the height when the box is upright), zeros without."""
        return self.box.size.copy() if self.box is not None else np.zeros(3)

    @property
    def orientation(self) -> np.ndarray:
        """Box orientation as a quaternion ``(x, y, z, w)`` (identity without a box)."""
        return self.box.quaternion if self.box is not None else np.array([0.0, 0.0, 0.0, 1.0])


@dataclass
class Objects3D:
    """All objects of one camera (``frame`` = its optical frame) or fused (``frame`` = the
    reference frame), with the scale of the geometry they come from."""

    frame: str
    objects: List[Object3D] = field(default_factory=list)
    scale: str = "metric"  # "metric" or "relative"
    scale_source: str = "none"  # e.g. "depth:front", "baseline:exo1-exo2", "none"

    def get(self, object_id: int) -> Optional[Object3D]:
        for o in self.objects:
            if o.object_id == object_id:
                return o
        return None


# ----------------------------------------------------------------------------- per camera
def _check_shapes(mask: np.ndarray, depth: np.ndarray, intrinsics: Intrinsics, confidence) -> None:
    if mask.ndim != 2:
        raise ValueError(f"a mask is HxW, got shape {mask.shape}")
    if depth.shape != mask.shape:
        raise ValueError(f"depth {depth.shape} does not match the mask {mask.shape}; scale depth to the "
                         "colour image first (vggts_ros.geometry.depth.scale_depth)")
    if (intrinsics.height, intrinsics.width) != mask.shape:
        raise ValueError(f"intrinsics are for {intrinsics.width}x{intrinsics.height}, the mask is "
                         f"{mask.shape[1]}x{mask.shape[0]}; use Intrinsics.scaled_to")
    if confidence is not None and np.shape(confidence) != mask.shape:
        raise ValueError(f"depth confidence {np.shape(confidence)} does not match the mask {mask.shape}")


def _erode(mask: np.ndarray, px: int) -> np.ndarray:
    if px <= 0:
        return mask
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    # Outside the image counts as outside the mask (a mask cut by the frame edge is eroded there too).
    return cv2.erode(mask.astype(np.uint8), k, borderType=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)


def _edge_pixels(z: np.ndarray, ratio: float) -> np.ndarray:
    """Pixels whose depth jumps by more than ``ratio`` of their depth to a valid 4-neighbour."""
    jump = np.zeros(z.shape, bool)
    with np.errstate(invalid="ignore"):
        bx = np.abs(z[:, 1:] - z[:, :-1]) > ratio * np.minimum(z[:, 1:], z[:, :-1])  # NaN: False
        by = np.abs(z[1:, :] - z[:-1, :]) > ratio * np.minimum(z[1:, :], z[:-1, :])
    jump[:, 1:] |= bx
    jump[:, :-1] |= bx
    jump[1:, :] |= by
    jump[:-1, :] |= by
    return jump


def _depth_outliers(z: np.ndarray, sel: np.ndarray, cfg: Object3DConfig) -> np.ndarray:
    """Pixels of ``sel`` whose depth is an outlier: ``|z - median| > outlier_k * sigma``,
    ``sigma = max(1.4826 MAD, outlier_floor * median)`` over ``sel``."""
    zz = z[sel]
    med = float(np.median(zz))
    mad = float(np.median(np.abs(zz - med)))
    sigma = max(1.4826 * mad, cfg.outlier_floor * med)
    with np.errstate(invalid="ignore"):
        return sel & (np.abs(z - med) > cfg.outlier_k * sigma)


class _Grid:
    """A crop of the depth image and its camera rays: a pixel's point is ``z * ray``, and
    ``ray = (rx[u], ry[v], 1)`` is separable, so linear functions of the points over the
    whole crop cost two operations per pixel (no HxWx3 array)."""

    def __init__(self, z: np.ndarray, intrinsics: Intrinsics, x0: int, y0: int) -> None:
        h, w = z.shape
        self.z = z
        self.rx = (np.arange(x0, x0 + w, dtype=np.float64) - intrinsics.cx) / intrinsics.fx
        self.ry = (np.arange(y0, y0 + h, dtype=np.float64) - intrinsics.cy) / intrinsics.fy

    def points(self, v: np.ndarray, u: np.ndarray) -> np.ndarray:
        z = self.z[v, u]
        return np.stack([self.rx[u] * z, self.ry[v] * z, z], axis=1)

    def dot(self, n: np.ndarray) -> np.ndarray:
        """``n . P`` at every pixel (NaN where no depth)."""
        return self.z * (n[0] * self.rx[None, :] + n[1] * self.ry[:, None] + n[2])


def _fit_support_plane(pts: np.ndarray, cfg: Object3DConfig) -> Optional[SupportPlane]:
    """RANSAC plane through ``pts`` (Nx3) with an inlier band of ``plane_tol`` x depth,
    refined by least squares on its inliers; its residual spread measures the depth's
    noise. Deterministic: a fixed-seed generator draws the hypotheses."""
    if len(pts) < 3:
        return None
    tol = cfg.plane_tol * pts[:, 2]
    tri = np.random.default_rng(0).integers(0, len(pts), size=(cfg.support_iterations, 3))
    a, b, c = pts[tri[:, 0]], pts[tri[:, 1]], pts[tri[:, 2]]
    n = np.cross(b - a, c - a)
    norm = np.linalg.norm(n, axis=1)
    ok = norm > 1e-12
    if not ok.any():
        return None
    n = n[ok] / norm[ok, None]
    d = np.einsum("ij,ij->i", n, a[ok])
    k = int(np.argmax((np.abs(pts @ n.T - d) <= tol[:, None]).sum(axis=0)))
    inl = np.abs(pts @ n[k] - d[k]) <= tol
    if np.count_nonzero(inl) < 3:
        return None
    q = pts[inl]
    centre = q.mean(0)
    normal = np.linalg.svd(q - centre, full_matrices=False)[2][2]
    offset = float(normal @ centre)
    if offset > 0:  # the camera (origin) on the positive side
        normal, offset = -normal, -offset
    resid = (pts @ normal - offset) / pts[:, 2]
    share = float((np.abs(resid) <= cfg.plane_tol).mean())
    near = resid[np.abs(resid) <= 3 * cfg.plane_tol]
    noise = float(1.4826 * np.median(np.abs(near - np.median(near))))
    return SupportPlane(normal, offset, share, 0.0, noise)


def _inside_footprint(flat: np.ndarray, foot: np.ndarray, margin_share: float, min_margin: float) -> np.ndarray:
    """Which 2D points ``flat`` (Nx2) lie in the convex hull of ``foot`` grown by
    ``max(margin_share * sqrt(hull area), min_margin)``."""
    origin = foot.mean(0)
    hull = cv2.convexHull((foot - origin).astype(np.float32)).reshape(-1, 2).astype(np.float64)
    if len(hull) < 3:
        return np.ones(len(flat), bool)
    cross = hull[:, 0] * np.roll(hull[:, 1], -1) - np.roll(hull[:, 0], -1) * hull[:, 1]
    margin = max(margin_share * math.sqrt(0.5 * abs(float(cross.sum()))), min_margin)
    # A simpler polygon (within a quarter of the margin) makes the test cheaper.
    approx = cv2.approxPolyDP(hull.astype(np.float32).reshape(-1, 1, 2), 0.25 * margin, True).reshape(-1, 2)
    if len(approx) >= 3:
        hull = approx.astype(np.float64)
    area2 = float((hull[:, 0] * np.roll(hull[:, 1], -1) - np.roll(hull[:, 0], -1) * hull[:, 1]).sum())
    orient = 1.0 if area2 >= 0 else -1.0
    q = flat - origin
    inside = np.ones(len(q), bool)
    for p0, p1 in zip(hull, np.roll(hull, -1, axis=0)):
        e = p1 - p0
        length = math.hypot(e[0], e[1])
        if length > 0:
            inside &= orient * ((q[:, 1] - p0[1]) * e[0] - (q[:, 0] - p0[0]) * e[1]) >= -margin * length
    return inside


def _complete_on_support(m: np.ndarray, grid: _Grid, valid: np.ndarray, edge: np.ndarray,
                         cfg: Object3DConfig) -> Tuple[np.ndarray, Optional[SupportPlane], str]:
    """Step 2 of the module docstring on a crop: (region, support plane or None, note).

    The footprint is the mask's own points (depth outliers removed) dropped onto the plane;
    the object is taken to stand in the column above it. Parts above the plane and in the
    column, connected without a depth jump, are added when they hold most of the mask or
    the mask covers most of them."""
    z = grid.z
    ring = valid & ~cv2.dilate(m.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    rv, ru = np.nonzero(ring)
    step = max(1, len(rv) // max(cfg.support_samples, 1))  # evenly strided samples
    plane = _fit_support_plane(grid.points(rv[::step], ru[::step]), cfg)
    if plane is None:
        return m, None, "no support plane"
    if plane.share < cfg.support_min_share:
        return m, None, f"no support plane (the best holds {plane.share:.0%} of the surroundings)"
    tol_rel = max(cfg.plane_tol, 2.0 * plane.noise)
    with np.errstate(invalid="ignore"):
        rel_height = grid.dot(plane.normal) - plane.offset
        rel_height /= z  # height / depth; NaN where no depth
        on = valid & (np.abs(rel_height) <= tol_rel)
        above = valid & (rel_height > tol_rel)
    mv = m & valid
    if not mv.any():
        return m, None, "no depth under the mask"
    if on[mv].mean() > 0.5:
        return m, None, "the support plane runs through the mask (a flat object?)"
    above &= ~edge
    seed = m & above
    if np.count_nonzero(seed) < 3:
        return m & ~on, plane, "nothing of the mask rises above the support plane"
    seed &= ~_depth_outliers(z, seed, cfg)  # what the mask took in from far behind or in front
    zs = float(np.median(z[seed]))
    plane = SupportPlane(plane.normal, plane.offset, plane.share, cfg.contact_band * tol_rel * zs, plane.noise)
    e1 = np.cross(plane.normal, np.eye(3)[int(np.argmin(np.abs(plane.normal)))])
    e1 /= np.linalg.norm(e1)
    basis = np.stack([e1, np.cross(plane.normal, e1)], axis=1)
    av, au = np.nonzero(above)
    sv, su = np.nonzero(seed)
    cand = above.copy()
    cand[av, au] = _inside_footprint(grid.points(av, au) @ basis, grid.points(sv, su) @ basis,
                                     cfg.footprint_margin, 2.0 * tol_rel * zs)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(cand.astype(np.uint8), connectivity=8)
    overlap = np.bincount(labels[m & cand], minlength=n)
    area = stats[:, cv2.CC_STAT_AREA]
    held = max(int(np.count_nonzero(m & cand)), 1)
    take = (overlap >= 0.5 * held) | (overlap >= 0.5 * area)
    take[0] = False
    region = take[labels] | (m & ~on)
    growth = np.count_nonzero(region) / np.count_nonzero(m)
    if growth > cfg.max_growth:
        return m & ~on, plane, f"completion refused (it would grow the mask {growth:.1f}x)"
    return region, plane, ""


def _normals(grid: _Grid, usable: np.ndarray, step: int, limit: int) -> np.ndarray:
    """Unit normals (Mx3, toward the camera) at usable pixels whose 4 neighbours ``step``
    away are usable too (cross product of the central differences); at most about
    ``limit`` of them, evenly strided over those pixels."""
    h, w = usable.shape
    s = step
    if h <= 2 * s or w <= 2 * s:
        return np.zeros((0, 3))
    c = (usable[s:-s, s:-s] & usable[s:-s, 2 * s:] & usable[s:-s, :-2 * s]
         & usable[2 * s:, s:-s] & usable[:-2 * s, s:-s])
    v, u = np.nonzero(c)
    if not len(v):
        return np.zeros((0, 3))
    k = max(1, len(v) // max(limit, 1))
    v, u = v[::k] + s, u[::k] + s
    n = np.cross(grid.points(v, u + s) - grid.points(v, u - s), grid.points(v + s, u) - grid.points(v - s, u))
    norm = np.linalg.norm(n, axis=1)
    ok = norm > 0
    n = n[ok] / norm[ok, None]
    flip = np.einsum("ij,ij->i", n, grid.points(v[ok], u[ok])) > 0
    n[flip] *= -1.0
    return n


@dataclass
class ObjectPoints:
    """The points behind one mask and how they were chosen (:func:`object_points`)."""

    points: np.ndarray  # Nx3 float64, the camera's optical frame
    normals: np.ndarray  # Mx3 unit surface normals (toward the camera)
    usable_fraction: float  # points / pixels of the (completed, eroded) region
    region_pixels: int
    dropped: Dict[str, int]  # pixels dropped per step (completion: pixels added, as "completed")
    support: Optional[SupportPlane] = None
    note: str = ""  # why the mask was not completed, when it was not


def object_points(mask: np.ndarray, depth: np.ndarray, intrinsics: Intrinsics,
                  confidence: Optional[np.ndarray] = None,
                  config: Optional[Object3DConfig] = None) -> ObjectPoints:
    """The 3D points behind ``mask`` (steps 1-4 of the module docstring)."""
    cfg = config or Object3DConfig()
    mask = np.asarray(mask) > 0
    depth = np.asarray(depth)
    _check_shapes(mask, depth, intrinsics, confidence)
    dropped = {"completed": 0, "border": 0, "no_depth": 0, "low_confidence": 0, "edge": 0, "outlier": 0}
    if not mask.any():
        return ObjectPoints(np.zeros((0, 3)), np.zeros((0, 3)), 0.0, 0, dropped)
    # Work on the mask's bounding box plus the surroundings searched for the support
    # surface (or the normals' reach): cost follows the object, not the image.
    x, y, bw, bh = cv2.boundingRect(mask.astype(np.uint8))
    pad = max(cfg.normal_step, 1)
    if cfg.complete:
        pad = max(pad, int(math.ceil(cfg.support_window * max(bw, bh))))
    x0, y0 = max(x - pad, 0), max(y - pad, 0)
    x1, y1 = min(x + bw + pad, mask.shape[1]), min(y + bh + pad, mask.shape[0])
    m = mask[y0:y1, x0:x1]
    z = depth[y0:y1, x0:x1].astype(np.float64)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(z) & (z >= cfg.min_depth) & (z <= cfg.max_depth)
    if confidence is not None and cfg.min_depth_confidence > 0:
        conf = np.asarray(confidence, np.float64)[y0:y1, x0:x1]
        with np.errstate(invalid="ignore"):
            low = valid & ~(conf >= cfg.min_depth_confidence)
        dropped["low_confidence"] = int(np.count_nonzero(m & low))
        valid &= ~low
    z[~valid] = np.nan
    grid = _Grid(z, intrinsics, x0, y0)
    edge = _edge_pixels(z, cfg.edge_jump) if cfg.edge_jump > 0 else np.zeros(z.shape, bool)
    support, note = None, ""
    if cfg.complete:
        n_in = int(np.count_nonzero(m))
        m, support, note = _complete_on_support(m, grid, valid, edge, cfg)
        dropped["completed"] = int(np.count_nonzero(m)) - n_in
    region = _erode(m, cfg.erode_px)
    if cfg.erode_px > 0 and np.count_nonzero(region) < cfg.min_points:
        region = m  # a small object: erosion would leave nothing to measure
    dropped["border"] = int(np.count_nonzero(m) - np.count_nonzero(region))
    usable = region & valid
    dropped["no_depth"] = int(np.count_nonzero(region) - np.count_nonzero(usable)) - dropped["low_confidence"]
    dropped["edge"] = int(np.count_nonzero(usable & edge))
    usable &= ~edge
    if usable.any():
        out = _depth_outliers(z, usable, cfg)
        dropped["outlier"] = int(np.count_nonzero(out))
        usable &= ~out
    n_region = int(np.count_nonzero(region))
    if not usable.any():
        return ObjectPoints(np.zeros((0, 3)), np.zeros((0, 3)), 0.0, n_region, dropped, support, note)
    v, u = np.nonzero(usable)
    return ObjectPoints(grid.points(v, u), _normals(grid, usable, cfg.normal_step, cfg.max_normals),
                        float(len(v)) / max(n_region, 1), n_region, dropped, support, note)


def _confidence(n: int, usable_fraction: float, cfg: Object3DConfig, score: float) -> float:
    return float(np.clip(usable_fraction * min(1.0, n / max(cfg.full_points, 1)) * score, 0.0, 1.0))


def _box(points: np.ndarray, normals: Optional[np.ndarray], up, support: Optional[SupportPlane],
         cfg: Object3DConfig, viewpoint=None) -> OrientedBox:
    """Upright on ``up`` (given) or the support plane, else from the normals. Quiet depth:
    extents from the extremes, the bottom brought down to the support plane when it ends
    within the plane's band. Noisy depth (or noise unknown): extents from trimmed quantiles
    and no extension (the trimmed ends already lie about as far out as the band is deep)."""
    quiet = support is not None and support.noise < cfg.quiet_depth
    trim = 0.0 if quiet else cfg.box_trim
    if not cfg.upright_on_support:
        support = None
    axis = up if up is not None else (support.normal if support is not None else None)
    box = fit_box(points, normals=normals, up=axis, viewpoint=viewpoint, trim=trim)
    if not quiet or support is None or abs(float(box.rotation[:, 2] @ support.normal)) < 0.999:
        return box
    zc = box.rotation[:, 2] * np.sign(box.rotation[:, 2] @ support.normal)
    gap = float(support.height(box.center - 0.5 * box.size[2] * zc))
    if 0.0 < gap <= support.band:
        size = box.size.copy()
        size[2] += gap
        return OrientedBox(box.center - 0.5 * gap * zc, size, box.rotation)
    return box


def _no_estimate(object_id: int, label: str, camera: str, reason: str, points: int = 0) -> Object3D:
    return Object3D(object_id, label, None, None, points, 0.0, (camera,) if camera else (), reason)


def estimate_object(mask: np.ndarray, depth: Optional[np.ndarray], intrinsics: Optional[Intrinsics], *,
                    object_id: int = 0, label: str = "", camera: str = "",
                    confidence: Optional[np.ndarray] = None, score: float = 1.0, up=None,
                    config: Optional[Object3DConfig] = None) -> Object3D:
    """One object in one camera's optical frame (see the module docstring).

    ``mask``: HxW (nonzero = object) in the colour image; ``depth``: HxW metres at the same
    size, NaN where no reading (:func:`vggts_ros.geometry.depth.sensor_depth`), or None;
    ``intrinsics`` for that size, or None; ``confidence``: optional HxW depth confidence;
    ``score``: the mask's own confidence in [0, 1]; ``up``: a known vertical in this
    camera's frame (the box stands on it). Without depth, intrinsics, a mask or enough
    usable points the result has no estimate and a ``reason``."""
    cfg = config or Object3DConfig()
    if depth is None:
        return _no_estimate(object_id, label, camera, "no depth for this camera")
    if intrinsics is None:
        return _no_estimate(object_id, label, camera, "no intrinsics for this camera")
    mask = np.asarray(mask) > 0
    if not mask.any():
        return _no_estimate(object_id, label, camera, "empty mask")
    got = object_points(mask, depth, intrinsics, confidence, cfg)
    n = len(got.points)
    if n < cfg.min_points:
        detail = ", ".join(f"{k} {v}" for k, v in got.dropped.items() if v and k != "completed")
        what = "no valid depth under the mask" if n == 0 and got.dropped["no_depth"] >= got.region_pixels \
            else "too few usable depth points"
        return _no_estimate(object_id, label, camera,
                            f"{what} ({n} < {cfg.min_points}; of {got.region_pixels} pixels dropped: {detail})", n)
    box = _box(got.points, got.normals, up, got.support, cfg)
    return Object3D(object_id, label, got.points.mean(0), box, n, _confidence(n, got.usable_fraction, cfg, score),
                    (camera,) if camera else (), "", got.points.astype(np.float32), got.normals, got.support,
                    got.note)


# ----------------------------------------------------------------------------- fusion
def _transform(T: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ T[:3, :3].T + T[:3, 3]


@dataclass
class ViewEvidence:
    """What one camera saw of an object, to judge other cameras' points."""

    mask: np.ndarray  # HxW bool, the object's mask there
    depth: np.ndarray  # HxW metres (NaN: none)
    intrinsics: Intrinsics
    T_ref_from_cam: np.ndarray


def _judge(pts_ref: np.ndarray, ev: ViewEvidence, tol: float) -> Tuple[np.ndarray, np.ndarray]:
    """Camera ``ev``'s votes on points in the reference frame: (against, for). Against: it
    sees the same surface there outside its mask, or sees past the point; for: it sees
    the same surface inside its mask; otherwise (out of view, hidden, no depth) no vote."""
    p = _transform(np.linalg.inv(ev.T_ref_from_cam), pts_ref)
    against = np.zeros(len(p), bool)
    support = np.zeros(len(p), bool)
    front = np.nonzero(p[:, 2] > 1e-9)[0]
    if not len(front):
        return against, support
    uv = ev.intrinsics.project(p[front])
    u = np.floor(uv[:, 0] + 0.5).astype(np.int64)
    v = np.floor(uv[:, 1] + 0.5).astype(np.int64)
    h, w = ev.mask.shape
    inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    idx, u, v = front[inside], u[inside], v[inside]
    zp = p[idx, 2]
    d = ev.depth[v, u]
    with np.errstate(invalid="ignore"):
        through = zp < d - tol * zp  # NaN depth compares False: no vote
        same = np.abs(zp - d) <= tol * zp
    in_mask = ev.mask[v, u]
    against[idx[through | (same & ~in_mask)]] = True
    support[idx[same & in_mask]] = True
    return against, support


def fuse_objects(estimates: Mapping[str, Object3D], poses: Mapping[str, np.ndarray], *,
                 evidence: Optional[Mapping[str, ViewEvidence]] = None, up=None,
                 config: Optional[Object3DConfig] = None) -> Object3D:
    """One estimate of an object in the reference frame from its per-camera estimates.

    ``estimates[camera]``: that camera's :class:`Object3D` (with its cloud); ``poses[camera]``:
    4x4 ``T_ref_from_cam`` (cameras without one are left out); ``evidence``: per camera its
    mask, depth and intrinsics for the multi-view consistency vote (optional); ``up``: a
    known vertical in the reference frame. The box stands on ``up``, else on the support
    plane of the camera whose plane fit was best. ``cameras`` of the result names the
    cameras whose points it holds; without any, ``reason`` says why."""
    cfg = config or Object3DConfig()
    ests = list(estimates.items())
    object_id = ests[0][1].object_id if ests else 0
    label = next((e.label for _, e in ests if e.label), "")
    usable = [(cam, e) for cam, e in ests if e.ok and e.cloud is not None and cam in poses]
    if not usable:
        why = "; ".join(f"{cam}: {e.reason or 'no pose'}" for cam, e in ests) or "no camera"
        return Object3D(object_id, label, reason=f"no camera with a pose and depth saw it ({why})")
    clouds, normals, supports = [], [], []
    for cam, e in usable:
        T = np.asarray(poses[cam], np.float64)
        pts = _transform(T, e.cloud.astype(np.float64))
        if cfg.consistency and evidence:
            votes = np.zeros(len(pts), np.int64)  # against minus for
            for other, ev in evidence.items():
                if other != cam:
                    against, support = _judge(pts, ev, cfg.consistency_tol)
                    votes += against.astype(np.int64) - support.astype(np.int64)
            pts = pts[votes <= 0]
        clouds.append(pts)
        if e.normals is not None and len(e.normals):
            normals.append(e.normals @ T[:3, :3].T)
        if e.support is not None:
            supports.append(e.support.transformed(T))
    contributed = tuple(cam for (cam, _), pts in zip(usable, clouds) if len(pts))
    merged = np.concatenate(clouds)
    if len(merged) < cfg.min_points:
        return Object3D(object_id, label, points=len(merged), cameras=tuple(c for c, _ in usable),
                        reason=f"too few points agree across cameras ({len(merged)} < {cfg.min_points})")
    support = max(supports, key=lambda s: s.share) if supports else None  # first best: deterministic
    if support is not None:
        support = SupportPlane(support.normal, support.offset, support.share, max(s.band for s in supports),
                               max(s.noise for s in supports))
    views = np.array([np.asarray(poses[c], np.float64)[:3, 3] for c in contributed])
    box = _box(merged, np.concatenate(normals) if normals else None, up, support, cfg, viewpoint=views.mean(0))
    n_in = sum(len(e.cloud) for _, e in usable)
    conf = float(np.clip(max(e.confidence for _, e in usable) * len(merged) / max(n_in, 1), 0.0, 1.0))
    return Object3D(object_id, label, merged.mean(0), box, len(merged), conf, contributed, "",
                    merged.astype(np.float32), None, support)


# ----------------------------------------------------------------------------- per set
@dataclass
class CameraGeometry:
    """One camera of a synchronised set, as :func:`objects_in_3d` takes it.

    ``masks``: object id -> HxW mask in the colour frame (nonzero = object). Depth, in the
    colour frame's pixels, NaN where none: ``depth`` from a sensor (metres,
    :func:`vggts_ros.geometry.depth.sensor_depth`) and/or ``vggt_depth`` (VGGT's, its
    relative units, with ``vggt_confidence``). ``intrinsics`` (camera_info or parameter) or
    ``vggt_intrinsics``. Pose in the reference frame, 4x4 ``T_ref_from_cam``: ``pose``
    (static extrinsics, metres) or ``vggt_pose`` (VGGT's, relative units). Sensor depth and
    a static pose are preferred to VGGT's. ``scores``: mask confidence per object id.
    ``depth_reason`` / ``intrinsics_reason``: why this camera has no depth / intrinsics for
    this set (given to every object instead of a generic reason)."""

    name: str
    masks: Mapping[int, np.ndarray]
    depth: Optional[np.ndarray] = None
    intrinsics: Optional[Intrinsics] = None
    pose: Optional[np.ndarray] = None
    vggt_depth: Optional[np.ndarray] = None
    vggt_confidence: Optional[np.ndarray] = None
    vggt_intrinsics: Optional[Intrinsics] = None
    vggt_pose: Optional[np.ndarray] = None
    scores: Optional[Mapping[int, float]] = None
    depth_reason: str = ""
    intrinsics_reason: str = ""


@dataclass
class SetObjects3D:
    """Objects in 3D for one synchronised set: per camera (its optical frame) and fused
    (None when no camera has a pose)."""

    cameras: Dict[str, Objects3D]
    fused: Optional[Objects3D] = None


def objects_in_3d(cameras: Sequence[CameraGeometry], *, labels: Optional[Mapping[int, str]] = None,
                  frame: str = "", up=None, scale=None,
                  config: Optional[Object3DConfig] = None) -> SetObjects3D:
    """Objects in 3D for one synchronised set: each camera's objects in its optical frame,
    and every object fused in the reference frame ``frame`` (default: the first camera's
    name) from the cameras with a pose.

    ``scale``: a :class:`vggts_ros.geometry.scale.Scale` for VGGT's depth and poses (they
    are multiplied by ``scale.value``; None: relative, factor 1). A camera with sensor depth
    reports ``metric`` / ``depth:<camera>``, one on VGGT's depth the set's scale. Fusion
    mixes only cameras whose depth and pose are in the same units (with a relative scale a
    camera with sensor depth and a VGGT pose is left out of the fused estimate).
    ``up``: a known vertical in the reference frame (rotated into each posed camera)."""
    cfg = config or Object3DConfig()
    labels = labels or {}
    factor = 1.0 if scale is None else float(scale.value)
    metric_scale = scale is not None and scale.kind == "metric"
    set_scale = ("metric", scale.source) if metric_scale else ("relative", "none" if scale is None else scale.source)
    ids = sorted({int(k) for c in cameras for k in c.masks})
    per_cam: Dict[str, Objects3D] = {}
    estimates: Dict[int, Dict[str, Object3D]] = {i: {} for i in ids}
    poses: Dict[str, np.ndarray] = {}
    evidence: Dict[int, Dict[str, ViewEvidence]] = {i: {} for i in ids}
    # Fused units: metres when every posed camera has a static pose, else the set's scale.
    vggt_posed = any(c.vggt_pose is not None and c.pose is None for c in cameras)
    fused_units = set_scale[0] if vggt_posed else "metric"
    up_ref = None if up is None else np.asarray(up, np.float64)
    sensor_cams = []
    for cam in cameras:
        if cam.depth is not None:
            depth, depth_units, conf = cam.depth, "metric", None
            sensor_cams.append(cam.name)
        elif cam.vggt_depth is not None:
            depth = np.asarray(cam.vggt_depth, np.float64) * factor
            depth_units, conf = set_scale[0], cam.vggt_confidence
        else:
            depth, depth_units, conf = None, "", None
        intr = cam.intrinsics if cam.intrinsics is not None else cam.vggt_intrinsics
        pose = None
        if cam.pose is not None:
            pose = np.asarray(cam.pose, np.float64)
        elif cam.vggt_pose is not None:
            pose = np.asarray(cam.vggt_pose, np.float64).copy()
            pose[:3, 3] *= factor
        up_cam = None if up_ref is None or pose is None else pose[:3, :3].T @ up_ref
        # min_depth / max_depth are metres: they do not apply to depth in relative units
        cam_cfg = cfg if depth_units != "relative" else dataclasses.replace(cfg, min_depth=0.0, max_depth=math.inf)
        objs = []
        for oid in sorted(cam.masks):
            score = 1.0 if cam.scores is None else float(cam.scores.get(oid, 1.0))
            if depth is None and cam.depth_reason:
                est = _no_estimate(int(oid), labels.get(oid, ""), cam.name, cam.depth_reason)
            elif intr is None and cam.intrinsics_reason:
                est = _no_estimate(int(oid), labels.get(oid, ""), cam.name, cam.intrinsics_reason)
            else:
                est = estimate_object(cam.masks[oid], depth, intr, object_id=int(oid), label=labels.get(oid, ""),
                                      camera=cam.name, confidence=conf, score=score, up=up_cam, config=cam_cfg)
            objs.append(est)
            if pose is None:
                continue
            if depth is not None and depth_units != fused_units:
                est = _no_estimate(int(oid), est.label, cam.name,
                                   f"its depth is {depth_units} but the poses are {fused_units}")
            estimates[int(oid)][cam.name] = est
            if est.ok and intr is not None:
                evidence[int(oid)][cam.name] = ViewEvidence(np.asarray(cam.masks[oid]) > 0, depth, intr, pose)
        if pose is not None:
            poses[cam.name] = pose
        if depth_units == "metric" and cam.depth is not None:
            per_cam[cam.name] = Objects3D(cam.name, objs, "metric", f"depth:{cam.name}")
        elif depth is not None:
            per_cam[cam.name] = Objects3D(cam.name, objs, *set_scale)
        else:
            per_cam[cam.name] = Objects3D(cam.name, objs, set_scale[0], "none")
    if not poses:
        return SetObjects3D(per_cam, None)
    objs = [fuse_objects(estimates[oid], poses, evidence=evidence[oid], up=up_ref, config=cfg) for oid in ids]
    used_vggt = any(c.vggt_pose is not None and c.pose is None for c in cameras if c.name in poses) or \
        any(c.depth is None and c.vggt_depth is not None for c in cameras if c.name in poses)
    if used_vggt:
        fused_scale = set_scale
    else:
        fused_scale = ("metric", "depth:" + "+".join(c for c in sensor_cams if c in poses))
    return SetObjects3D(per_cam, Objects3D(frame or cameras[0].name, objs, *fused_scale))


def cameras_from_set(output, frames: Mapping[str, object], objects: Sequence[object], *,
                     depth: Optional[Mapping[str, Optional[np.ndarray]]] = None,
                     intrinsics: Optional[Mapping[str, Optional[Intrinsics]]] = None,
                     poses: Optional[Mapping[str, np.ndarray]] = None
                     ) -> Tuple[List[CameraGeometry], Dict[int, str]]:
    """:func:`objects_in_3d`'s cameras from one set of :class:`vggts_ros.set_processor.SetProcessor`
    (``output`` = its ``SetOutput``, ``frames`` = the set's usable frames by camera, ``objects``
    = the registry's objects), plus per camera its depth (metres at the colour size, or
    None), intrinsics and pose (``T_ref_from_cam``).

    Each target camera's masks are its label image's objects (one owner per pixel) with the
    backend's scores; a source camera adds the operator's mask when the set holds the very
    frame it was drawn on (same stamp). Returns (cameras in the set's order, labels)."""
    depth, intrinsics, poses = depth or {}, intrinsics or {}, poses or {}
    masks: Dict[str, Dict[int, np.ndarray]] = {name: {} for name in frames}
    scores: Dict[str, Dict[int, float]] = {name: {} for name in frames}
    labels: Dict[int, str] = {}
    for cam_out in output.cameras:
        for o in cam_out.objects:
            oid = int(o.object.object_id)
            masks[cam_out.camera][oid] = cam_out.labels == oid
            scores[cam_out.camera][oid] = float(o.result.score)
    for obj in objects:
        oid = int(obj.object_id)
        labels[oid] = obj.label
        frame = frames.get(obj.camera)
        if frame is not None and frame.stamp == obj.stamp and oid not in masks[obj.camera]:
            masks[obj.camera][oid] = np.asarray(obj.mask) > 0
            scores[obj.camera][oid] = 1.0
    cams = [CameraGeometry(name, masks[name], depth=depth.get(name), intrinsics=intrinsics.get(name),
                           pose=poses.get(name), scores=scores[name]) for name in frames if masks[name]]
    return cams, labels
