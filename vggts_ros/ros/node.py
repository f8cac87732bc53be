"""The ``vggts`` ROS 2 node: synchronised cameras in, target masks and points out.

A thin adapter: the synchroniser (``vggts_ros.sync``), the object registry with its
generation counter (``vggts_ros.registry``), the frame history and size tracking
(``vggts_ros.frame_history``) and the diagnostics bookkeeping (``vggts_ros.health``)
are plain Python with their own tests; this file wires them to topics, services,
parameters and timers.

Threads: the executor runs subscription, service and timer callbacks (cheap: they queue
messages, validate requests, publish diagnostics); one inference thread takes the
newest synchronised set, runs the backend and publishes. A set that arrives while the
previous one is being processed replaces any set still waiting, so latency stays
bounded when the model is slower than the cameras. Results computed from objects that
were cleared or replaced meanwhile are discarded, never published.

Timers run on the steady clock, so diagnostics keep coming with ``use_sim_time`` and
no ``/clock``; a ROS time jump back (a looped bag with sim time) restarts the
synchroniser and the frame history.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

import rclpy
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType, JumpThreshold
from rclpy.duration import Duration
from rclpy.exceptions import ParameterException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, PointStamped
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from visualization_msgs.msg import Marker, MarkerArray

from vggts_ros.checkpoint import CheckpointError
from vggts_ros.click_mask import ClickMaskError, mask_from_clicks
from vggts_ros.config import CAMERA_KEYS, CAMERA_PARAMETERS, PARAMETERS, NodeConfig, PipelineConfig
from vggts_ros.frame_history import Frame, FrameHistory, SizeTracker
from vggts_ros.health import ERROR, OK, WARN, Health, Throttle
from vggts_ros.markers import ObjectPointsView, camera_info_fields, projected_point_markers
from vggts_ros import outcome
from vggts_ros.msg import ObjectPoints, ProjectedPoints
from vggts_ros.registry import ObjectRegistry, RegistryError, TrackedObject
from vggts_ros.ros import compat
from vggts_ros.ros.conversions import (ImageError, check_pixels, check_size, compressed_size, compressed_to_rgb,
                                       fill_image, image_to_rgb, mask_from_image)
from vggts_ros.srv import ClearObjects, SetSourceMask

try:
    from vggts_ros.srv import ClickToMask
except ImportError:  # interfaces generated before the service existed: `bash run.sh setup`
    ClickToMask = None
from vggts_ros.sync import ApproximateTimeSync, SyncSet
from vggts_ros.types import SegmentationResult, TargetView
from vggts_ros.visualize import overlay_masks

_LEVELS = {OK: DiagnosticStatus.OK, WARN: DiagnosticStatus.WARN, ERROR: DiagnosticStatus.ERROR}
_FRAMES_KEPT = 120  # per camera, whatever keyframe_history says (memory bound)


def camera_info_topic(image_topic: str) -> str:
    """``<camera>/camera_info`` beside an image topic (``/cam/image_raw[/compressed]``)."""
    base = image_topic[: -len("/compressed")] if image_topic.endswith("/compressed") else image_topic
    return base.rsplit("/", 1)[0] + "/camera_info" if "/" in base.strip("/") else "camera_info"


def stamp_to_sec(stamp) -> float:
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


@dataclass
class Image_:
    """A received camera message, decoded lazily (decoding costs time) and once."""

    msg: Any
    compressed: bool
    max_pixels: int
    _rgb: Optional[np.ndarray] = None

    def rgb(self) -> np.ndarray:
        if self._rgb is None:
            self._rgb = (compressed_to_rgb(self.msg, self.max_pixels) if self.compressed
                         else image_to_rgb(self.msg))
        return self._rgb

    def size(self) -> Optional[Tuple[int, int]]:
        """(height, width) without decoding."""
        return compressed_size(self.msg.data) if self.compressed else (int(self.msg.height), int(self.msg.width))


@dataclass(frozen=True)
class SetTiming:
    """Where the time of one processed set went (seconds)."""

    stamp: float
    latency: float  # last image of the set received -> its outputs published
    pipeline: float  # inside the backend
    queued: float  # waiting for the inference thread to finish the previous set
    stages: Dict[str, float]

    @property
    def overhead(self) -> float:
        """What the node itself adds: synchronising, decoding, composing, publishing."""
        return self.latency - self.pipeline - self.queued


def _descriptor(name: str) -> ParameterDescriptor:
    if name in PARAMETERS:
        text, live, bounds = PARAMETERS[name]
    else:  # camera.<name>.<key>
        text, live, bounds = CAMERA_PARAMETERS[name.rsplit(".", 1)[-1]], False, None
    desc = ParameterDescriptor(name=name, description=text + ("" if live else " (read-only: restart to change)"),
                               read_only=not live, dynamic_typing=name != "cameras")
    if bounds is not None:
        lo, hi = bounds
        if isinstance(lo, int) and isinstance(hi, int):
            desc.integer_range = [IntegerRange(from_value=lo, to_value=hi, step=0)]
        else:
            desc.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
    return desc


class VGGTSNode(Node):
    """See the module docstring; parameters are those of ``vggts_ros.config.NodeConfig``."""

    def __init__(self, node_name: str = "vggts", segmentor=None, **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self.cfg = self._read_config()
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        names = [c.name for c in self.cfg.cameras]
        inf = self.cfg.inference
        self.registry = ObjectRegistry(inf.max_objects, inf.max_label_length)
        self.history = FrameHistory(names, inf.keyframe_history, _FRAMES_KEPT)
        self.sizes = SizeTracker()
        self.health = Health(names, window=5.0, start=time.monotonic())
        self.throttle = Throttle(5.0)
        self.sets_processed = 0
        self.last: Optional[SetTiming] = None
        self._published_on: set = set()
        self._active = False

        if not getattr(self, "_managed", False):  # the lifecycle node runs these on its transitions
            self._load(segmentor)
            self._start()

    def _load(self, segmentor=None) -> None:
        """The backend, with its weights (a managed node's configure)."""
        inf = self.cfg.inference
        self.device = "cpu"
        if segmentor is None:
            from vggts_ros.backends import create_segmentor, resolve_device

            self.device = resolve_device(self.cfg.model.device)
            self.cfg.model.device = self.device
            pipeline = PipelineConfig(refine_iterations=inf.refine_iterations, backbone_dtype=self.cfg.model.dtype,
                                      precision=inf.precision, point_identity=inf.point_identity,
                                      temporal=inf.temporal, memory_frames=inf.memory_frames,
                                      temporal_weights=inf.temporal_weights)
            t0 = time.monotonic()
            segmentor = create_segmentor(self.cfg.model, pipeline)
            self.get_logger().info(
                f"backend {getattr(segmentor, 'name', type(segmentor).__name__)} ready on {self.device} "
                f"in {time.monotonic() - t0:.1f} s"
            )
        self.segmentor = segmentor

    def _start(self) -> None:
        """Subscriptions, publishers, services, timers and the inference thread (activate).

        Subscriptions and publishers are made once and kept across deactivate/activate (images
        are ignored while inactive): destroying them while a multi-threaded executor builds
        its wait set can raise InvalidHandle in the executor's own thread (their QoS event
        handlers), which stops all spinning. Services and timers are safe to destroy."""
        kinds = ("services", "timers")
        before = {kind: set(getattr(self, kind)) for kind in kinds}
        names = [c.name for c in self.cfg.cameras]
        s = self.cfg.sync
        self.sync = ApproximateTimeSync(
            names, slop=s.slop, queue_size=s.queue_size, stale_after=s.stale_after,
            required=[c.name for c in self.cfg.cameras if c.required], min_cameras=min(s.min_cameras, len(names)),
            jump_threshold=s.jump_threshold, correct_offset_above=s.correct_offset_above,
            stale_periods=s.stale_periods, stale_after_min=s.stale_after_min,
        )
        if not hasattr(self, "_subs"):
            self._io_group = ReentrantCallbackGroup()
            self._service_group = MutuallyExclusiveCallbackGroup()
            self._timer_group = MutuallyExclusiveCallbackGroup()
            self._create_io()
        self.create_service(SetSourceMask, "~/set_source_mask", self._on_set_source_mask,
                            callback_group=self._service_group)
        self.create_service(ClearObjects, "~/clear_objects", self._on_clear_objects,
                            callback_group=self._service_group)
        if ClickToMask is not None:
            self.create_service(ClickToMask, "~/click_to_mask", self._on_click_to_mask,
                                callback_group=self._service_group)
        self.create_timer(0.1, self._on_poll, callback_group=self._timer_group, clock=self._steady)
        self.create_timer(self.cfg.publish.diagnostics_period, self._publish_diagnostics,
                          callback_group=self._timer_group, clock=self._steady)
        self._jump_handle = self.get_clock().create_jump_callback(
            JumpThreshold(min_forward=None, min_backward=Duration(nanoseconds=-int(s.jump_threshold * 1e9)),
                          on_clock_change=True),
            post_callback=self._on_time_jump)
        if getattr(self, "_parameter_callbacks", False):
            pass  # a managed node activated again
        else:  # post-set callbacks where rclpy has them; Humble: apply once validated (compat)
            compat.add_parameter_callbacks(self, self._validate_parameters, self._apply_parameters)
        self._parameter_callbacks = True

        self._pending: Optional[Tuple[SyncSet, float]] = None
        self._wake = threading.Condition()
        self._running = True
        self._worker = threading.Thread(target=self._worker_loop, name="vggts-inference", daemon=True)
        self._worker.start()
        self._active = True  # last: an image may arrive as soon as this is set
        self._started = [(getattr(self, "destroy_" + kind[:-1]), e) for kind in kinds
                         for e in getattr(self, kind) if e not in before[kind]]

    def _create_io(self) -> None:
        """The camera subscriptions and every publisher (first activate only)."""
        qos_options = QoSOverridingOptions.with_default_policies()
        self._subs = {}
        for cam in self.cfg.cameras:
            msg_type = CompressedImage if cam.compressed else Image
            self._subs[cam.name] = self.create_subscription(
                msg_type, cam.topic, lambda msg, name=cam.name: self._on_image(name, msg),
                qos_profile_sensor_data, callback_group=self._io_group, qos_overriding_options=qos_options,
            )
        self.get_logger().info("cameras: " + ", ".join(
            f"{c.name} ({c.role}{', required' if c.required else ''}, {self._subs[c.name].topic_name})"
            for c in self.cfg.cameras))
        out_qos = QoSProfile(depth=10)

        def publishers(kind, msg_type):
            return {c.name: self.create_publisher(msg_type, f"~/{c.name}/{kind}", out_qos,
                                                  qos_overriding_options=qos_options) for c in self.cfg.cameras}

        self._mask_pubs = publishers("mask", Image)
        self._points_pubs = publishers("points", ProjectedPoints)
        self._overlay_pubs = publishers("overlay", Image) if self.cfg.publish.overlay else {}
        self._marker_pubs = publishers("markers", MarkerArray)
        self._info_pubs = publishers("camera_info", CameraInfo)
        self._infos: Dict[str, CameraInfo] = {}  # latest <camera>/camera_info, passed through
        self._info_subs = {}
        for cam in self.cfg.cameras:
            self._info_subs[cam.name] = self.create_subscription(
                CameraInfo, camera_info_topic(cam.topic), lambda msg, name=cam.name: self._infos.__setitem__(name, msg),
                qos_profile_sensor_data, callback_group=self._io_group)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(PointStamped, "~/click", self._on_click, 10, callback_group=self._service_group)

    def _stop(self) -> None:
        """Undo :meth:`_start` (deactivate): a set in inference finishes first; the backend
        and the objects stay."""
        if not getattr(self, "_started", None):
            return
        self._active = False
        with self._wake:
            self._running = False
            self._wake.notify_all()
        # A thread left inside the model when the interpreter exits aborts the process;
        # main() exits hard if it takes too long.
        self._worker.join(timeout=20)
        self._jump_handle.unregister()
        for destroy, entity in self._started:
            destroy(entity)
        self._started = []

    # ------------------------------------------------------------------ parameters
    def _read_config(self) -> NodeConfig:
        defaults = NodeConfig().to_parameters()
        cameras = self.declare_parameter("cameras", Parameter.Type.STRING_ARRAY, _descriptor("cameras")).value or []
        cameras = list(cameras)
        flat: Dict[str, Any] = {"cameras": cameras}
        camera_defaults = {"topic": "", "role": "exo", "compressed": False, "required": False}
        for name in cameras:
            for key in CAMERA_KEYS:
                full = f"camera.{name}.{key}"
                flat[full] = self.declare_parameter(full, camera_defaults[key], _descriptor(full)).value
        for key, default in defaults.items():
            if key == "cameras":
                continue
            flat[key] = self.declare_parameter(key, default, _descriptor(key)).value
        overrides = getattr(self, "_parameter_overrides", {}) or {}
        unknown = sorted(k for k in overrides if not self.has_parameter(k) and k != "use_sim_time"
                         and not k.startswith("qos_overrides."))
        if unknown:
            raise ValueError(f"unknown vggts parameter(s): {unknown}")
        cfg = NodeConfig.from_parameters(flat)
        for cam in cfg.cameras:
            cam.topic = cam.resolved_topic()
        return cfg.validate()

    def _candidate(self, params) -> NodeConfig:
        """The configuration these parameter changes would give (raises ValueError)."""
        flat = self.cfg.to_parameters()
        for p in params:
            if p.name in flat:
                flat[p.name] = p.value
        cfg = NodeConfig.from_parameters(flat)
        return cfg.validate()

    def _validate_parameters(self, params) -> SetParametersResult:
        mine = [p for p in params if p.name in PARAMETERS or p.name.startswith("camera.")]
        if not mine:
            return SetParametersResult(successful=True)
        try:
            self._candidate(mine)
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _apply_parameters(self, params) -> None:
        mine = [p for p in params if p.name in PARAMETERS and PARAMETERS[p.name][1]]
        if not mine:
            return
        cfg = self._candidate(mine)
        s, inf = cfg.sync, cfg.inference
        if getattr(self, "_started", None):  # else (a managed node not active) _start reads self.cfg
            self.sync.configure(slop=s.slop, queue_size=s.queue_size, stale_after=s.stale_after,
                                min_cameras=min(s.min_cameras, len(cfg.cameras)), jump_threshold=s.jump_threshold,
                                correct_offset_above=s.correct_offset_above, stale_periods=s.stale_periods,
                                stale_after_min=s.stale_after_min)
        self.registry.max_objects, self.registry.max_label_length = inf.max_objects, inf.max_label_length
        self.history.seconds = inf.keyframe_history
        cfg.model.device = self.cfg.model.device
        self.cfg = cfg
        self.get_logger().info("parameters changed: " + ", ".join(f"{p.name}={p.value!r}" for p in mine))

    # ------------------------------------------------------------------ input
    def _on_image(self, camera: str, msg) -> None:
        if not self._active:  # a managed node between deactivate and activate
            return
        try:
            self._take_image(camera, msg)
        except Exception as exc:  # noqa: BLE001 - an exception here would stop the executor for good
            now = time.monotonic()
            self.health.rejected(camera, now, f"internal error: {type(exc).__name__}: {exc}")
            if self.throttle.ready(f"image:{camera}", now):
                self.get_logger().error(f"camera {camera!r}: frame dropped: {type(exc).__name__}: {exc}")

    def _take_image(self, camera: str, msg) -> None:
        now = time.monotonic()
        cam = self.cfg.camera(camera)
        image = Image_(msg, cam.compressed, self.cfg.inference.max_image_pixels)
        stamp = stamp_to_sec(msg.header.stamp)
        size = image.size()
        problem = "compressed image has no readable PNG/JPEG header" if size is None else \
            check_size(size[0], size[1], self.cfg.inference.max_image_pixels, "frame")
        if problem:
            self._reject(camera, stamp, problem, now)
            return
        ros_now = self.get_clock().now().nanoseconds * 1e-9
        self.health.frame(camera, now, ros_now - stamp if ros_now > 0 else None)
        self.history.add(Frame(camera, stamp, now, image))
        self._dispatch(self.sync.add(camera, stamp, Frame(camera, stamp, now, image), now=now))

    def _reject(self, camera: str, stamp: float, problem: str, now: float) -> None:
        changed = self.health.rejected(camera, now, problem)
        if changed or self.throttle.ready(f"reject:{camera}", now):
            more = self.throttle.take_suppressed(f"reject:{camera}")
            self.get_logger().warning(f"camera {camera!r}: frame at {stamp:.3f} s skipped: {problem}"
                                      + (f" (+{more} more)" if more else ""))

    def _on_poll(self) -> None:
        self._dispatch(self.sync.poll())

    def _on_time_jump(self, jump) -> None:
        self.sync.time_jumped()
        self.history = FrameHistory([c.name for c in self.cfg.cameras], self.cfg.inference.keyframe_history,
                                    _FRAMES_KEPT)
        self.get_logger().warning("ROS time jumped back: synchroniser and frame history restarted")

    def _dispatch(self, sets: List[SyncSet]) -> None:
        if not sets:
            return
        now = time.monotonic()
        have_objects = len(self.registry) > 0
        with self._wake:
            for item in sets:
                self.health.set_received(now)
                if not have_objects:
                    continue
                if self._pending is not None:
                    self.health.replaced += 1
                self._pending = (item, now)
            self._wake.notify()

    # ------------------------------------------------------------------ services
    def _on_set_source_mask(self, request, response):
        try:
            ok, message, object_id, frame_stamp = self._set_source_mask(request)
        except Exception as exc:  # the node must answer, whatever went wrong
            self.get_logger().error(f"set_source_mask failed: {type(exc).__name__}: {exc}")
            ok, message, object_id, frame_stamp = False, f"internal error: {type(exc).__name__}: {exc}", 0, None
        response.success, response.message, response.object_id = ok, message, object_id
        if frame_stamp is not None:
            response.frame_stamp = frame_stamp
        if ok:
            self.get_logger().info(f"set_source_mask: {message}")
        else:
            self.get_logger().warning(f"set_source_mask refused: {message[:500]}")
        return response

    def _set_source_mask(self, req) -> Tuple[bool, str, int, Any]:
        names = [c.name for c in self.cfg.cameras]
        if req.camera not in names:
            return False, f"unknown camera {req.camera[:64]!r}; this node's cameras are {names}", 0, None
        try:
            self.registry.check_request(int(req.object_id), req.label)
        except RegistryError as exc:
            return False, str(exc), 0, None
        m = req.mask
        problem = check_size(int(m.height), int(m.width), self.cfg.inference.max_image_pixels, "mask")
        if problem:
            return False, f"bad mask image: {problem}", 0, None
        want = stamp_to_sec(req.stamp)
        tolerance = max(self.cfg.sync.slop, 1e-3)
        frame, why = self.history.find(req.camera, want, tolerance)
        if frame is None:
            return False, f"{why} (topic {self._subs[req.camera].topic_name})", 0, None
        size = frame.payload.size()
        if size is not None and (int(m.height), int(m.width)) != size:
            return False, (
                f"mask is {m.width}x{m.height} but camera {req.camera!r} frames are "
                f"{size[1]}x{size[0]} (width x height)"
            ), 0, None
        try:
            mask = mask_from_image(m)
        except ImageError as exc:
            return False, f"bad mask image: {exc}", 0, None
        try:
            image = frame.payload.rgb()
        except ImageError as exc:
            return False, f"the frame of camera {req.camera!r} at {frame.stamp:.3f} s cannot be decoded: {exc}", 0, None
        if mask.shape != image.shape[:2]:
            return False, (f"mask is {mask.shape[1]}x{mask.shape[0]} but the frame is "
                           f"{image.shape[1]}x{image.shape[0]} (width x height)"), 0, None
        area = int(mask.sum())
        if area == 0:
            return False, "mask is empty: no nonzero pixel marks the object", 0, None
        problem = check_pixels(image)
        if problem:
            return False, f"the frame of camera {req.camera!r} at {frame.stamp:.3f} s is unusable: {problem}", 0, None
        try:
            obj, replaced = self.registry.put(req.camera, req.label, image.copy(), mask.copy(), frame.stamp,
                                              int(req.object_id))
        except RegistryError as exc:
            return False, str(exc), 0, None
        self.health.objects_changed(len(self.registry), time.monotonic())
        verb = "replaced" if replaced else "set"
        return True, (
            f"object {obj.object_id} {verb} on camera {req.camera!r}: {area} px on the frame at {frame.stamp:.3f} s"
        ), obj.object_id, frame.payload.msg.header.stamp

    def _on_click(self, msg) -> None:
        """``~/click``: ``header.frame_id`` names the camera (its name, or the ``frame_id`` of its
        images), ``point.x, point.y`` a pixel on the object in that camera's newest frame."""
        if not self._active:
            self.get_logger().warning("click ignored: the node is not active")
            return
        try:
            ok, message, _, _ = self.click_to_mask(msg.header.frame_id, [(msg.point.x, msg.point.y)])
        except Exception as exc:  # a bad click must not take the node down
            ok, message = False, f"internal error: {type(exc).__name__}: {exc}"
        if ok:
            self.get_logger().info(f"click: {message}")
            return
        self.get_logger().warning(f"click refused: {message[:500]}")
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status.append(DiagnosticStatus(level=DiagnosticStatus.WARN, name=self.status_name("click"),
                                             message=f"click refused: {message}"))
        self._diag_pub.publish(array)

    def _on_click_to_mask(self, request, response):
        pts = np.asarray(request.points, np.float64)
        try:
            if len(pts) % 2:
                raise ClickMaskError(f"points must be x, y pairs; got {len(pts)} numbers")
            ok, message, oid, mask = self.click_to_mask(
                request.camera, pts.reshape(-1, 2).tolist() if len(pts) else None,
                list(request.labels) if len(request.labels) else None,
                list(request.box) if len(request.box) else None, request.object_id, request.label)
        except ClickMaskError as exc:
            ok, message, oid, mask = False, str(exc), 0, None
        except Exception as exc:  # the node must answer, whatever went wrong
            ok, message, oid, mask = False, f"internal error: {type(exc).__name__}: {exc}", 0, None
        response.success, response.message, response.object_id = ok, message, oid
        if ok:
            mask, response.frame_stamp = mask
            fill_image(response.mask, mask.astype(np.uint8) * 255, "mono8")
        if ok:
            self.get_logger().info(f"click_to_mask: {message}")
        else:
            self.get_logger().warning(f"click_to_mask refused: {message[:500]}")
        return response

    def click_to_mask(self, camera: str, points=None, labels=None, box=None, object_id: int = 0,
                      label: str = "") -> Tuple[bool, str, int, Any]:
        """Points/box on a camera's newest frame -> GrabCut mask (weight-free) -> exactly the
        ``set_source_mask`` path. Returns (success, message, object id, (mask, frame stamp) or None)."""
        names = [c.name for c in self.cfg.cameras]
        if camera not in names:
            by_frame = [n for n in names if (f := self.history.latest(n)) is not None
                        and f.payload.msg.header.frame_id == camera]
            if not by_frame:
                return False, f"unknown camera {camera[:64]!r}: name one of {names} or its images' frame_id", 0, None
            camera = by_frame[0]
        frame = self.history.latest(camera)
        if frame is None:
            return False, f"no frame received yet from camera {camera!r}", 0, None
        try:
            mask = mask_from_clicks(frame.payload.rgb(), points, labels, box)
        except (ClickMaskError, ImageError) as exc:
            return False, f"camera {camera!r}, frame at {frame.stamp:.3f} s: {exc}", 0, None
        req = SetSourceMask.Request(camera=camera, object_id=int(object_id), label=label,
                                    stamp=frame.payload.msg.header.stamp)
        fill_image(req.mask, mask.astype(np.uint8) * 255, "mono8")
        ok, message, oid, stamp = self._set_source_mask(req)
        return ok, message, oid, (mask, stamp) if ok else None

    def _on_clear_objects(self, request, response):
        try:
            with self.registry.lock:
                removed = self.registry.clear(int(request.object_id))
                remaining = len(self.registry)
                if getattr(self.segmentor, "temporal", None) is not None:
                    self.segmentor.temporal.clear(None if request.object_id == 0 else int(request.object_id))
                self._publish_cleared()
            response.success = True
            response.message = (f"cleared {len(removed)} object(s)" if request.object_id == 0
                                else f"cleared object {request.object_id}")
        except RegistryError as exc:
            response.success, response.message = False, str(exc)
            remaining = len(self.registry)
        if response.success:
            self.health.objects_changed(remaining, time.monotonic())
            if not remaining:
                with self._wake:
                    self._pending = None
        self.get_logger().info(f"clear_objects: {response.message}")
        return response

    def _publish_cleared(self) -> None:
        """Outputs that no remaining object will update say so: an empty points message
        and an all-zero mask, stamped with the camera's newest frame (a consumer must not
        keep acting on the last mask of a cleared object)."""
        _, objects = self.registry.snapshot()
        track = self.cfg.inference.source_mode == "track"
        still = {c.name for c in self.cfg.cameras for o in objects if o.camera != c.name or track}
        for camera in sorted(self._published_on - still):
            frame = self.history.latest(camera)
            size = self.sizes.size(camera)
            self._published_on.discard(camera)
            if frame is None or size is None:
                continue
            header = frame.payload.msg.header
            points = ProjectedPoints(header=header, target_camera=camera, source_camera="")
            mask = Image(header=header)
            fill_image(mask, np.zeros(size, np.uint8), "mono8")
            self._mask_pubs[camera].publish(mask)
            self._points_pubs[camera].publish(points)

    # ------------------------------------------------------------------ inference
    def _worker_loop(self) -> None:
        last_start = -1e9
        while True:
            with self._wake:
                while self._running:
                    rate = self.cfg.inference.max_rate
                    wait = last_start + (1.0 / rate if rate > 0 else 0.0) - time.monotonic()
                    if self._pending is not None and wait <= 0:
                        break
                    # Not yet: a newer set may replace the pending one while we wait.
                    self._wake.wait(timeout=min(0.5, wait) if self._pending is not None else 0.5)
                if not self._running:
                    return
                (item, queued_at), self._pending = self._pending, None
            last_start = time.monotonic()
            try:
                self._process(item, last_start - queued_at)
            except Exception as exc:  # a failed set is skipped, the node keeps serving
                error = f"{type(exc).__name__}: {exc}"
                now = time.monotonic()
                self.health.failure(now, error)
                if self.throttle.ready("inference", now):
                    more = self.throttle.take_suppressed("inference")
                    self.get_logger().error(f"inference failed on the set at {item.stamp:.3f} s: {error}"
                                            + (f" (+{more} more since the last report)" if more else ""))
                self._release_cuda_memory()

    @staticmethod
    def _release_cuda_memory() -> None:
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:
            pass

    def _usable_frames(self, item: SyncSet) -> Dict[str, Tuple[Frame, np.ndarray]]:
        usable = {}
        now = time.monotonic()
        for name, frame in item.messages.items():
            try:
                image = frame.payload.rgb()
                problem = check_pixels(image) or self.sizes.check(name, image.shape[:2])
            except ImageError as exc:
                problem = f"cannot decode: {exc}"
            if problem:
                self._reject(name, frame.stamp, problem, now)
                continue
            usable[name] = (frame, image)
        return usable

    def _process(self, item: SyncSet, queued: float = 0.0) -> None:
        try:
            self._process_set(item, queued)
        finally:
            temporal = getattr(self.segmentor, "temporal", None)
            if temporal is not None:
                # A set in inference during a clear may have written memory for objects that
                # are gone (also when it failed part-way): only current objects keep a stream.
                with self.registry.lock:
                    temporal.retain(self.registry.ids())

    def _process_set(self, item: SyncSet, queued: float = 0.0) -> None:
        t_start = time.monotonic()
        frames = self._usable_frames(item)
        generation, objects = self.registry.snapshot()
        temporal = getattr(self.segmentor, "temporal", None)  # Temporal VGGT-S streams, when on
        if temporal is not None:
            temporal.retain(o.object_id for o in objects)  # objects cleared while a set was in flight
        if not objects or not frames:
            return
        roles = {c.name: c.role for c in self.cfg.cameras}
        track = self.cfg.inference.source_mode == "track"
        per_target: Dict[str, List[Tuple[TrackedObject, SegmentationResult]]] = {}
        advances = []
        stage_totals: Dict[str, float] = {}
        pipeline_seconds = 0.0
        # Objects drawn on the same source frame share one call (one first backbone pass).
        groups: Dict[Tuple[str, float], List[TrackedObject]] = {}
        for obj in objects:
            groups.setdefault((obj.camera, obj.stamp), []).append(obj)
        for (camera, stamp), members in groups.items():
            targets = [name for name in frames if name != camera]
            if track and camera in frames and frames[camera][0].stamp > stamp:
                targets.append(camera)
            if not targets:
                continue
            views = [TargetView(frames[n][1], role=roles[n], name=n) for n in targets]
            t0 = time.monotonic()
            if temporal is not None:  # a new generation = a new or replaced source mask: its memory restarts
                from vggts_ros.temporal import StreamStep

                per_object = self.segmentor.segment_objects(
                    members[0].image, [m.mask for m in members], views,
                    stream=StreamStep(item.stamp, [m.object_id for m in members], [m.generation for m in members],
                                      self.cfg.sync.stale_after))
            elif len(members) > 1 and hasattr(self.segmentor, "segment_objects"):
                per_object = self.segmentor.segment_objects(members[0].image, [m.mask for m in members], views)
            else:
                per_object = [self.segmentor.segment(m.image, m.mask, views) for m in members]
            pipeline_seconds += time.monotonic() - t0
            call_stages: Dict[str, float] = {}
            for obj, results in zip(members, per_object):
                for stage, seconds in (results[0].timings or {}).items() if results else ():
                    shared = stage in ("first_pass", "total")
                    call_stages[stage] = max(call_stages.get(stage, 0.0), seconds) if shared \
                        else call_stages.get(stage, 0.0) + seconds
                for name, result in zip(targets, results):
                    if name == camera:
                        advances.append((obj, frames[name], result))
                    per_target.setdefault(name, []).append((obj, result))
            for stage, seconds in call_stages.items():
                stage_totals[stage] = stage_totals.get(stage, 0.0) + seconds
        t_publish = time.monotonic()
        last_arrival = max(f.arrival for f, _ in frames.values())
        with self.registry.lock:
            if not self.registry.is_current(generation):
                # Objects were cleared or replaced while this set was in inference; the
                # memory it wrote for cleared objects goes too.
                self.health.stale_discarded += 1
                return
            for obj, frame_image, result in advances:
                self._advance_source(obj, frame_image, result)
            for name, pairs in per_target.items():
                self._publish(name, frames[name], pairs)
        done = time.monotonic()
        stage_totals["decode"] = t_publish - t_start - pipeline_seconds
        stage_totals["queued"] = queued
        stage_totals["publish"] = done - t_publish
        self.sets_processed += 1
        self.health.output(done, done - t_start)
        self.last = SetTiming(item.stamp, done - last_arrival, pipeline_seconds, queued, stage_totals)

    def _advance_source(self, obj: TrackedObject, frame_image: Tuple[Frame, np.ndarray], result) -> None:
        """Track mode: the source mask follows the object into the newest source frame."""
        frame, image = frame_image
        if not result.mask.any():
            now = time.monotonic()
            if self.throttle.ready(f"lost:{obj.object_id}", now):
                more = self.throttle.take_suppressed(f"lost:{obj.object_id}")
                self.get_logger().warning(
                    f"object {obj.object_id}: lost in source camera {obj.camera!r} at {frame.stamp:.3f} s; "
                    "keeping the previous source frame" + (f" (+{more} more)" if more else "")
                )
            return
        self.registry.advance(obj, image, result.mask.astype(bool), frame.stamp)

    def _publish(self, camera: str, frame_image: Tuple[Frame, np.ndarray], pairs) -> None:
        frame, image = frame_image
        header = frame.payload.msg.header
        labels = np.zeros(image.shape[:2], dtype=np.uint8)
        points = ProjectedPoints()
        points.header = header
        points.target_camera = camera
        points.source_camera = ",".join(sorted({obj.camera for obj, _ in pairs}))
        for obj, result in sorted(pairs, key=lambda p: p[1].score):
            labels[result.mask.astype(bool)] = obj.object_id
        # Which path made each mask, and why an empty one is empty (never left unsaid).
        backend = getattr(self.segmentor, "name", type(self.segmentor).__name__)
        described = outcome.annotate(labels, [(o.object_id, r) for o, r in pairs], backend)
        for (obj, result), told in zip(pairs, described):
            entry = ObjectPoints()
            entry.object_id = obj.object_id
            entry.source_xy = np.asarray(result.source_points, dtype=np.float32).reshape(-1).tolist()
            entry.target_xy = np.asarray(result.target_points, dtype=np.float32).reshape(-1).tolist()
            entry.visibility = np.asarray(result.visibility, dtype=np.float32).reshape(-1).tolist()
            entry.confidence = np.asarray(result.confidence, dtype=np.float32).reshape(-1).tolist()
            entry.score = float(result.score)
            entry.label = obj.label
            entry.area = int((labels == obj.object_id).sum())
            if hasattr(entry, "reason"):  # interfaces generated before the msg had them: rebuild (run.sh setup)
                entry.path = told.path
                entry.reason = told.reason
            points.objects.append(entry)
        mask_msg = Image()
        mask_msg.header = header
        fill_image(mask_msg, labels, "mono8")
        self._mask_pubs[camera].publish(mask_msg)
        self._points_pubs[camera].publish(points)
        self._published_on.add(camera)
        self._publish_rviz(camera, header, image.shape[:2], pairs)
        if camera in self._overlay_pubs and self._overlay_pubs[camera].get_subscription_count() > 0:
            overlay = Image()
            overlay.header = header
            fill_image(overlay, overlay_masks(image, labels, [np.asarray(r.target_points).reshape(-1, 2) for _, r in pairs]), "rgb8")
            self._overlay_pubs[camera].publish(overlay)

    def _publish_rviz(self, camera: str, header, size: Tuple[int, int], pairs) -> None:
        """CameraInfo with the mask's header (the camera's own when its size matches, else a
        nominal pinhole) and, when subscribed, the projected points as markers on its rays."""
        h, w = size
        received = self._infos.get(camera)
        if received is not None and (received.height, received.width) == (h, w):
            info = CameraInfo(height=received.height, width=received.width, distortion_model=received.distortion_model,
                              d=received.d, k=received.k, r=received.r, p=received.p,
                              binning_x=received.binning_x, binning_y=received.binning_y, roi=received.roi)
        else:
            info = CameraInfo(**camera_info_fields(w, h))
        info.header = header
        self._info_pubs[camera].publish(info)
        if self._marker_pubs[camera].get_subscription_count() == 0:
            return
        K = np.asarray(info.k, np.float64).reshape(3, 3)
        views = [ObjectPointsView(o.object_id, np.asarray(r.target_points).reshape(-1, 2),
                                  np.asarray(r.visibility).reshape(-1), o.label) for o, r in pairs]
        array = MarkerArray(markers=[Marker(header=header, action=Marker.DELETEALL)])
        for spec in projected_point_markers(views, K):
            m = Marker(header=header, ns=spec.ns, id=spec.id, action=Marker.ADD, text=spec.text,
                       type=Marker.POINTS if spec.kind == "points" else Marker.TEXT_VIEW_FACING)
            m.pose.orientation.w = 1.0
            m.scale.x = m.scale.y = m.scale.z = float(spec.scale)
            m.color.r, m.color.g, m.color.b, m.color.a = spec.color
            if spec.kind == "points":
                m.points = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in spec.positions]
            else:
                m.pose.position = Point(**dict(zip("xyz", map(float, spec.positions[0]))))
            array.markers.append(m)
        self._marker_pubs[camera].publish(array)

    # ------------------------------------------------------------------ diagnostics
    def status_name(self, what: str) -> str:
        return f"{self.get_fully_qualified_name().lstrip('/')}: {what}"

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        stale = self.sync.stale_cameras(now)
        unmatched = self.sync.unmatched_cameras(now)
        sync_stats = self.sync.stats()
        h = self.health
        period = self.cfg.publish.diagnostics_period
        level, message = h.assess(now, stale, unmatched, period, self.cfg.publish.stall_timeout)
        since = h.since_output(now)
        values = {
            "device": self.device,
            "backend": getattr(self.segmentor, "name", type(self.segmentor).__name__),
            "objects": len(self.registry),
            "generation": self.registry.generation,
            "rate_hz": f"{h.outputs.rate(now):.2f}",
            "sets_rate_hz": f"{h.sets.rate(now):.2f}",
            "rate_window_s": f"{h.window:g}",
            "time_since_output_s": "" if since is None else f"{since:.2f}",
            "stall_timeout_s": f"{h.stall_timeout(period, self.cfg.publish.stall_timeout):.2f}",
            "sets_received": h.sets.total,
            "sets_processed": self.sets_processed,
            "sets_dropped": h.replaced,
            "sets_failed": h.failures.total,
            "sets_failed_recent": h.failures.count(now),
            "sets_discarded_stale": h.stale_discarded,
            "stale_cameras": ",".join(stale),
            "unmatched_cameras": ",".join(unmatched),
            "sync_resets": sync_stats["resets"],
            "last_error": h.last_error,
        }
        temporal = getattr(self.segmentor, "temporal", None)
        values["temporal"] = str(temporal is not None).lower()
        if temporal is not None:  # Temporal VGGT-S: entries and writes since the last reset per stream
            # Streams of current objects only: a set still in inference after a clear may
            # write to a cleared object's stream until it ends (then the stream is dropped).
            current = {str(i) for i in self.registry.ids()}
            for key, n in temporal.bank_sizes().items():
                if key.split("/", 1)[0] in current:
                    values[f"memory_bank_{key}"] = n
            for key, n in ((k, n) for k, n in temporal.bank_writes().items() if k.split("/", 1)[0] in current):
                values[f"memory_writes_{key}"] = n
        last = self.last
        if last is not None:
            values.update({
                "last_set_stamp": f"{last.stamp:.6f}",
                "latency_ms": f"{1000 * last.latency:.1f}",
                "pipeline_ms": f"{1000 * last.pipeline:.1f}",
                "queued_ms": f"{1000 * last.queued:.1f}",
                "node_overhead_ms": f"{1000 * last.overhead:.1f}",
            })
            for stage, seconds in sorted(last.stages.items()):
                values[f"stage_{stage}_ms"] = f"{1000 * seconds:.1f}"
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        status = DiagnosticStatus(level=_LEVELS[level], name=self.status_name("pipeline"), message=message,
                                  hardware_id=self.device)
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        array.status.append(status)
        offsets = sync_stats["clock_offsets"]
        for cam in self.cfg.cameras:
            n = cam.name
            cam_values = h.camera_values(n, now)
            is_stale, is_unmatched = n in stale, n in unmatched
            recent_rejects = int(cam_values["frames_rejected_recent"])
            cam_level = ERROR if is_stale and len(stale) == len(self.cfg.cameras) else \
                WARN if (is_stale or is_unmatched or recent_rejects) else OK
            cam_message = "stale" if is_stale else "matches no other camera" if is_unmatched else \
                f"frames rejected: {cam_values['last_reject_reason']}" if recent_rejects else "ok"
            size = self.sizes.size(n)
            cam_status = DiagnosticStatus(level=_LEVELS[cam_level], name=self.status_name(f"camera {n}"),
                                          message=cam_message, hardware_id=self._subs[n].topic_name)
            kv = {
                "topic": self._subs[n].topic_name,
                "role": cam.role,
                "required": str(cam.required).lower(),
                "stale": str(is_stale).lower(),
                "stale_after_s": f"{self.sync.stale_limits()[n]:.3f}",  # rate-following or fixed
                "unmatched": str(is_unmatched).lower(),
                **cam_values,
                "sync_received": str(sync_stats["received"][n]),
                "sync_dropped": str(sync_stats["dropped"][n]),
                "clock_offset_ms": "" if offsets[n] is None else f"{1000 * offsets[n]:.1f}",
                "clock_offset_applied_ms": f"{1000 * sync_stats['applied_offsets'][n]:.1f}",
                "frame_size": "" if size is None else f"{size[1]}x{size[0]}",
                "size_changes": str(self.sizes.changes.get(n, 0)),
            }
            for reason, count in sync_stats["dropped_by_reason"][n].items():
                kv[f"sync_dropped_{reason}"] = str(count)
            cam_status.values = [KeyValue(key=k, value=v) for k, v in kv.items()]
            array.status.append(cam_status)
        self._diag_pub.publish(array)

    def stop_processing(self) -> None:
        """Stop taking sets; the one in inference finishes and is published first."""
        self._stop()

    def destroy_node(self):
        self._stop()  # nothing to stop when construction failed part-way or not active
        return super().destroy_node()

    @property
    def busy(self) -> bool:
        """The inference thread is still running (inside the model)."""
        return hasattr(self, "_worker") and self._worker.is_alive()


def main(argv: Optional[List[str]] = None, node_class=None) -> int:
    """``vggts_node [--ros-args --params-file config.yaml ...]`` (also ``ros2 run``)."""
    from vggts_ros.ros import runner, transport

    def make_node():
        try:
            return (node_class or VGGTSNode)()
        except ParameterException as exc:  # a value outside its descriptor's range or type
            raise ValueError(f"bad parameter: {exc}") from exc

    # transport before the context: the node publishes images too
    return runner.run(make_node, list(sys.argv if argv is None else argv), configure=transport.configure,
                      refusals=(ValueError, CheckpointError))


if __name__ == "__main__":
    sys.exit(main())
