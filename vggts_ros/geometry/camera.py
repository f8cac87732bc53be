"""Cameras from VGGT's camera and depth heads, and their way back to each camera frame's pixels.

Conventions (those of VGGT's outputs):

* Pixel coordinates ``(u, v)`` are (column, row) with pixel centres at integers: pixel
  ``(i, j)`` of an image is the point ``(i, j)``.
* Extrinsics are camera-from-world ``[R | t]`` (3x4) in OpenCV axes (x right, y down,
  z forward): ``X_cam = R X_world + t``. VGGT's world is its first view's camera for the
  published weights (the first view then gets the identity).
* The pose encoding (``[..., 9]``): translation ``t`` (3), the rotation as a quaternion
  ``(x, y, z, w)`` (4), then the vertical and horizontal fields of view (radians) of the
  network's input image. Intrinsics follow from the fields of view with the principal
  point at ``(W/2, H/2)`` of that image: ``fx = (W/2) / tan(fov_w/2)``,
  ``fy = (H/2) / tan(fov_h/2)``.
* Depth is the z coordinate in the camera frame (not the distance along the ray), in
  VGGT's unknown scale.

Everything the heads give lives in the network's input pixels. A camera frame reaches the
network through a view transform of :mod:`vggts_ros.transforms` (a resize, a crop window, a
letterbox, or a chain of them); :func:`view_affine` is that transform as the affine map
``A`` of frame pixels to view pixels that the image resampling applies (pixel centres onto
pixel centres: ``u' = s (u - x1 + 1/2) - 1/2``). A pinhole camera ``K`` of the frame is the
camera ``A K`` of the view, so the frame's intrinsics are ``A^-1 K_net``
(:func:`intrinsics_to_frame`), and a depth map is resampled at each frame pixel's view
position (depth does not change under resampling), with frame pixels the view does not
show (outside a crop window; the letterbox's padding is never sampled) set to NaN
(:func:`resample_to_frame`). Unprojecting the frame depth with the frame intrinsics gives
the same camera points as unprojecting the network's depth with the network's
intrinsics.

The point maps of :mod:`vggts_ros.transforms` (``Window.points``) scale pixel indices
(``u' = s (u - x1)``) as the reference segmentation recipe does; the two conventions differ
by at most ``|s - 1| / 2`` px. Geometry uses the resampling's own map, so that depth and
intrinsics describe the pixels the network actually saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np
import torch

from vggts_ros import transforms as T

POSE_ENCODING_DIM = 9


# =======================================================================================
# Pose encoding -> cameras
# =======================================================================================
def _check_last(x: torch.Tensor, n: int, what: str) -> None:
    if not torch.is_tensor(x) or x.dim() < 1 or x.shape[-1] != n:
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"{what} must be a tensor [..., {n}], got {shape}")


def quaternion_to_rotation(quaternion: torch.Tensor) -> torch.Tensor:
    """``[..., 4]`` quaternions ``(x, y, z, w)`` (any nonzero norm) -> ``[..., 3, 3]`` rotations."""
    _check_last(quaternion, 4, "quaternion")
    q = quaternion / quaternion.norm(dim=-1, keepdim=True)
    x, y, z, w = q.unbind(-1)
    xx, yy, zz = x * x, y * y, z * z
    xy, xz, yz = x * y, x * z, y * z
    wx, wy, wz = w * x, w * y, w * z
    rows = (
        1 - 2 * (yy + zz), 2 * (xy - wz), 2 * (xz + wy),
        2 * (xy + wz), 1 - 2 * (xx + zz), 2 * (yz - wx),
        2 * (xz - wy), 2 * (yz + wx), 1 - 2 * (xx + yy),
    )  # fmt: skip
    return torch.stack(rows, dim=-1).reshape(*q.shape[:-1], 3, 3)


def intrinsics_from_fov(fov: torch.Tensor, image_hw: Tuple[int, int]) -> torch.Tensor:
    """``[..., 2]`` fields of view (vertical, horizontal; radians) of an ``image_hw`` image
    -> ``[..., 3, 3]`` intrinsics with the principal point at ``(W/2, H/2)``."""
    _check_last(fov, 2, "field of view")
    h, w = float(image_hw[0]), float(image_hw[1])
    fy = (h / 2.0) / torch.tan(fov[..., 0] / 2.0)
    fx = (w / 2.0) / torch.tan(fov[..., 1] / 2.0)
    K = torch.zeros(*fov.shape[:-1], 3, 3, dtype=fov.dtype, device=fov.device)
    K[..., 0, 0] = fx
    K[..., 1, 1] = fy
    K[..., 0, 2] = w / 2.0
    K[..., 1, 2] = h / 2.0
    K[..., 2, 2] = 1.0
    return K


def pose_encoding_to_cameras(
    pose_encoding: torch.Tensor, image_hw: Tuple[int, int]
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``[..., 9]`` pose encodings -> (extrinsics ``[..., 3, 4]`` camera-from-world,
    intrinsics ``[..., 3, 3]`` in the pixels of the ``image_hw`` network input), in the
    encoding's dtype."""
    _check_last(pose_encoding, POSE_ENCODING_DIM, "pose encoding")
    R = quaternion_to_rotation(pose_encoding[..., 3:7])
    extrinsic = torch.cat((R, pose_encoding[..., :3, None]), dim=-1)
    return extrinsic, intrinsics_from_fov(pose_encoding[..., 7:9], image_hw)


