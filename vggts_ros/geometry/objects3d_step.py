"""Objects in 3D for one processed set: the step :class:`vggts_ros.set_processor.SetProcessor`
runs after segmentation, so that the node, ``vggts replay`` and the demo get the same 3D.

Per camera of the set that has masks and a depth source:

* **Sensor depth** (``camera.<name>.depth_topic``): the camera's :class:`DepthStream`
  gives the depth image stamped within ``slop`` of the set's colour frame (never an older
  one); it is decoded (``32FC1`` metres / ``16UC1`` millimetres), checked (encoding, aspect
  ratio, at least one valid reading) and scaled to the colour frame. Intrinsics: the
  ``camera.<name>.intrinsics`` parameter, else the camera_info beside the image topic
  (its ``P``, else ``K``, scaled to the colour frame). Whatever is missing or unusable
  becomes the ``reason`` of every object of that camera.
* **VGGT** (``geometry.vggt_heads``): each result's ``geometry`` (the target camera's
  :class:`vggts_ros.geometry.camera.ViewGeometry`: depth and confidence in frame pixels,
  ``K``, ``T_cam_from_ref`` relative to the pass's source view) and ``source_geometry``.
  One pass gives the set's geometry (the lowest object id that has it), so all poses share
  one reference; the source view counts for its camera only when it is the set's frame of
  that camera (same stamp). Poses go into the reference frame (``geometry.frame``, a camera
  of the pass); the scale comes from the depth cameras (sensor vs VGGT depth), else
  ``geometry.baseline``, else it stays ``relative``
  (:func:`vggts_ros.geometry.scale.choose_scale`).

Static extrinsics (``camera.<name>.pose``, the optical frame in ``geometry.frame``) are
preferred to VGGT's poses; the reference camera (when ``geometry.frame`` names one and
another camera has a static pose) is the identity. The fused estimate is made from the
cameras with a pose (:func:`vggts_ros.geometry.objects3d.objects_in_3d`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, MutableMapping, Optional, Sequence, Tuple, Union

import numpy as np

from .boxes import matrix_from_quaternion
from .depth import DepthError, Intrinsics, IntrinsicsError, depth_image, resolve_intrinsics, sensor_depth
from .depth_stream import DepthStream
from .objects3d import CameraGeometry, Object3DConfig, Objects3D, cameras_from_set, objects_in_3d
from .scale import RELATIVE, Scale, choose_scale, parse_baseline


@dataclass
class CameraPoses:
    """VGGT's camera poses of one set: camera -> 4x4 ``T_ref_from_cam`` in ``frame`` (in
    metres when ``scale`` is metric: translations multiplied by ``scale.value``)."""

    frame: str
    poses: Dict[str, np.ndarray]
    scale: Scale = RELATIVE


@dataclass
class Set3D:
    """Objects in 3D of one set: per camera (its optical frame, keyed by camera name) and
    fused in ``frame`` (None without any camera pose); VGGT's poses when known; ``depth``:
    per camera with a depth topic, "" when its depth was used, else why not; ``notes``:
    why a source was not used (scale, VGGT poses, fusion)."""

    stamp: float
    frame: str
    cameras: Dict[str, Objects3D] = field(default_factory=dict)
    fused: Optional[Objects3D] = None
    poses: Optional[CameraPoses] = None
    scale: Scale = RELATIVE
    depth: Dict[str, str] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)
    seconds: float = 0.0


def pose_matrix(values: Sequence[float]) -> np.ndarray:
    """``x y z qx qy qz qw`` -> 4x4 float64 (the quaternion normalised)."""
    v = [float(x) for x in values]
    if len(v) != 7:
        raise ValueError(f"a pose is 7 numbers x y z qx qy qz qw, got {len(v)}")
    T = np.eye(4)
    T[:3, :3] = matrix_from_quaternion(v[3:])
    T[:3, 3] = v[:3]
    return T


def _invert(T: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = T[:3, :3].T
    out[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return out


def vggt_views(output, frames: Mapping[str, Any], objects: Sequence[Any], slop: float
               ) -> Tuple[Dict[str, Any], str]:
    """The VGGT geometry of one pass of the set: camera -> geometry (``depth``,
    ``depth_conf``, ``K``, ``T_cam_from_ref`` in that camera frame's pixels), from the
    lowest object id whose results carry it; the source view only when it is the set's
    frame of its camera. Returns (views, why empty)."""
    ids = sorted({int(o.object.object_id) for c in output.cameras for o in c.objects})
    by_id = {int(o.object_id): o for o in objects}
    for oid in ids:
        views: Dict[str, Any] = {}
        source_geo = None
        for cam in output.cameras:
            for o in cam.objects:
                if int(o.object.object_id) != oid:
                    continue
                geo = getattr(o.result, "geometry", None)
                if geo is not None:
                    views[cam.camera] = geo
                source_geo = getattr(o.result, "source_geometry", None) or source_geo
        obj = by_id.get(oid)
        if source_geo is not None and obj is not None and obj.camera not in views and obj.camera in frames \
                and abs(frames[obj.camera].stamp - obj.stamp) <= slop:
            views[obj.camera] = source_geo
        if views:
            return views, ""
    return {}, "no result of this set carries VGGT geometry (geometry.vggt_heads off, or targets reused)"


class Objects3DStep:
    """See the module docstring. ``cameras``: the :class:`vggts_ros.config.CameraConfig` of
    every camera; ``geometry``: :class:`vggts_ros.config.GeometryConfig`; ``slop``: s between
    a colour frame and its depth image (or a function giving it); ``depth_wait``: s the step may wait for a depth image
    still on its way (a node; 0 for a replay, which feeds depth before the set);
    ``camera_info``: camera -> its latest camera_info (any object with ``k``, ``p``,
    ``width``, ``height``), kept up to date by the caller."""

    def __init__(self, cameras: Sequence[Any], geometry: Any, slop: Union[float, Callable[[], float]], *,
                 depth_wait: float = 0.0,
                 keep: float = 2.0, config: Optional[Object3DConfig] = None,
                 camera_info: Optional[MutableMapping[str, Any]] = None) -> None:
        self.cameras = {c.name: c for c in cameras}
        self.order = [c.name for c in cameras]
        self.geometry = geometry
        self._slop = slop
        self.depth_wait = float(depth_wait)
        self.config = config or Object3DConfig()
        self.camera_info: MutableMapping[str, Any] = {} if camera_info is None else camera_info
        self.depth: Dict[str, DepthStream] = {c.name: DepthStream(c.depth_topic, keep=keep)
                                              for c in cameras if c.depth_topic}
        self.baseline = parse_baseline(geometry.baseline)
        self.frame = geometry.frame or (self.order[0] if self.order else "")
        self.static = {c.name: pose_matrix(c.pose) for c in cameras if c.pose}
        if self.static and self.frame in self.cameras and self.frame not in self.static:
            self.static[self.frame] = np.eye(4)  # the reference camera is the reference frame

    @property
    def slop(self) -> float:
        """s between a colour frame and its depth image (a callable follows a live parameter)."""
        return float(self._slop() if callable(self._slop) else self._slop)

    @property
    def active(self) -> bool:
        """Whether any camera can have objects in 3D (a depth topic or VGGT's heads)."""
        return bool(self.geometry.enabled and (self.depth or self.geometry.vggt_heads))

    def has_depth_source(self, camera: str) -> bool:
        return camera in self.depth or bool(self.geometry.vggt_heads)

    def describe(self) -> List[str]:
        """One line per camera: where its depth, intrinsics and pose come from."""
        lines = []
        for name in self.order:
            cam = self.cameras[name]
            depth = f"depth {cam.depth_topic}" if cam.depth_topic else \
                "VGGT depth" if self.geometry.vggt_heads else "no depth (no 3D)"
            intr = "intrinsics parameter" if cam.intrinsics else "intrinsics from camera_info"
            pose = "static pose" if name in self.static else "VGGT pose" if self.geometry.vggt_heads else "no pose"
            lines.append(f"{name}: {depth}, {intr}, {pose}")
        return lines

    # ------------------------------------------------------------------ one set
    def begin(self, frames: Mapping[str, Any]) -> None:
        """A set goes into inference: its cameras' depth images are kept until :meth:`process`."""
        for name, frame in frames.items():
            stream = self.depth.get(name)
            if stream is not None:
                stream.begin(frame.stamp, self.slop)

    def process(self, output, frames: Mapping[str, Any], objects: Sequence[Any]) -> Optional[Set3D]:
        """Objects in 3D of one processed set (``output``: its ``SetOutput``; ``frames``: the
        set's usable ``CameraFrame`` by camera; ``objects``: the objects it was run for).
        None when 3D is off or no camera has a depth source."""
        if not self.active:
            return None
        t0 = time.perf_counter()
        result = Set3D(output.stamp, self.frame)
        views, why_no_views = vggt_views(output, frames, objects, self.slop) if self.geometry.vggt_heads else ({}, "")
        if self.geometry.vggt_heads and why_no_views:
            result.notes.append(why_no_views)
        cams, labels = cameras_from_set(output, frames, objects)
        cams = [c for c in cams if c.name in self.depth or c.name in views]
        if not cams:
            result.seconds = time.perf_counter() - t0
            return result
        vggt_pose = self._vggt_poses(views, result)
        for cam in cams:
            frame = frames[cam.name]
            size = (int(frame.image.shape[1]), int(frame.image.shape[0]))
            if cam.name in self.depth:
                cam.depth, cam.depth_reason = self._sensor_depth(cam.name, frame.stamp, size)
                result.depth[cam.name] = cam.depth_reason
            cam.intrinsics, cam.intrinsics_reason = self._intrinsics(cam.name, size)
            cam.pose = self.static.get(cam.name)
            geo = views.get(cam.name)
            if geo is not None:
                self._add_vggt(cam, geo, size, vggt_pose.get(cam.name), result)
            if cam.depth is None and geo is None and not cam.depth_reason:
                cam.depth_reason = "no depth for this camera in this set"
            if cam.intrinsics is not None or cam.vggt_intrinsics is not None:
                cam.intrinsics_reason = ""
        scale = None
        if views:
            pairs = {c.name: (c.depth, c.vggt_depth, c.vggt_confidence) for c in cams
                     if c.depth is not None and c.vggt_depth is not None}
            centres = {name: T[:3, 3] for name, T in vggt_pose.items()}
            scale = choose_scale(depth_pairs=pairs, centres=centres, baseline=self.baseline)
            if scale.note:
                result.notes.append(f"scale: {scale.note}")
            result.scale = scale
            if vggt_pose:
                result.poses = CameraPoses(self.frame, {n: scale.pose(T) for n, T in vggt_pose.items()}, scale)
        set3d = objects_in_3d(cams, labels=labels, frame=self.frame, scale=scale, config=self.config)
        for cam in cams:
            objs = set3d.cameras[cam.name]
            if cam.name in self.depth and cam.depth is None and cam.vggt_depth is None:
                objs.scale, objs.scale_source = "metric", f"depth:{cam.name}"  # its units, had it depth
            result.cameras[cam.name] = objs
        result.fused = set3d.fused
        if set3d.fused is None:
            result.notes.append(f"no fused estimate: no camera has a pose in {self.frame!r} "
                                "(camera.<name>.pose, or VGGT's poses with geometry.vggt_heads)")
        self._attach_to_results(output, result)
        result.seconds = time.perf_counter() - t0
        return result

    # ------------------------------------------------------------------ pieces
    def _sensor_depth(self, camera: str, stamp: float, size: Tuple[int, int]) -> Tuple[Optional[np.ndarray], str]:
        stream = self.depth[camera]
        match = stream.match(stamp, self.slop, self.depth_wait)
        if match.message is None:
            return None, match.reason
        try:
            data, encoding = depth_image(match.message)
            return sensor_depth(data, encoding, size), ""
        except DepthError as exc:
            reason = f"depth image at {match.stamp:.3f} s on {stream.topic}: {exc}"
            stream.unusable(reason)
            return None, reason

    def _intrinsics(self, camera: str, size: Tuple[int, int]) -> Tuple[Optional[Intrinsics], str]:
        cam = self.cameras[camera]
        info = self.camera_info.get(camera)
        try:
            if info is None:
                return resolve_intrinsics(size, parameter=cam.intrinsics, camera=camera), ""
            return resolve_intrinsics(size, parameter=cam.intrinsics, camera_info_K=info.k,
                                      camera_info_P=info.p, camera_info_size=(int(info.width), int(info.height)),
                                      camera=camera), ""
        except IntrinsicsError as exc:
            return None, str(exc)

    def _vggt_poses(self, views: Mapping[str, Any], result: Set3D) -> Dict[str, np.ndarray]:
        """``T_ref_from_cam`` (VGGT units) of every camera of the pass, when the reference
        frame is one of them."""
        if not views:
            return {}
        ref = views.get(self.frame)
        if ref is None:
            where = "is not a camera" if self.frame not in self.cameras else "is not in VGGT's pass of this set"
            result.notes.append(f"VGGT poses: the reference frame {self.frame!r} {where} (its frame must be one "
                                "of the pass's views: a target, or the source frame itself)")
            return {}
        T_ref_from_src = np.asarray(ref.T_cam_from_ref, np.float64)
        return {name: T_ref_from_src @ _invert(np.asarray(g.T_cam_from_ref, np.float64)) for name, g in views.items()}

    def _add_vggt(self, cam: CameraGeometry, geo: Any, size: Tuple[int, int], pose: Optional[np.ndarray],
                  result: Set3D) -> None:
        depth = np.asarray(geo.depth)
        if depth.shape != (size[1], size[0]):
            result.notes.append(f"camera {cam.name!r}: VGGT depth is {depth.shape[1]}x{depth.shape[0]}, its frame "
                                f"{size[0]}x{size[1]}: VGGT geometry not used")
            return
        K = np.asarray(geo.K, np.float64)
        try:
            cam.vggt_intrinsics = Intrinsics(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]), *size)
        except IntrinsicsError as exc:
            why = f"VGGT's intrinsics for camera {cam.name!r} are unusable ({exc})"
            result.notes.append(why)
            if cam.intrinsics is None:  # nothing else to unproject with: every object says why
                cam.intrinsics_reason = f"{cam.intrinsics_reason}; {why}" if cam.intrinsics_reason else why
            if cam.depth is None:
                cam.depth_reason = cam.depth_reason or f"no depth topic, and {why}"
            return
        cam.vggt_depth = depth.astype(np.float64)
        cam.vggt_confidence = None if getattr(geo, "depth_conf", None) is None else np.asarray(geo.depth_conf)
        cam.vggt_pose = pose

    @staticmethod
    def _attach_to_results(output, result: Set3D) -> None:
        """Each target result gets its camera's estimate of its object (``result.object3d``)."""
        for cam in output.cameras:
            objs = result.cameras.get(cam.camera)
            if objs is None:
                continue
            for o in cam.objects:
                o.result.object3d = objs.get(int(o.object.object_id))
