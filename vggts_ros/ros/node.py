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
from typing import Any, Dict, List, Optional, Tuple

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Point, PointStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType, JumpThreshold
from rclpy.duration import Duration
from rclpy.exceptions import ParameterException
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos import qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CompressedImage, Image

from vggts_ros.checkpoint import CheckpointError
from vggts_ros.config import NodeConfig
from vggts_ros.frame_history import Frame, FrameHistory
from vggts_ros.health import CameraEvents, Health, Throttle
from vggts_ros.intake import ObjectIntake
from vggts_ros.object_store import ObjectStore
from vggts_ros.registry import ObjectRegistry
from vggts_ros.ros import diagnostics
from vggts_ros.ros.conversions import ReceivedImage, check_size
from vggts_ros.ros.outputs import Outputs, mouse_topic
from vggts_ros.ros.parameters import NodeParameters
from vggts_ros.ros.services import ObjectServices, stamp_to_sec
from vggts_ros.set_processor import SetProcessor, apply_advances
from vggts_ros.srv import ClearObjects, ClickToMask, SetSourceMask
from vggts_ros.sync import ApproximateTimeSync, SyncSet
from vggts_ros.worker import LatestWorker

_FRAMES_KEPT = 120  # per camera, whatever keyframe_history says (memory bound)
ERRORS = (ValueError, CheckpointError, RuntimeError)  # a configuration or backend that cannot start


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
        self.object_services = ObjectServices(self)
        self._io_group = ReentrantCallbackGroup()
        self._service_group = MutuallyExclusiveCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()
        self.parameters = NodeParameters(self, managed, lambda: self.lifecycle_state not in ("unconfigured", "finalized"),
                                         self._parameters_changed)
        self.cfg = self.parameters.config()
        self._reset_state()
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = None
        self._start_diagnostics()
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
        self.camera_events = CameraEvents()
        self.sets_processed = 0
        self.sync: Optional[ApproximateTimeSync] = None
        self.intake = ObjectIntake(self.registry, self.history, names, max(self.cfg.sync.slop, 1e-3),
                                   {c.name: c.topic for c in self.cfg.cameras})

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state) -> TransitionCallbackReturn:
        self._configure_error = None
        try:
            self.parameters.declare_cameras()
            self.cfg = self.parameters.config()
            self._reset_state()
            self._load()
            self._restore_objects()
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
            if self.cfg.model.backend == "vggts":  # the weight-free backend never imports torch
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

    def _restore_objects(self) -> None:
        """``objects.state_dir``: the objects saved before a restart come back, and every
        change is saved from now on (vggts_ros.object_store)."""
        if not self.cfg.objects.state_dir:
            return
        store = ObjectStore(self.cfg.objects.state_dir)
        ids, problems = store.restore_into(self.registry, {c.name: None for c in self.cfg.cameras})
        for problem in problems:
            self.get_logger().warning(f"objects.state_dir: {problem}")
        if ids:
            self.get_logger().info(f"restored {len(ids)} object(s) from {store.dir}: ids {ids}")
        store.follow(self.registry, lambda: self.cfg.inference.source_mode,
                     lambda error: self.get_logger().error(error))
        self.health.objects_changed(len(self.registry), time.monotonic())

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
        for cam in self.cfg.cameras:  # rqt_image_view's clicks on each camera's stream
            subs[f"{cam.name}:mouse"] = self.create_subscription(
                Point, mouse_topic(subs[cam.name].topic_name), self.object_services.mouse_click(cam.name), 10,
                callback_group=self._service_group)
        if self._io is None:
            self.create_subscription(PointStamped, "~/click", self.object_services.click, 10,
                                     callback_group=self._service_group)
        self.topics = {c.name: subs[c.name].topic_name for c in self.cfg.cameras}
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
        self.create_service(SetSourceMask, "~/set_source_mask", self.object_services.set_source_mask,
                            callback_group=self._service_group)
        self.create_service(ClearObjects, "~/clear_objects", self.object_services.clear_objects,
                            callback_group=self._service_group)
        self.create_service(ClickToMask, "~/click_to_mask", self.object_services.click_to_mask_service,
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
    def _parameters_changed(self, cfg: NodeConfig, changed: list) -> None:
        """Live parameters take effect at once (the others wait for the next configure)."""
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
        self.get_logger().info("parameters changed: " + ", ".join(f"{p.name}={p.value!r}" for p in changed))

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
    def click_to_mask(self, camera: str, points=None, labels=None, box=None, object_id: int = 0, label: str = ""):
        """Points/box on a camera's newest frame -> GrabCut mask -> a stored object.
        Returns (accepted, mask); raises IntakeError naming the problem."""
        return self.object_services.click_to_mask(camera, points, labels, box, object_id, label)

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
        if "torch" not in sys.modules:  # nothing to release (and no reason to import it)
            return
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
            sizes = {c.name: processor.sizes.size(c.name) for c in self.cfg.cameras}
            for level, line in self.camera_events.update(self.sync.stale_cameras(now), dict(processor.sizes.changes),
                                                         sizes, self.sync.stale_limits()):
                if level == diagnostics.WARN:  # rclpy: one severity per call site
                    self.get_logger().warning(line)
                else:
                    self.get_logger().info(line)
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