def to_homogeneous(pose: torch.Tensor) -> torch.Tensor:
    """``[..., 3, 4]`` (or ``[..., 4, 4]``) -> ``[..., 4, 4]``."""
    if pose.shape[-2:] == (4, 4):
        return pose
    if pose.shape[-2:] != (3, 4):
        raise ValueError(f"a pose must be [..., 3, 4] or [..., 4, 4], got {tuple(pose.shape)}")
    bottom = torch.zeros(*pose.shape[:-2], 1, 4, dtype=pose.dtype, device=pose.device)
    bottom[..., 0, 3] = 1.0
    return torch.cat((pose, bottom), dim=-2)


def invert_pose(pose: torch.Tensor) -> torch.Tensor:
    """Inverse of a rigid ``[..., 3, 4]`` / ``[..., 4, 4]`` transform, ``[..., 4, 4]``."""
    pose = to_homogeneous(pose)
    R, t = pose[..., :3, :3], pose[..., :3, 3:]
    Rt = R.transpose(-1, -2)
    return to_homogeneous(torch.cat((Rt, -(Rt @ t)), dim=-1))


def relative_pose(extrinsic: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``T_cam_from_ref`` (``[..., 4, 4]``) for camera-from-world extrinsics of a camera and
    of a reference camera in the same world: ``X_cam = T X_ref``."""
    return to_homogeneous(extrinsic) @ invert_pose(reference)


# =======================================================================================
# Unprojection
# =======================================================================================
def pixel_grid(h: int, w: int, dtype=torch.float64, device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(u, v)`` pixel-centre coordinates, each ``[h, w]``."""
    v, u = torch.meshgrid(torch.arange(h, dtype=dtype, device=device), torch.arange(w, dtype=dtype, device=device),
                          indexing="ij")
    return u, v


def depth_to_camera_points(depth: torch.Tensor, intrinsic: torch.Tensor) -> torch.Tensor:
    """Depth ``[..., H, W]`` and intrinsics ``[..., 3, 3]`` (zero skew) -> camera points
    ``[..., H, W, 3]``: ``x = (u - cx) z / fx``, ``y = (v - cy) z / fy``, ``z``."""
    if depth.dim() < 2:
        raise ValueError(f"depth must be [..., H, W], got {tuple(depth.shape)}")
    if intrinsic.shape[-2:] != (3, 3):
        raise ValueError(f"intrinsics must be [..., 3, 3], got {tuple(intrinsic.shape)}")
    K = intrinsic.to(depth.dtype)
    u, v = pixel_grid(depth.shape[-2], depth.shape[-1], depth.dtype, depth.device)
    fx, fy = K[..., 0, 0, None, None], K[..., 1, 1, None, None]
    cx, cy = K[..., 0, 2, None, None], K[..., 1, 2, None, None]
    return torch.stack(((u - cx) * depth / fx, (v - cy) * depth / fy, depth), dim=-1)


def camera_to_world(points: torch.Tensor, extrinsic: torch.Tensor) -> torch.Tensor:
    """Camera points ``[..., H, W, 3]`` with their camera-from-world ``[..., 3, 4]`` ->
    world points: ``R^T (X - t)``."""
    if extrinsic.shape[-2:] not in ((3, 4), (4, 4)):
        raise ValueError(f"extrinsics must be [..., 3, 4], got {tuple(extrinsic.shape)}")
    E = extrinsic.to(points.dtype)
    R, t = E[..., :3, :3], E[..., :3, 3]
    return torch.einsum("...hwi,...ij->...hwj", points - t[..., None, None, :], R)


def unproject_depth(depth: torch.Tensor, extrinsic: torch.Tensor, intrinsic: torch.Tensor) -> torch.Tensor:
    """World points ``[..., H, W, 3]`` of depth maps ``[..., H, W]`` seen by cameras with
    extrinsics ``[..., 3, 4]`` and intrinsics ``[..., 3, 3]``."""
    return camera_to_world(depth_to_camera_points(depth, intrinsic), extrinsic)


# =======================================================================================
# Network view <-> camera frame
# =======================================================================================
def _axis_map(transform: T.ViewTransform) -> Tuple[Tuple[float, float], Tuple[float, float]]:
    """``((sx, ox), (sy, oy))`` with ``u' = sx u + ox``, ``v' = sy v + oy`` (frame -> view)."""
    if isinstance(transform, T.Window):
        (sx, sy), (x1, y1) = transform.scale, transform.box[:2]
        return (sx, sx * (0.5 - x1) - 0.5), (sy, sy * (0.5 - y1) - 0.5)
    if isinstance(transform, T.Letterbox):
        sx, sy = transform.scale
        return (sx, 0.5 * sx - 0.5), (sy, 0.5 * sy - 0.5)
    if isinstance(transform, T.Chain):
        (ax, bx), (ay, by) = _axis_map(transform.outer)
        (cx, dx), (cy, dy) = _axis_map(transform.inner)
        return (cx * ax, cx * bx + dx), (cy * ay, cy * by + dy)
    raise TypeError(f"no pixel map for view transform {type(transform).__name__}")


def view_affine(transform: T.ViewTransform) -> np.ndarray:
    """The 3x3 float64 map ``A`` of frame pixels to view pixels (homogeneous), as the
    transform's image resampling places pixel centres."""
    (sx, ox), (sy, oy) = _axis_map(transform)
    return np.array([[sx, 0.0, ox], [0.0, sy, oy], [0.0, 0.0, 1.0]], dtype=np.float64)


def content_hw(transform: T.ViewTransform) -> Tuple[int, int]:
    """The part of the view that shows the frame (the letterbox's content; a whole window)."""
    if isinstance(transform, T.Letterbox):
        return transform.content_hw
    if isinstance(transform, T.Chain):
        return content_hw(transform.inner)
    return tuple(transform.view_hw)


def intrinsics_to_frame(intrinsic_net, transform: T.ViewTransform) -> np.ndarray:
    """Intrinsics in view pixels (``3x3``) -> the frame's, ``A^-1 K_net`` (float64)."""
    K = np.asarray(intrinsic_net.detach().cpu() if torch.is_tensor(intrinsic_net) else intrinsic_net, np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"intrinsics must be 3x3, got {K.shape}")
    return np.linalg.solve(view_affine(transform), K)


def _shown(transform: T.ViewTransform, coord: np.ndarray, axis: int) -> np.ndarray:
    """Which frame coordinates along ``axis`` (0 = x, 1 = y) land inside the view's
    content (every stage of a chain), within half a pixel of its edge."""
    if isinstance(transform, T.Chain):
        s, o = _axis_map(transform.outer)[axis]
        return _shown(transform.outer, coord, axis) & _shown(transform.inner, s * coord + o, axis)
    s, o = _axis_map(transform)[axis]
    size = content_hw(transform)[1 - axis]
    mapped = s * coord + o
    return (mapped >= -0.5) & (mapped <= size - 0.5)


def _sample_axis(coord: np.ndarray, size: int, mode: str):
    """Indices and weights of a separable sampling at ``coord`` (clamped to the edge pixels)."""
    if mode == "nearest":
        i = np.clip(np.floor(coord + 0.5), 0, size - 1).astype(np.int64)
        return i, i, np.zeros_like(coord)
    lo = np.floor(coord)
    frac = coord - lo
    i0 = np.clip(lo, 0, size - 1).astype(np.int64)
    i1 = np.clip(lo + 1, 0, size - 1).astype(np.int64)
    return i0, i1, frac


def resample_to_frame(values: torch.Tensor, transform: T.ViewTransform, mode: str = "bilinear") -> torch.Tensor:
    """A map in view pixels (``[..., h, w]``: depth, confidence) -> the frame's pixels
    ``[..., H, W]``, sampled at each frame pixel's view position (bilinear, or nearest),
    reading only the view's content; frame pixels the view does not show are NaN."""
    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"unknown resampling mode {mode!r}; expected 'bilinear' or 'nearest'")
    if not torch.is_tensor(values) or values.dim() < 2 or not values.is_floating_point():
        raise ValueError("values must be a floating-point tensor [..., h, w]")
    if tuple(values.shape[-2:]) != tuple(transform.view_hw):
        raise ValueError(f"values are {tuple(values.shape[-2:])} but the view is {tuple(transform.view_hw)}")
    ch, cw = content_hw(transform)
    H, W = transform.frame_hw
    (sx, ox), (sy, oy) = _axis_map(transform)
    u = np.arange(W, dtype=np.float64)
    v = np.arange(H, dtype=np.float64)
    x0, x1, fx = _sample_axis(sx * u + ox, cw, mode)
    y0, y1, fy = _sample_axis(sy * v + oy, ch, mode)
    dev, dt = values.device, values.dtype
    as_t = lambda a: torch.from_numpy(a).to(dev)  # noqa: E731
    x0, x1, y0, y1 = as_t(x0), as_t(x1), as_t(y0), as_t(y1)
    wx, wy = as_t(fx).to(dt), as_t(fy).to(dt)[:, None]
    content = values[..., :ch, :cw]
    top, bottom = content[..., y0, :], content[..., y1, :]
    top = top[..., x0] * (1 - wx) + top[..., x1] * wx
    bottom = bottom[..., x0] * (1 - wx) + bottom[..., x1] * wx
    out = top * (1 - wy) + bottom * wy
    shown = as_t(_shown(transform, v, 1)[:, None] & _shown(transform, u, 0)[None, :])
    return torch.where(shown, out, torch.full((), float("nan"), dtype=dt, device=dev))


