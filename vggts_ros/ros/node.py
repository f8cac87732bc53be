"""The ``vggts`` ROS 2 node: synchronised cameras in, target masks, points and 3D objects out.

A thin adapter over the core (synchroniser, object intake, set processor, inference thread:
plain Python with their own tests); its ROS parts have their own modules: camera input
(``camera_input``), object services (``services``), parameters (``parameters``), outputs
(``outputs``, ``objects3d_io``), camera-rate propagation (``camera_rate``) and
``/diagnostics`` (``diagnostics``). This file wires them to the lifecycle.

One class, run two ways: ``vggts_node`` configures and activates itself (a bad configuration
or missing weights refuse the start); ``vggts_lifecycle_node`` (``managed=True``) follows
``lifecycle_msgs`` transitions: unconfigured (every parameter settable) -> configure (load and
warm up the backend, restore saved objects, subscribe) -> activate (services, synchroniser,
inference thread) -> deactivate (a set in inference finishes) -> cleanup (backend and objects
go). Diagnostics come in every state. Details: docs/node.md.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PointStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType, JumpThreshold
from rclpy.duration import Duration
from rclpy.exceptions import ParameterException
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn

from vggts_ros.backends import release_device_memory
from vggts_ros.checkpoint import CheckpointError
from vggts_ros.config import NodeConfig
from vggts_ros.frame_history import FrameHistory
from vggts_ros.health import CameraEvents, Health, Throttle
from vggts_ros.intake import ObjectIntake
from vggts_ros.object_store import ObjectStore
from vggts_ros.registry import ObjectRegistry
from vggts_ros.ros import diagnostics
from vggts_ros.ros.camera_input import FRAMES_KEPT, CameraInput
from vggts_ros.ros.camera_rate import CameraRate
from vggts_ros.ros.objects3d_io import Objects3DIO, make_step
from vggts_ros.ros.outputs import Outputs
from vggts_ros.ros.parameters import NodeParameters
from vggts_ros.ros.services import ObjectServices
from vggts_ros.propagation import PropagationConfig
from vggts_ros.propagation_stage import PropagationStage
from vggts_ros.set_processor import SetProcessor, apply_advances
from vggts_ros.srv import ClearObjects, ClickToMask, SetSourceMask
from vggts_ros.sync import ApproximateTimeSync, SyncSet
from vggts_ros.worker import LatestWorker

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
        # publish.propagation: masks on every camera frame between cross-view results
        self.stage: Optional[PropagationStage] = None
        self.camera_rate: Optional[CameraRate] = None
        self.object_services = ObjectServices(self)
        self.camera_input = CameraInput(self)
        self._io_group = ReentrantCallbackGroup()
        self._service_group = MutuallyExclusiveCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()
        self.io3d = Objects3DIO(self, self._io_group, lambda frame: frame.meta.payload.msg.header)
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
        self.history = FrameHistory(names, inf.keyframe_history, FRAMES_KEPT)
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
            self.io3d.update(self.cfg, self.processor.objects3d, self.outputs.infos, lambda: self._active)
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
        """The backend (weights loaded and warmed up), its set processor and the propagation stage."""
        from vggts_ros.backends import load_backend

        backend = load_backend(self.cfg, self._given)
        if backend.warm_up_error:
            self.get_logger().warning(f"backend warm-up failed ({backend.warm_up_error}); "
                                      "the first set pays for the backend's start-up")
        self.segmentor, self.device = backend.segmentor, backend.device
        roles = {c.name: c.role for c in self.cfg.cameras}
        self.processor = SetProcessor(backend.segmentor, roles, self.cfg.inference.source_mode,
                                      stale_after=self.cfg.sync.stale_after,
                                      objects3d=make_step(self.cfg, lambda: self.cfg.sync.slop))
        p = self.cfg.publish
        self.stage = PropagationStage(roles, PropagationConfig(max_age=p.max_age), backend=self.processor.backend,
                                      max_pairs=p.refresh_pairs or None) if p.propagation else None
        self.get_logger().info(f"backend {self.processor.backend} ready on {self.device} in {backend.seconds:.1f} s "
                               f"(load {backend.load_seconds:.1f} s, warm-up {backend.warm_up_seconds:.1f} s)")

    def _restore_objects(self) -> None:
        """``objects.state_dir``: the objects saved before a restart come back; every change is saved."""
        if self.cfg.objects.state_dir:
            log = self.get_logger()
            ObjectStore(self.cfg.objects.state_dir).attach(
                self.registry, [c.name for c in self.cfg.cameras], lambda: self.cfg.inference.source_mode,
                info=log.info, warning=log.warning, error=log.error)
            self.health.objects_changed(len(self.registry), time.monotonic())

    def _unload(self) -> None:
        self.segmentor = self.processor = self.stage = None
        self._reset_state()
        release_device_memory()

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
        subs = self.camera_input.subscribe(self.cfg.cameras, self._io_group, self._service_group)
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
        self.create_timer(0.1, self.camera_input.poll, callback_group=self._timer_group, clock=self._steady)
        jump = self.get_clock().create_jump_callback(
            JumpThreshold(min_forward=None, min_backward=Duration(nanoseconds=-int(s.jump_threshold * 1e9)),
                          on_clock_change=True),
            post_callback=self.camera_input.time_jumped)
        self.worker = LatestWorker(self._process, self._on_failure, lambda: self.cfg.inference.max_rate)
        if self.stage is not None:
            self.camera_rate = CameraRate(self, self.stage)
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
        if self.camera_rate is not None:
            self.camera_rate.stop(timeout=5)
            self.camera_rate = None
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
        if self.stage is not None:
            self.stage.set_limits(cfg.publish.max_age, cfg.publish.refresh_pairs or None)
        self.cfg = cfg
        self.get_logger().info("parameters changed: " + ", ".join(f"{p.name}={p.value!r}" for p in changed))

    # ------------------------------------------------------------------ inference
    def _on_failure(self, item: SyncSet, exc: BaseException) -> None:
        """A failed set is logged (throttled), counted and skipped; the node keeps serving."""
        error, now = f"{type(exc).__name__}: {exc}", time.monotonic()
        self.health.failure(now, error)
        self.throttle.say("inference", now, self.get_logger().error,
                          f"inference failed on the set at {item.stamp:.3f} s: {error}")
        release_device_memory()

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
            self.camera_input.reject(r.camera, r.stamp, r.problem, t_start)
        generation, objects = self.registry.snapshot()
        processor.retain(o.object_id for o in objects)  # objects cleared while a set was in flight
        if not objects or not frames:
            return
        stage = self.stage
        targets = stage.choose(item.stamp, objects) if stage is not None else None
        output = processor.process(item.stamp, frames, objects, targets)
        t_publish = time.monotonic()
        with self.registry.lock:
            if not self.registry.is_current(generation):
                # Objects were cleared or replaced while this set was in inference.
                self.health.stale_discarded += 1
                if stage is not None:
                    stage.cancel(targets)
                return
            for lost in apply_advances(output, self.registry):
                self._lost(lost)
            self.io3d.publish(output, frames)
            if stage is not None:
                # The results restart the camera-rate tracks (caught up with the frames
                # since); the next frame of each camera publishes them.
                stage.accept(output, {o.object_id: o for o in self.registry.snapshot()[1]}, targets)
            else:
                for cam in output.cameras:
                    self.outputs.publish(cam, cam.frame.meta.payload.msg.header, self.io3d.markers(cam.camera))
        done = time.monotonic()
        stages = dict(output.stages, decode=t_publish - t_start - output.pipeline_seconds, queued=queued,
                      publish=done - t_publish)
        self.sets_processed += 1
        self.health.output(done, done - t_start)
        last_arrival = max(f.meta.arrival for f in frames.values())
        self.last = diagnostics.SetTiming(item.stamp, done - last_arrival, output.pipeline_seconds, queued, stages)

    def _lost(self, advance) -> None:
        obj = advance.object
        self.throttle.say(f"lost:{obj.object_id}", time.monotonic(), self.get_logger().warning,
                          f"object {obj.object_id}: lost in source camera {obj.camera!r} at {advance.frame.stamp:.3f} "
                          "s; keeping the previous source frame")

    # ------------------------------------------------------------------ diagnostics
    def status_name(self, what: str) -> str:
        return f"{self.get_fully_qualified_name().lstrip('/')}: {what}"

    def _publish_diagnostics(self) -> None:
        self._diag_pub.publish(diagnostics.array(self.get_clock().now().to_msg(), diagnostics.node_statuses(self)))

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
