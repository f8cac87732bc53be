"""Objects in 3D for the results of one ``segment`` call (the Python API, ``vggts segment``).

::

    results = segmentor.segment(source_image, source_mask, targets)
    located = results_in_3d(results, targets, depth={"exo1": depth_m}, intrinsics={"exo1": (fx, fy, cx, cy)})
    results[0].object3d.centroid        # metres, exo1's optical frame (x right, y down, z forward)

Depth per camera name: ``HxW`` float metres (``32FC1``) or uint16 millimetres (``16UC1``);
0, NaN and inf are no reading; another size with the same aspect ratio is scaled to the
image. Intrinsics: an :class:`vggts_ros.geometry.depth.Intrinsics` or ``(fx, fy, cx, cy)`` in
the image's pixels. Poses (optional): 4x4 ``T_ref_from_cam`` or ``x y z qx qy qz qw`` of each
camera's optical frame in one reference frame; with them the object is also fused over the
cameras. The source camera (``source_name``) takes part with the operator's mask when its
depth is given. Every target's result gets ``result.object3d`` (its camera's estimate, or
an :class:`vggts_ros.geometry.objects3d.Object3D` with the ``reason`` it has none).
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence, Union

import numpy as np

from .depth import DepthError, Intrinsics, IntrinsicsError, sensor_depth
from .objects3d import CameraGeometry, Object3DConfig, SetObjects3D, objects_in_3d
from .objects3d_step import pose_matrix

ArrayLike = Union[np.ndarray, Sequence[float]]


def _camera_names(targets: Sequence) -> list:
    names = [t.name or f"target{i}" for i, t in enumerate(targets)]
    if len(set(names)) != len(names):
        raise ValueError(f"target names must differ to give each its depth, got {names}")
    return names


def depth_metres(camera: str, depth: np.ndarray, image_size) -> np.ndarray:
    """A depth array as given (float metres or uint16 millimetres) -> metres at ``image_size``."""
    arr = np.asarray(depth)
    encoding = "16UC1" if arr.dtype == np.uint16 else "32FC1"
    if encoding == "32FC1" and not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"camera {camera!r}: depth must be float metres or uint16 millimetres, got {arr.dtype}")
    try:
        return sensor_depth(arr.astype(np.float32) if encoding == "32FC1" else arr, encoding, image_size)
    except DepthError as exc:
        raise ValueError(f"camera {camera!r}: {exc}") from exc


def _intrinsics(camera: str, value, image_size) -> Intrinsics:
    try:
        if isinstance(value, Intrinsics):
            return value.scaled_to(image_size)
        return Intrinsics.from_parameter(value, image_size)
    except IntrinsicsError as exc:
        raise ValueError(f"camera {camera!r}: {exc}") from exc


def _pose(camera: str, value) -> np.ndarray:
    arr = np.asarray(value, np.float64)
    if arr.shape == (4, 4):
        return arr
    try:
        return pose_matrix(arr.reshape(-1))
    except ValueError as exc:
        raise ValueError(f"camera {camera!r}: {exc} (or give a 4x4 matrix)") from exc


def results_in_3d(results: Sequence, targets: Sequence, *, depth: Mapping[str, np.ndarray],
                  intrinsics: Mapping[str, Union[Intrinsics, ArrayLike]],
                  poses: Optional[Mapping[str, ArrayLike]] = None, source_mask: Optional[np.ndarray] = None,
                  source_name: str = "source", source_size=None, object_id: int = 1, label: str = "",
                  frame: str = "", config: Optional[Object3DConfig] = None) -> SetObjects3D:
    """See the module docstring. ``results``/``targets``: what ``segment`` returned and was
    given (cameras are the targets' names, ``target<i>`` for one without); ``source_size``:
    the source image's (width, height) when its depth is given (default: the mask's).
    Raises ValueError naming the camera for depth, intrinsics or a pose that cannot be used,
    or a name that is not a camera."""
    if len(results) != len(targets):
        raise ValueError(f"{len(results)} results for {len(targets)} targets")
    names = _camera_names(targets)
    poses = poses or {}
    known = set(names) | ({source_name} if source_mask is not None else set())
    for what, table in (("depth", depth), ("intrinsics", intrinsics), ("pose", poses)):
        unknown = sorted(set(table) - known)
        if unknown:
            raise ValueError(f"{what} given for unknown camera(s) {unknown}; cameras: {sorted(known)}")
    cams = []
    views = [(source_name, np.asarray(source_mask) > 0, 1.0)] if source_mask is not None and source_name in depth \
        else []
    views += [(n, np.asarray(r.mask) > 0, float(r.score)) for n, r in zip(names, results)]
    for name, mask, score in views:
        h, w = mask.shape
        size = tuple(source_size) if name == source_name and source_size is not None else (w, h)
        d = depth_metres(name, depth[name], size) if name in depth else None
        intr = _intrinsics(name, intrinsics[name], size) if name in intrinsics else None
        cams.append(CameraGeometry(name, {object_id: mask}, depth=d, intrinsics=intr,
                                   pose=_pose(name, poses[name]) if name in poses else None, scores={object_id: score},
                                   depth_reason="" if d is not None else f"no depth given for camera {name!r}",
                                   intrinsics_reason="" if intr is not None else
                                   f"no intrinsics given for camera {name!r} (fx, fy, cx, cy)"))
    located = objects_in_3d(cams, labels={object_id: label}, frame=frame, config=config)
    for name, result in zip(names, results):
        result.object3d = located.cameras[name].get(object_id)
    return located