# =======================================================================================
# One camera's geometry in its frame's pixels
# =======================================================================================
@dataclass
class ViewGeometry:
    """What VGGT's heads say about one camera, in that camera frame's pixels.

    ``depth`` / ``depth_conf``: ``HxW`` float32, z-depth in VGGT's unknown scale and its
    confidence (``1 + exp``, >= 1), NaN where the network's view did not show the frame.
    ``K``: 3x3 float64 intrinsics of the frame. ``T_cam_from_ref``: 4x4 float64, this
    camera from the reference camera (the first view of the pass: the source camera), in
    VGGT's scale. ``extrinsic``: 3x4 float64 camera-from-world as the head gives it.
    ``pose_encoding``: the head's 9 numbers (network space). ``scale``: ``"relative"``
    until something makes it metric.
    """

    depth: np.ndarray
    depth_conf: np.ndarray
    K: np.ndarray
    T_cam_from_ref: np.ndarray
    extrinsic: np.ndarray
    pose_encoding: np.ndarray
    scale: str = "relative"

    @property
    def frame_hw(self) -> Tuple[int, int]:
        return tuple(self.depth.shape[:2])

    @property
    def T_ref_from_cam(self) -> np.ndarray:
        """4x4 float64, the reference camera from this camera (the pose of this camera in
        the reference frame, as :class:`vggts_ros.geometry.objects3d.CameraGeometry` takes it)."""
        return invert_pose(torch.from_numpy(self.T_cam_from_ref)).numpy()

    def camera_points(self) -> np.ndarray:
        """``HxWx3`` float64 points in this camera's frame (NaN where depth is NaN)."""
        pts = depth_to_camera_points(torch.from_numpy(self.depth.astype(np.float64)), torch.from_numpy(self.K))
        return pts.numpy()

    def reference_points(self) -> np.ndarray:
        """``HxWx3`` float64 points in the reference camera's frame."""
        T = self.T_ref_from_cam
        return self.camera_points() @ T[:3, :3].T + T[:3, 3]


