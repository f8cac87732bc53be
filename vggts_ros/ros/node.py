"""The ``vggts`` ROS 2 node: synchronised cameras in, target masks and points out.

A thin adapter over the core: the synchroniser (``vggts_ros.sync``), object intake
(``vggts_ros.intake``: services and clicks, NumPy in), the set processor
(``vggts_ros.set_processor``: the path ``vggts replay`` and the demo share) and the
inference thread (``vggts_ros.worker``) are plain Python with their own tests; the
publishers live in ``ros/outputs.py``, ``/diagnostics`` in ``ros/diagnostics.py``. This
file wires them to topics, services, parameters, timers and the lifecycle.

One class, two ways to run it: ``vggts_node`` starts configured and active
(``managed=False``: it configures and activates itself, and a configuration or checkpoint
error refuses the start); ``vggts_lifecycle_node`` (``managed=True``) follows
``lifecycle_msgs`` transitions:

* unconfigured: every parameter may be set (and is validated); nothing is loaded;
* configure: read the parameters, load and warm up the backend, subscribe to the cameras,
  create the outputs (a failure logs why and stays unconfigured);
* activate: services, the synchroniser's timer and the inference thread; deactivate stops
  them (a set in inference finishes first; images are ignored while inactive);
* cleanup: back to unconfigured: the backend and the objects go;
* diagnostics are published in every state (``state: unconfigured | inactive | active``).

Threads: the executor runs subscription, service and timer callbacks (cheap: they queue
messages, validate requests, publish diagnostics); the inference thread takes the newest
synchronised set (a newer one replaces any still waiting), runs the backend and publishes.
Results computed from objects that were cleared or replaced meanwhile are discarded.
Timers run on the steady clock, so diagnostics keep coming with ``use_sim_time`` and no
``/clock``; a ROS time jump back (a looped bag) restarts the synchroniser and the history.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PointStamped
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType, JumpThreshold
from rclpy.duration import Duration
from rclpy.exceptions import ParameterException
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CompressedImage, Image

from vggts_ros.checkpoint import CheckpointError
from vggts_ros.config import CAMERA_DEFAULTS, CAMERA_KEYS, CAMERA_PARAMETERS, PARAMETERS, NodeConfig
from vggts_ros.frame_history import Frame, FrameHistory
from vggts_ros.health import Health, Throttle
from vggts_ros.intake import IntakeError, ObjectIntake
from vggts_ros.registry import ObjectRegistry, RegistryError
from vggts_ros.ros import diagnostics
from vggts_ros.ros.conversions import (ImageError, check_size, compressed_size, compressed_to_rgb, fill_image,
                                       image_to_rgb, mask_from_image)
from vggts_ros.ros.outputs import Outputs, latest_header
from vggts_ros.set_processor import SetProcessor, apply_advances
from vggts_ros.srv import ClearObjects, ClickToMask, SetSourceMask
from vggts_ros.sync import ApproximateTimeSync, SyncSet
from vggts_ros.worker import LatestWorker

_FRAMES_KEPT = 120  # per camera, whatever keyframe_history says (memory bound)
_CAMERA_DEFAULTS = CAMERA_DEFAULTS  # declared with CameraConfig (vggts_ros/config.py)
ERRORS = (ValueError, CheckpointError, RuntimeError)  # a configuration or backend that cannot start


def stamp_to_sec(stamp) -> float:
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


@dataclass
class ReceivedImage:
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

    @property
    def frame_id(self) -> str:
        return self.msg.header.frame_id


def _descriptor(name: str) -> ParameterDescriptor:
    if name in PARAMETERS:
        text, live, bounds = PARAMETERS[name]
    else:  # camera.<name>.<key>
        text, live, bounds = CAMERA_PARAMETERS[name.rsplit(".", 1)[-1]], False, None
    desc = ParameterDescriptor(name=name, description=text + ("" if live else " (read-only once configured)"),
                               dynamic_typing=name != "cameras")
    if bounds is not None:
        lo, hi = bounds
        if isinstance(lo, int) and isinstance(hi, int):
            desc.integer_range = [IntegerRange(from_value=lo, to_value=hi, step=0)]
        else:
            desc.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
    return desc


def _is_live(name: str) -> bool:
    return name in PARAMETERS and PARAMETERS[name][1]


class VGGTSNode(LifecycleNode):
    """See the module docstring; parameters are those of ``vggts_ros.config.NodeConfig``.
    ``segmentor``: a ready backend (tests); None loads the one the parameters name."""

    def __init__(self, node_name: str = "vggts", segmentor=None, *, managed: bool = False, **kwargs) -> None:
        super().__init__(node_name, enable_communication_interface=managed, **kwargs)
        self.managed = managed
        self._given = segmentor
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.lifecycle_state = "unconfigured"
        self._configure_error: Optional[BaseException] = None
        self.segmentor = None
        self.processor: Optional[SetProcessor] = None
        self.device = "cpu"
        self.last: Optional[diagnostics.SetTiming] = None
        self._active = False
        self._io: Optional[Tuple[Tuple, Outputs, Dict]] = None  # (camera config key, outputs, subscriptions)
        self._entities: List[Tuple[Any, Any]] = []  # (destroy, entity) made by activate
        self.worker: Optional[LatestWorker] = None
        self._io_group = ReentrantCallbackGroup()
        self._service_group = MutuallyExclusiveCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()
        self.cfg = self._declare_parameters()
        self._reset_state()
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = None
        self._start_diagnostics()
        if hasattr(self, "add_post_set_parameters_callback"):
            self.add_on_set_parameters_callback(self._validate_parameters)
            self.add_post_set_parameters_callback(self._apply_parameters)
        else:  # Humble: no post-set callbacks; apply once validated
            self.add_on_set_parameters_callback(self._validate_and_apply)
        if not managed:
            self.trigger_configure()
            if self._configure_error is not None:
                raise self._configure_error
            self.trigger_activate()

    def _reset_state(self) -> None:
        """The objects, frames and counters of a configuration (fresh at configure and cleanup)."""
        names = [c.name for c in self.cfg.cameras]
        inf = self.cfg.inference
        self.registry = ObjectRegistry(inf.max_objects, inf.max_label_length)
        self.history = FrameHistory(names, inf.keyframe_history, _FRAMES_KEPT)
        self.health = Health(names, window=5.0, start=time.monotonic())
        self.throttle = Throttle(5.0)
        self.sets_processed = 0
        self.sync: Optional[ApproximateTimeSync] = None
        self.intake = ObjectIntake(self.registry, self.history, names, max(self.cfg.sync.slop, 1e-3),
                                   {c.name: c.topic for c in self.cfg.cameras})

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state) -> TransitionCallbackReturn:
        self._configure_error = None
        try:
            self._declare_cameras()
            self.cfg = self._config_from_parameters()
            self._reset_state()
            self._load()
            self._create_io()
            self._start_diagnostics()
        except Exception as exc:  # noqa: BLE001 - reported; a plain node re-raises it (refused start)
            self._configure_error = exc
            self.segmentor = self.processor = None
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        self.lifecycle_state = "inactive"
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        self._start()
        self.lifecycle_state = "active"
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._stop()
        self.lifecycle_state = "inactive"
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self._unload()
        self.lifecycle_state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self._stop()
        self._unload()
        self.lifecycle_state = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def _load(self) -> None:
        """The backend (weights loaded and warmed up) and its set processor."""
        from vggts_ros.backends import create_segmentor, pipeline_config, resolve_device, warm_up

        t0 = time.monotonic()
        segmentor = self._given
        self.device = "cpu"
        if segmentor is None:
            self.device = resolve_device(self.cfg.model.device)
            self.cfg.model.device = self.device
            segmentor = create_segmentor(self.cfg.model, pipeline_config(self.cfg.inference, self.cfg.model))
        loaded = time.monotonic() - t0
        warm = 0.0
        if self.cfg.inference.warm_up:
            try:
                warm = warm_up(segmentor)
            except Exception as exc:  # noqa: BLE001 - an optimisation: real frames will tell
                self.get_logger().warning(f"backend warm-up failed ({type(exc).__name__}: {exc}); "
                                          "the first set pays for the backend's start-up")
        self.segmentor = segmentor
        self.processor = SetProcessor(segmentor, {c.name: c.role for c in self.cfg.cameras},
                                      self.cfg.inference.source_mode, stale_after=self.cfg.sync.stale_after)
        self.get_logger().info(f"backend {self.processor.backend} ready on {self.device} in "
                               f"{loaded + warm:.1f} s (load {loaded:.1f} s, warm-up {warm:.1f} s)")

    def _unload(self) -> None:
        self.segmentor = self.processor = None
        self._reset_state()
        self._release_cuda_memory()

    def _create_io(self) -> None:
        """Camera and click subscriptions and every publisher; kept across deactivate and
        cleanup (destroying a subscription while a multi-threaded executor builds its wait
        set can raise InvalidHandle in the executor's thread), made anew only when the
        cameras changed between cleanup and configure."""
        key = tuple((c.name, c.topic, c.compressed) for c in self.cfg.cameras) + (self.cfg.publish.overlay,)
        if self._io is not None and self._io[0] == key:
            return
        if self._io is not None:
            _, outputs, subs = self._io
            outputs.destroy()
            for sub in subs.values():
                self.destroy_subscription(sub)
        qos_options = QoSOverridingOptions.with_default_policies()
        subs = {}
        for cam in self.cfg.cameras:
            subs[cam.name] = self.create_subscription(
                CompressedImage if cam.compressed else Image, cam.topic,
                lambda msg, name=cam.name: self._on_image(name, msg),
                qos_profile_sensor_data, callback_group=self._io_group, qos_overriding_options=qos_options)
        if self._io is None:
            self.create_subscription(PointStamped, "~/click", self._on_click, 10, callback_group=self._service_group)
        self.topics = {name: sub.topic_name for name, sub in subs.items()}
        self.intake.topics = dict(self.topics)
        self.get_logger().info("cameras: " + ", ".join(
            f"{c.name} ({c.role}{', required' if c.required else ''}, {self.topics[c.name]})" for c in self.cfg.cameras))
        self._io = (key, Outputs(self, self.cfg.cameras, self.cfg.publish.overlay, self._io_group), subs)

    @property
    def outputs(self) -> Outputs:
        return self._io[1]

    @property
    def _infos(self):  # the camera_info received per camera (tests read it)
        return self.outputs.infos

    def _start(self) -> None:
        """Services, timers, the synchroniser and the inference thread (activate)."""
        before = {kind: set(getattr(self, kind)) for kind in ("services", "timers")}
        s = self.cfg.sync
        self.sync = ApproximateTimeSync.from_config(s, self.cfg.cameras)
        self.create_service(SetSourceMask, "~/set_source_mask", self._on_set_source_mask,
                            callback_group=self._service_group)
        self.create_service(ClearObjects, "~/clear_objects", self._on_clear_objects,
                            callback_group=self._service_group)
        self.create_service(ClickToMask, "~/click_to_mask", self._on_click_to_mask,
                            callback_group=self._service_group)
        self.create_timer(0.1, self._on_poll, callback_group=self._timer_group, clock=self._steady)
        jump = self.get_clock().create_jump_callback(
            JumpThreshold(min_forward=None, min_backward=Duration(nanoseconds=-int(s.jump_threshold * 1e9)),
                          on_clock_change=True),
            post_callback=self._on_time_jump)
        self.worker = LatestWorker(self._process, self._on_failure, lambda: self.cfg.inference.max_rate)
        self._entities = [(getattr(self, "destroy_" + kind[:-1]), e) for kind in ("services", "timers")
                          for e in getattr(self, kind) if e not in before[kind]]
        self._entities.append((lambda handle: handle.unregister(), jump))
        self._active = True  # last: an image may arrive as soon as this is set

    def _stop(self) -> None:
        """Undo :meth:`_start` (deactivate): a set in inference finishes first."""
        self._active = False
        if self.worker is not None:
            # A thread left inside the model when the interpreter exits aborts the process;
            # main() exits hard if it takes too long.
            self.worker.stop(timeout=20)
        for destroy, entity in self._entities:
            destroy(entity)
        self._entities = []

    def _start_diagnostics(self) -> None:
        period = self.cfg.publish.diagnostics_period
        if self._diag_timer is not None and abs(self._diag_timer.timer_period_ns * 1e-9 - period) < 1e-9:
            return
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
        self._diag_timer = self.create_timer(period, self._publish_diagnostics, callback_group=self._timer_group,
                                             clock=self._steady)

    # ------------------------------------------------------------------ parameters
    def _declare_parameters(self) -> NodeConfig:
        """Declare every parameter (unknown overrides are refused) and return the configuration."""
        defaults = NodeConfig().to_parameters()
        self.declare_parameter("cameras", Parameter.Type.STRING_ARRAY, _descriptor("cameras"))
        for key, default in defaults.items():
            if key != "cameras":
                self.declare_parameter(key, default, _descriptor(key))
        self._declare_cameras()
        overrides = getattr(self, "_parameter_overrides", {}) or {}
        unknown = sorted(k for k in overrides if not self.has_parameter(k) and k != "use_sim_time"
                         and not k.startswith("qos_overrides."))
        if unknown:
            raise ValueError(f"unknown vggts parameter(s): {unknown}")
        return self._config_from_parameters()

    def _declare_cameras(self) -> None:
        for name in self.get_parameter("cameras").value or []:
            for key in CAMERA_KEYS:
                full = f"camera.{name}.{key}"
                if not self.has_parameter(full):
                    self.declare_parameter(full, _CAMERA_DEFAULTS[key], _descriptor(full))

    def _flat_parameters(self) -> Dict[str, Any]:
        names = list(self.get_parameter("cameras").value or [])
        flat: Dict[str, Any] = {"cameras": names}
        for key in NodeConfig().to_parameters():
            if key != "cameras":
                flat[key] = self.get_parameter(key).value
        for name in names:
            for key in CAMERA_KEYS:
                full = f"camera.{name}.{key}"
                flat[full] = self.get_parameter(full).value if self.has_parameter(full) else _CAMERA_DEFAULTS[key]
        return flat

    def _config_from_parameters(self, changes=()) -> NodeConfig:
        """The configuration of the current parameter values with ``changes`` applied."""
        flat = self._flat_parameters()
        for p in changes:
            flat[p.name] = p.value
        if "cameras" in {p.name for p in changes}:  # cameras named only now: their defaults
            for name in flat["cameras"] or []:
                for key in CAMERA_KEYS:
                    flat.setdefault(f"camera.{name}.{key}", _CAMERA_DEFAULTS[key])
        flat = {k: v for k, v in flat.items() if not k.startswith("camera.") or k.split(".")[1] in flat["cameras"]}
        cfg = NodeConfig.from_parameters(flat)
        for cam in cfg.cameras:
            cam.topic = cam.resolved_topic()
        return cfg.validate()

    @staticmethod
    def _mine(params) -> list:
        return [p for p in params if p.name in PARAMETERS or p.name.startswith("camera.")]

    def _validate_parameters(self, params) -> SetParametersResult:
        mine = self._mine(params)
        if not mine:
            return SetParametersResult(successful=True)
        if self.lifecycle_state not in ("unconfigured", "finalized"):
            fixed = [p.name for p in mine if not _is_live(p.name)]
            if fixed:
                how = "deactivate and clean up the lifecycle node first" if self.managed else "restart the node"
                return SetParametersResult(successful=False, reason=(
                    f"read-only while the node is configured: {', '.join(fixed)} ({how} to change it)"))
        try:
            self._config_from_parameters(mine)
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _validate_and_apply(self, params) -> SetParametersResult:
        result = self._validate_parameters(params)
        if result.successful:
            self._apply_parameters(params, pending=True)
        return result

    def _apply_parameters(self, params, pending: bool = False) -> None:
        """Live parameters take effect at once; the others at the next configure."""
        mine = self._mine(params)
        if not mine:
            return
        if self.lifecycle_state in ("unconfigured", "finalized"):
            if any(p.name == "cameras" for p in mine) and not pending:
                self._declare_cameras()  # the new cameras' parameters, settable before configure
            return
        cfg = self._config_from_parameters(mine if pending else ())
        cfg.model.device = self.cfg.model.device
        s, inf = cfg.sync, cfg.inference
        if self.sync is not None:
            self.sync.configure_from(s)
        self.registry.max_objects, self.registry.max_label_length = inf.max_objects, inf.max_label_length
        self.history.seconds = inf.keyframe_history
        self.intake.tolerance = max(s.slop, 1e-3)
        if self.processor is not None:
            self.processor.source_mode, self.processor.stale_after = inf.source_mode, s.stale_after
        self.cfg = cfg
        self.get_logger().info("parameters changed: " + ", ".join(f"{p.name}={p.value!r}" for p in mine))

    # ------------------------------------------------------------------ camera input
    def _on_image(self, camera: str, msg) -> None:
        if not self._active:  # inactive (or not yet configured)
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
        image = ReceivedImage(msg, cam.compressed, self.cfg.inference.max_image_pixels)
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
        self.intake.history = self.history
        self.get_logger().warning("ROS time jumped back: synchroniser and frame history restarted")

    def _dispatch(self, sets: List[SyncSet]) -> None:
        now = time.monotonic()
        for item in sets:
            self.health.set_received(now)
            if len(self.registry) > 0 and self.worker.submit(item):
                self.health.replaced += 1

    # ------------------------------------------------------------------ objects
    def _answer(self, what: str, ok: bool, message: str) -> None:
        if ok:
            self.get_logger().info(f"{what}: {message}")
        else:
            self.get_logger().warning(f"{what} refused: {message[:500]}")

    def _on_set_source_mask(self, request, response):
        try:
            m = request.mask
            self.intake.camera(request.camera)
            self.intake.check(request.object_id, request.label)
            problem = check_size(int(m.height), int(m.width), self.cfg.inference.max_image_pixels, "mask")
            if problem:
                raise IntakeError(f"bad mask image: {problem}")
            accepted = self.intake.set_mask(request.camera, lambda: mask_from_image(m), stamp_to_sec(request.stamp),
                                            request.object_id, request.label, (int(m.height), int(m.width)))
            self._objects_changed()
            response.success, response.message, response.object_id = True, accepted.message, accepted.object.object_id
            response.frame_stamp = accepted.frame.payload.msg.header.stamp
        except IntakeError as exc:
            response.success, response.message, response.object_id = False, str(exc), 0
        except Exception as exc:  # noqa: BLE001 - the node must answer, whatever went wrong
            self.get_logger().error(f"set_source_mask failed: {type(exc).__name__}: {exc}")
            response.success, response.message, response.object_id = False, f"internal error: {type(exc).__name__}: {exc}", 0
        self._answer("set_source_mask", response.success, response.message)
        return response

    def click_to_mask(self, camera: str, points=None, labels=None, box=None, object_id: int = 0, label: str = ""):
        """Points/box on a camera's newest frame -> GrabCut mask -> a stored object.
        Returns (accepted, mask); raises IntakeError naming the problem."""
        accepted, mask = self.intake.click(camera, points, labels, box, object_id, label)
        self._objects_changed()
        return accepted, mask

    def _on_click(self, msg) -> None:
        """``~/click``: ``header.frame_id`` names the camera (its name, or the ``frame_id`` of its
        images), ``point.x, point.y`` a pixel on the object in that camera's newest frame."""
        if not self._active:
            self.get_logger().warning("click ignored: the node is not active")
            return
        try:
            ok, message = True, self.click_to_mask(msg.header.frame_id, [(msg.point.x, msg.point.y)])[0].message
        except IntakeError as exc:
            ok, message = False, str(exc)
        except Exception as exc:  # noqa: BLE001 - a bad click must not take the node down
            ok, message = False, f"internal error: {type(exc).__name__}: {exc}"
        self._answer("click", ok, message)
        level = diagnostics.OK if ok else diagnostics.WARN
        self._diag_pub.publish(diagnostics.array(self.get_clock().now().to_msg(), [diagnostics.status(
            level, self.status_name("click"), message if ok else f"click refused: {message}", {})]))

    def _on_click_to_mask(self, request, response):
        pts = np.asarray(request.points, np.float64)
        try:
            if len(pts) % 2:
                raise IntakeError(f"points must be x, y pairs; got {len(pts)} numbers")
            accepted, mask = self.click_to_mask(
                request.camera, pts.reshape(-1, 2).tolist() if len(pts) else None,
                list(request.labels) if len(request.labels) else None,
                list(request.box) if len(request.box) else None, request.object_id, request.label)
            response.success, response.message, response.object_id = True, accepted.message, accepted.object.object_id
            response.frame_stamp = accepted.frame.payload.msg.header.stamp
            fill_image(response.mask, mask.astype(np.uint8) * 255, "mono8")
        except IntakeError as exc:
            response.success, response.message, response.object_id = False, str(exc), 0
        except Exception as exc:  # noqa: BLE001 - the node must answer, whatever went wrong
            response.success, response.message, response.object_id = False, f"internal error: {type(exc).__name__}: {exc}", 0
        self._answer("click_to_mask", response.success, response.message)
        return response

    def _objects_changed(self) -> None:
        self.health.objects_changed(len(self.registry), time.monotonic())

    def _on_clear_objects(self, request, response):
        oid = int(request.object_id)
        try:
            with self.registry.lock:
                removed = self.registry.clear(oid)
                for gone in removed:
                    self.processor.remove_object(gone)
                self._publish_cleared()
            response.success = True
            response.message = f"cleared {len(removed)} object(s)" if oid == 0 else f"cleared object {oid}"
        except RegistryError as exc:
            response.success, response.message = False, str(exc)
        if response.success:
            self._objects_changed()
            if not len(self.registry):
                self.worker.discard()
        self.get_logger().info(f"clear_objects: {response.message}")
        return response

    def _publish_cleared(self) -> None:
        """Cameras that no remaining object will update get an empty output (their newest
        frame's stamp)."""
        _, objects = self.registry.snapshot()
        track = self.cfg.inference.source_mode == "track"
        still = {c.name for c in self.cfg.cameras for o in objects if o.camera != c.name or track}
        self.outputs.publish_cleared(self.outputs.published_on - still,
                                     lambda camera: latest_header(self.history, self.processor.sizes, camera))

    # ------------------------------------------------------------------ inference
    def _on_failure(self, item: SyncSet, exc: BaseException) -> None:
        """A failed set is logged (throttled), counted and skipped; the node keeps serving."""
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
        except Exception:  # noqa: BLE001
            pass

    def _process(self, item: SyncSet, queued: float = 0.0) -> None:
        processor = self.processor
        try:
            self._process_set(processor, item, queued)
        finally:
            # A set in inference during a clear may have written memory for objects that
            # are gone (also when it failed part-way): only current objects keep a stream.
            with self.registry.lock:
                processor.retain(self.registry.ids())

    def _process_set(self, processor: SetProcessor, item: SyncSet, queued: float) -> None:
        t_start = time.monotonic()
        frames, rejected = processor.usable(item.messages, lambda f: f.payload.rgb(), lambda f: f.stamp)
        for r in rejected:
            self._reject(r.camera, r.stamp, r.problem, t_start)
        generation, objects = self.registry.snapshot()
        processor.retain(o.object_id for o in objects)  # objects cleared while a set was in flight
        if not objects or not frames:
            return
        output = processor.process(item.stamp, frames, objects)
        t_publish = time.monotonic()
        with self.registry.lock:
            if not self.registry.is_current(generation):
                # Objects were cleared or replaced while this set was in inference.
                self.health.stale_discarded += 1
                return
            for lost in apply_advances(output, self.registry):
                self._lost(lost)
            for cam in output.cameras:
                self.outputs.publish(cam, cam.frame.meta.payload.msg.header)
        done = time.monotonic()
        stages = dict(output.stages, decode=t_publish - t_start - output.pipeline_seconds, queued=queued,
                      publish=done - t_publish)
        self.sets_processed += 1
        self.health.output(done, done - t_start)
        last_arrival = max(f.meta.arrival for f in frames.values())
        self.last = diagnostics.SetTiming(item.stamp, done - last_arrival, output.pipeline_seconds, queued, stages)

    def _lost(self, advance) -> None:
        obj, now = advance.object, time.monotonic()
        if self.throttle.ready(f"lost:{obj.object_id}", now):
            more = self.throttle.take_suppressed(f"lost:{obj.object_id}")
            self.get_logger().warning(
                f"object {obj.object_id}: lost in source camera {obj.camera!r} at {advance.frame.stamp:.3f} s; "
                "keeping the previous source frame" + (f" (+{more} more)" if more else ""))

    # ------------------------------------------------------------------ diagnostics
    def status_name(self, what: str) -> str:
        return f"{self.get_fully_qualified_name().lstrip('/')}: {what}"

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        name = self.status_name("pipeline")
        if not self._active or self.sync is None:
            error = "" if self._configure_error is None else f"configure failed: {self._configure_error}"
            statuses = [diagnostics.not_running(name, self.lifecycle_state, [c.name for c in self.cfg.cameras],
                                                self.device, error)]
        else:
            processor = self.processor
            state_values = processor.state.describe(self.registry.ids()) if processor is not None else {}
            statuses = [diagnostics.pipeline_status(
                name, now=now, cfg=self.cfg, health=self.health, sync=self.sync, registry=self.registry,
                state_values=state_values, sets_processed=self.sets_processed, last=self.last, device=self.device,
                backend=processor.backend if processor is not None else "", lifecycle_state=self.lifecycle_state)]
            statuses += diagnostics.camera_statuses(self.status_name, now=now, cfg=self.cfg, health=self.health,
                                                    sync=self.sync, sizes=processor.sizes, topics=self.topics)
        self._diag_pub.publish(diagnostics.array(self.get_clock().now().to_msg(), statuses))

    # ------------------------------------------------------------------ stopping
    def stop_processing(self) -> None:
        """Stop taking sets; the one in inference finishes and is published first."""
        self._stop()

    def destroy_node(self):
        self._stop()  # nothing to stop when construction failed part-way or not active
        return super().destroy_node()

    @property
    def busy(self) -> bool:
        """The inference thread is still running (inside the model)."""
        return self.worker is not None and self.worker.alive


def main(argv: Optional[List[str]] = None, managed: bool = False) -> int:
    """``vggts_node [--ros-args --params-file config.yaml ...]`` (also ``ros2 run``)."""
    from vggts_ros.ros import runner, transport

    def make_node():
        try:
            return VGGTSNode(managed=managed)
        except ParameterException as exc:  # a value outside its descriptor's range or type
            raise ValueError(f"bad parameter: {exc}") from exc

    # transport before the context: the node publishes images too
    return runner.run(make_node, list(sys.argv if argv is None else argv), configure=transport.configure,
                      refusals=ERRORS[:2])


if __name__ == "__main__":
    sys.exit(main())
