"""The ``vggts`` ROS 2 node: synchronised cameras in, target masks and points out.

Threads: the executor runs subscription, service and timer callbacks (cheap: they queue
messages, validate requests, publish diagnostics); one inference thread takes the
newest synchronised set, runs the backend and publishes. A set that arrives while the
previous one is being processed replaces any set still waiting, so latency stays
bounded when the model is slower than the cameras.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, List, Optional, Tuple

import numpy as np

import rclpy
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.qos import qos_profile_sensor_data
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from sensor_msgs.msg import CompressedImage, Image

from vggts_ros.checkpoint import CheckpointError
from vggts_ros.config import NodeConfig, PipelineConfig
from vggts_ros.msg import ObjectPoints, ProjectedPoints
from vggts_ros.ros.conversions import ImageError, check_pixels, compressed_to_rgb, fill_image, image_to_rgb, mask_from_image
from vggts_ros.srv import ClearObjects, SetSourceMask
from vggts_ros.sync import ApproximateTimeSync, SyncSet
from vggts_ros.types import SegmentationResult, TargetView
from vggts_ros.visualize import overlay_masks


def stamp_to_sec(stamp) -> float:
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


@dataclass
class Frame:
    """One received camera message, decoded lazily (decoding costs time)."""

    camera: str
    msg: Any
    stamp: float
    arrival: float
    compressed: bool
    _rgb: Optional[np.ndarray] = None

    def rgb(self) -> np.ndarray:
        if self._rgb is None:
            self._rgb = compressed_to_rgb(self.msg) if self.compressed else image_to_rgb(self.msg)
        return self._rgb


@dataclass
class TrackedObject:
    object_id: int
    camera: str
    label: str
    image: np.ndarray  # source frame the mask belongs to (RGB)
    mask: np.ndarray  # bool, same size as image
    stamp: float
    version: int = 0


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


@dataclass
class Stats:
    sets_received: int = 0
    sets_processed: int = 0
    sets_replaced: int = 0
    sets_failed: int = 0
    frames_rejected: Dict[str, int] = field(default_factory=dict)
    last_reject: Dict[str, str] = field(default_factory=dict)
    last: Optional["SetTiming"] = None  # replaced whole, so readers see one consistent set
    processed_times: Deque[float] = field(default_factory=lambda: deque(maxlen=50))
    last_error: str = ""


_DYNAMIC = ParameterDescriptor(dynamic_typing=True)


class VGGTSNode(Node):
    """See the module docstring; parameters are those of ``vggts_ros.config.NodeConfig``."""

    def __init__(self, node_name: str = "vggts", segmentor=None, **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self.cfg = self._read_config()
        self.get_logger().info(
            f"cameras: {', '.join(f'{c.name} ({c.role}, {c.resolved_topic()})' for c in self.cfg.cameras)}"
        )
        self._lock = threading.RLock()
        self._objects: Dict[int, TrackedObject] = {}
        self._history: Dict[str, Deque[Frame]] = {
            c.name: deque(maxlen=max(1, self.cfg.inference.keyframe_history)) for c in self.cfg.cameras
        }
        self._sizes: Dict[str, Tuple[int, int]] = {}
        self.stats = Stats(frames_rejected={c.name: 0 for c in self.cfg.cameras})

        self.device = "cpu"
        if segmentor is None:
            from vggts_ros.backends import create_segmentor, resolve_device

            self.device = resolve_device(self.cfg.model.device)
            self.cfg.model.device = self.device
            pipeline = PipelineConfig(refine_iterations=self.cfg.inference.refine_iterations,
                                      backbone_dtype=self.cfg.model.dtype)
            t0 = time.monotonic()
            segmentor = create_segmentor(self.cfg.model, pipeline)
            self.get_logger().info(
                f"backend {getattr(segmentor, 'name', type(segmentor).__name__)} ready on {self.device} "
                f"in {time.monotonic() - t0:.1f} s"
            )
        self.segmentor = segmentor

        self.sync = ApproximateTimeSync(
            [c.name for c in self.cfg.cameras], slop=self.cfg.sync.slop, queue_size=self.cfg.sync.queue_size,
            stale_after=self.cfg.sync.stale_after,
        )

        self._io_group = ReentrantCallbackGroup()
        self._service_group = MutuallyExclusiveCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()
        for cam in self.cfg.cameras:
            msg_type = CompressedImage if cam.compressed else Image
            self.create_subscription(
                msg_type, cam.resolved_topic(), lambda msg, name=cam.name: self._on_image(name, msg),
                qos_profile_sensor_data, callback_group=self._io_group,
            )
        self._mask_pubs = {c.name: self.create_publisher(Image, f"~/{c.name}/mask", 10) for c in self.cfg.cameras}
        self._points_pubs = {
            c.name: self.create_publisher(ProjectedPoints, f"~/{c.name}/points", 10) for c in self.cfg.cameras
        }
        self._overlay_pubs = (
            {c.name: self.create_publisher(Image, f"~/{c.name}/overlay", 10) for c in self.cfg.cameras}
            if self.cfg.publish.overlay else {}
        )
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_service(SetSourceMask, "~/set_source_mask", self._on_set_source_mask,
                            callback_group=self._service_group)
        self.create_service(ClearObjects, "~/clear_objects", self._on_clear_objects,
                            callback_group=self._service_group)
        self.create_timer(0.1, self._on_poll, callback_group=self._timer_group)
        self.create_timer(max(0.05, self.cfg.publish.diagnostics_period), self._publish_diagnostics,
                          callback_group=self._timer_group)

        self._pending: Optional[Tuple[SyncSet, float]] = None
        self._wake = threading.Condition()
        self._running = True
        self._worker = threading.Thread(target=self._worker_loop, name="vggts-inference", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------ parameters
    def _read_config(self) -> NodeConfig:
        defaults = NodeConfig().to_parameters()
        cameras = self.declare_parameter("cameras", Parameter.Type.STRING_ARRAY).value or []
        cameras = list(cameras)
        flat: Dict[str, Any] = {"cameras": cameras}
        for name in cameras:
            for key, default in (("topic", ""), ("role", "exo"), ("compressed", False)):
                full = f"camera.{name}.{key}"
                flat[full] = self.declare_parameter(full, default, _DYNAMIC).value
        for key, default in defaults.items():
            if key == "cameras":
                continue
            flat[key] = self.declare_parameter(key, default, _DYNAMIC).value
        overrides = getattr(self, "_parameter_overrides", {}) or {}
        unknown = sorted(k for k in overrides if not self.has_parameter(k) and k != "use_sim_time"
                         and not k.startswith("qos_overrides."))
        if unknown:
            raise ValueError(f"unknown vggts parameter(s): {unknown}")
        cfg = NodeConfig.from_parameters(flat)
        for cam in cfg.cameras:
            cam.topic = cam.resolved_topic()
        return cfg.validate()

    # ------------------------------------------------------------------ input
    def _on_image(self, camera: str, msg) -> None:
        now = time.monotonic()
        frame = Frame(camera, msg, stamp_to_sec(msg.header.stamp), now, self.cfg.camera(camera).compressed)
        with self._lock:
            self._history[camera].append(frame)
        self._dispatch(self.sync.add(camera, frame.stamp, frame, now=now))

    def _on_poll(self) -> None:
        self._dispatch(self.sync.poll())

    def _dispatch(self, sets: List[SyncSet]) -> None:
        if not sets:
            return
        with self._lock:
            have_objects = bool(self._objects)
        with self._wake:
            for item in sets:
                self.stats.sets_received += 1
                if not have_objects:
                    continue
                if self._pending is not None:
                    self.stats.sets_replaced += 1
                self._pending = (item, time.monotonic())
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
            self.get_logger().warning(f"set_source_mask refused: {message}")
        return response

    def _set_source_mask(self, req) -> Tuple[bool, str, int, Any]:
        names = [c.name for c in self.cfg.cameras]
        if req.camera not in names:
            return False, f"unknown camera {req.camera!r}; this node's cameras are {names}", 0, None
        try:
            mask = mask_from_image(req.mask)
        except ImageError as exc:
            return False, f"bad mask image: {exc}", 0, None
        want = stamp_to_sec(req.stamp)
        frame, why = self._find_frame(req.camera, want)
        if frame is None:
            return False, why, 0, None
        try:
            image = frame.rgb()
        except ImageError as exc:
            return False, f"the frame of camera {req.camera!r} at {frame.stamp:.3f} s cannot be decoded: {exc}", 0, None
        if mask.shape != image.shape[:2]:
            return False, (
                f"mask is {mask.shape[1]}x{mask.shape[0]} but camera {req.camera!r} frames are "
                f"{image.shape[1]}x{image.shape[0]} (width x height)"
            ), 0, None
        area = int(mask.sum())
        if area == 0:
            return False, "mask is empty: no nonzero pixel marks the object", 0, None
        problem = check_pixels(image)
        if problem:
            return False, f"the frame of camera {req.camera!r} at {frame.stamp:.3f} s is unusable: {problem}", 0, None
        with self._lock:
            object_id = int(req.object_id)
            if object_id == 0:
                free = [i for i in range(1, 256) if i not in self._objects]
                if not free:
                    return False, "all object ids 1..255 are in use; clear one first", 0, None
                object_id = free[0]
            replaced = object_id in self._objects
            version = self._objects[object_id].version + 1 if replaced else 0
            self._objects[object_id] = TrackedObject(
                object_id, req.camera, req.label, image.copy(), mask.copy(), frame.stamp, version
            )
        verb = "replaced" if replaced else "set"
        return True, (
            f"object {object_id} {verb} on camera {req.camera!r}: {area} px on the frame at {frame.stamp:.3f} s"
        ), object_id, frame.msg.header.stamp

    def _find_frame(self, camera: str, stamp: float) -> Tuple[Optional[Frame], str]:
        with self._lock:
            frames = list(self._history[camera])
        topic = self.cfg.camera(camera).resolved_topic()
        if not frames:
            return None, f"no frame received yet from camera {camera!r} (topic {topic})"
        if stamp == 0.0:
            return frames[-1], ""
        best = min(frames, key=lambda f: abs(f.stamp - stamp))
        tolerance = max(self.cfg.sync.slop, 1e-3)
        if abs(best.stamp - stamp) > tolerance:
            return None, (
                f"no frame from camera {camera!r} at stamp {stamp:.3f} s (within {tolerance:.3f} s); "
                f"kept frames span {frames[0].stamp:.3f} .. {frames[-1].stamp:.3f} s"
            )
        return best, ""

    def _on_clear_objects(self, request, response):
        with self._lock:
            if request.object_id == 0:
                count = len(self._objects)
                self._objects.clear()
                response.success, response.message = True, f"cleared {count} object(s)"
            elif request.object_id in self._objects:
                del self._objects[request.object_id]
                response.success, response.message = True, f"cleared object {request.object_id}"
            else:
                response.success = False
                response.message = f"no object with id {request.object_id}; current ids: {sorted(self._objects)}"
        if response.success:
            with self._wake:
                if not self._objects:
                    self._pending = None
        self.get_logger().info(f"clear_objects: {response.message}")
        return response

    # ------------------------------------------------------------------ inference
    def _worker_loop(self) -> None:
        min_period = 1.0 / self.cfg.inference.max_rate if self.cfg.inference.max_rate > 0 else 0.0
        last_start = 0.0
        while True:
            with self._wake:
                while self._running and self._pending is None:
                    self._wake.wait(timeout=0.5)
                if not self._running:
                    return
                (item, queued_at), self._pending = self._pending, None
            wait = last_start + min_period - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            last_start = time.monotonic()
            try:
                self._process(item, last_start - queued_at)
            except Exception as exc:  # a failed set is skipped, the node keeps serving
                self.stats.sets_failed += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                self.get_logger().error(f"inference failed on the set at {item.stamp:.3f} s: {self.stats.last_error}")
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
        for name, frame in item.messages.items():
            try:
                image = frame.rgb()
                problem = check_pixels(image)
            except ImageError as exc:
                problem = f"cannot decode: {exc}"
            if not problem:
                size = image.shape[:2]
                expected = self._sizes.setdefault(name, size)
                if size != expected:
                    problem = (f"frame size changed mid-stream to {size[1]}x{size[0]} "
                               f"(stream started at {expected[1]}x{expected[0]})")
            if problem:
                self.stats.frames_rejected[name] = self.stats.frames_rejected.get(name, 0) + 1
                if self.stats.last_reject.get(name) != problem:
                    self.get_logger().warning(f"camera {name!r}: frame at {frame.stamp:.3f} s skipped: {problem}")
                self.stats.last_reject[name] = problem
                continue
            usable[name] = (frame, image)
        return usable

    def _process(self, item: SyncSet, queued: float = 0.0) -> None:
        t_start = time.monotonic()
        frames = self._usable_frames(item)
        with self._lock:
            objects = list(self._objects.values())
        if not objects or len(frames) < 1:
            return
        roles = {c.name: c.role for c in self.cfg.cameras}
        track = self.cfg.inference.source_mode == "track"
        per_target: Dict[str, List[Tuple[TrackedObject, SegmentationResult]]] = {}
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
            if len(members) > 1 and hasattr(self.segmentor, "segment_objects"):
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
                        self._advance_source(obj, frames[name], result)
                    per_target.setdefault(name, []).append((obj, result))
            for stage, seconds in call_stages.items():
                stage_totals[stage] = stage_totals.get(stage, 0.0) + seconds
        t_publish = time.monotonic()
        last_arrival = max(f.arrival for f, _ in frames.values())
        for name, pairs in per_target.items():
            self._publish(name, frames[name], pairs)
        done = time.monotonic()
        stage_totals["decode"] = t_publish - t_start - pipeline_seconds
        stage_totals["queued"] = queued
        stage_totals["publish"] = done - t_publish
        self.stats.sets_processed += 1
        self.stats.processed_times.append(done)
        self.stats.last = SetTiming(item.stamp, done - last_arrival, pipeline_seconds, queued, stage_totals)

    def _advance_source(self, obj: TrackedObject, frame_image: Tuple[Frame, np.ndarray], result) -> None:
        """Track mode: the source mask follows the object into the newest source frame."""
        frame, image = frame_image
        if not result.mask.any():
            self.get_logger().warning(
                f"object {obj.object_id}: lost in source camera {obj.camera!r} at {frame.stamp:.3f} s; "
                "keeping the previous source frame"
            )
            return
        with self._lock:
            current = self._objects.get(obj.object_id)
            if current is None or current.version != obj.version:
                return  # replaced or cleared meanwhile
            current.image, current.mask, current.stamp = image, result.mask.astype(bool), frame.stamp

    def _publish(self, camera: str, frame_image: Tuple[Frame, np.ndarray], pairs) -> None:
        frame, image = frame_image
        header = frame.msg.header
        labels = np.zeros(image.shape[:2], dtype=np.uint8)
        points = ProjectedPoints()
        points.header = header
        points.target_camera = camera
        points.source_camera = ",".join(sorted({obj.camera for obj, _ in pairs}))
        for obj, result in sorted(pairs, key=lambda p: p[1].score):
            labels[result.mask.astype(bool)] = obj.object_id
        for obj, result in pairs:
            entry = ObjectPoints()
            entry.object_id = obj.object_id
            entry.source_xy = np.asarray(result.source_points, dtype=np.float32).reshape(-1).tolist()
            entry.target_xy = np.asarray(result.target_points, dtype=np.float32).reshape(-1).tolist()
            entry.visibility = np.asarray(result.visibility, dtype=np.float32).reshape(-1).tolist()
            entry.confidence = np.asarray(result.confidence, dtype=np.float32).reshape(-1).tolist()
            entry.score = float(result.score)
            entry.label = obj.label
            entry.area = int((labels == obj.object_id).sum())
            points.objects.append(entry)
        mask_msg = Image()
        mask_msg.header = header
        fill_image(mask_msg, labels, "mono8")
        self._mask_pubs[camera].publish(mask_msg)
        self._points_pubs[camera].publish(points)
        if camera in self._overlay_pubs:
            overlay = Image()
            overlay.header = header
            fill_image(overlay, overlay_masks(image, labels, [np.asarray(r.target_points).reshape(-1, 2) for _, r in pairs]), "rgb8")
            self._overlay_pubs[camera].publish(overlay)

    # ------------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        stale = self.sync.stale_cameras(now)
        sync_stats = self.sync.stats()
        sync_dropped = self.sync.dropped
        times = list(self.stats.processed_times)
        rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) >= 2 and times[-1] > times[0] else 0.0
        with self._lock:
            n_objects = len(self._objects)
        s = self.stats
        values = {
            "device": self.device,
            "backend": getattr(self.segmentor, "name", type(self.segmentor).__name__),
            "objects": n_objects,
            "rate_hz": f"{rate:.2f}",
            "sets_received": s.sets_received,
            "sets_processed": s.sets_processed,
            "sets_dropped": s.sets_replaced,
            "sets_failed": s.sets_failed,
            "stale_cameras": ",".join(stale),
            "last_error": s.last_error,
        }
        last = s.last
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
        level = DiagnosticStatus.OK
        message = "ok"
        if stale:
            level, message = DiagnosticStatus.WARN, f"stale camera(s): {', '.join(stale)}"
        if s.sets_failed:
            level = DiagnosticStatus.WARN
            message = (message if message != "ok" else "") + (f"; {s.sets_failed} failed set(s)" if message != "ok" else f"{s.sets_failed} failed set(s)")
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        status = DiagnosticStatus(level=level, name=f"{self.get_name()}: pipeline", message=message,
                                  hardware_id=self.device)
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        array.status.append(status)
        for cam in self.cfg.cameras:
            is_stale = cam.name in stale
            cam_status = DiagnosticStatus(
                level=DiagnosticStatus.WARN if is_stale else DiagnosticStatus.OK,
                name=f"{self.get_name()}: camera {cam.name}",
                message="stale" if is_stale else "ok",
                hardware_id=cam.resolved_topic(),
            )
            cam_status.values = [
                KeyValue(key="topic", value=cam.resolved_topic()),
                KeyValue(key="role", value=cam.role),
                KeyValue(key="stale", value=str(is_stale).lower()),
                KeyValue(key="received", value=str(sync_stats["received"].get(cam.name, 0))),
                KeyValue(key="sync_dropped", value=str(sync_dropped.get(cam.name, 0))),
                KeyValue(key="frames_rejected", value=str(s.frames_rejected.get(cam.name, 0))),
                KeyValue(key="last_reject_reason", value=s.last_reject.get(cam.name, "")),
            ]
            array.status.append(cam_status)
        self._diag_pub.publish(array)

    def destroy_node(self):
        with self._wake:
            self._running = False
            self._wake.notify_all()
        self._worker.join(timeout=5)
        return super().destroy_node()


def main(argv: Optional[List[str]] = None) -> int:
    """``vggts_node [--ros-args --params-file config.yaml ...]`` (also ``ros2 run``)."""
    argv = list(sys.argv if argv is None else argv)
    from vggts_ros.ros import transport

    transport.configure()  # before the context: the node publishes images too
    rclpy.init(args=argv)
    node = None
    executor = None
    try:
        try:
            node = VGGTSNode()
        except (ValueError, CheckpointError) as exc:  # configuration or weights: one clear message
            print(f"vggts_node: {exc}", file=sys.stderr)
            return 2
        executor = MultiThreadedExecutor(num_threads=4)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # Order matters for a clean exit: stop the executor's threads, then the inference
        # thread, then the context. try_shutdown also uninstalls rclpy's signal handlers
        # when Ctrl-C already shut the context down; a handler thread left behind aborts
        # the process at exit ("terminate called without an active exception").
        if executor is not None:
            executor.shutdown(timeout_sec=5)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