def view_geometries(
    pose_encoding: torch.Tensor,
    depth: torch.Tensor,
    depth_conf: torch.Tensor,
    views: Sequence[T.ViewTransform],
    reference: int = 0,
    mode: str = "bilinear",
) -> List[ViewGeometry]:
    """Per view of one pass: pose encodings ``[S, 9]``, depth and confidence ``[S, h, w]``
    (network pixels) and each view's transform -> :class:`ViewGeometry` in frame pixels,
    poses relative to view ``reference``. Computed in float64."""
    s = len(views)
    if pose_encoding.shape != (s, POSE_ENCODING_DIM):
        raise ValueError(f"pose encoding must be [{s}, 9] for {s} views, got {tuple(pose_encoding.shape)}")
    if depth.dim() != 3 or depth.shape[0] != s or depth_conf.shape != depth.shape:
        raise ValueError(f"depth and confidence must both be [{s}, h, w], got {tuple(depth.shape)} "
                         f"and {tuple(depth_conf.shape)}")
    if not 0 <= reference < s:
        raise ValueError(f"reference view {reference} is not one of the {s} views")
    enc = pose_encoding.detach().to("cpu", torch.float64)
    extrinsic, K_net = pose_encoding_to_cameras(enc, tuple(depth.shape[-2:]))
    rel = relative_pose(extrinsic, extrinsic[reference])
    d = depth.detach().to("cpu", torch.float64)
    c = depth_conf.detach().to("cpu", torch.float64)
    out = []
    for i, view in enumerate(views):
        if tuple(view.view_hw) != tuple(depth.shape[-2:]):
            raise ValueError(f"view {i} is {tuple(view.view_hw)} but the depth maps are {tuple(depth.shape[-2:])}")
        out.append(ViewGeometry(
            depth=resample_to_frame(d[i], view, mode).numpy().astype(np.float32),
            depth_conf=resample_to_frame(c[i], view, mode).numpy().astype(np.float32),
            K=intrinsics_to_frame(K_net[i], view),
            T_cam_from_ref=rel[i].numpy(),
            extrinsic=extrinsic[i].numpy(),
            pose_encoding=enc[i].numpy(),
        ))
    return out
