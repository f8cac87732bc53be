"""``vggts replay``: run a recorded bag through the node's synchroniser and pipeline,
without ROS, and write the node's outputs into an MCAP that Foxglove opens.

Input: a rosbag2 directory (sqlite3 or MCAP storage), a bare ``.mcap`` or ``.db3``
file. Camera messages are fed to :class:`vggts_ros.sync.ApproximateTimeSync` in the
bag's order, with the recording (log) time as the synchroniser's clock, so sets come
out as they did on the robot; the sets still queued at the end are flushed. Every set
is processed (offline, nothing is skipped for being slow) the way the node processes
it (``keyframe`` or ``track`` source mode): objects drawn on one source frame share a
backend call, each other camera of the set is a target (in ``track`` mode the source
camera's newer frame too, and the object's mask moves on to it), the masks of a target are merged into one label
image (higher score on top) and published with the target frame's header.

Objects: a PNG mask drawn on one camera's frame (given by stamp, or the camera's first
frame), and/or a mask topic in the bag (label images, value = object id, each message
attached to the frame of that camera with the same stamp). An object applies to the
sets from its frame's stamp on, as a ``set_source_mask`` call would.

Cameras: given by name and topic, or every image topic whose name ends like a camera
stream (``image_raw``, ``image``, ``compressed``...), named after the part before.

Output topics (``<ns>`` = ``--namespace``, default ``/vggts`` as the node's ``~/``):
``<ns>/<camera>/mask`` (mono8 labels), ``<ns>/<camera>/points``
(``vggts_ros/msg/ProjectedPoints``), ``<ns>/<camera>/overlay`` (rgb8), written at the
log time of the target frame; the input camera topics are copied too, so that a viewer
shows images and overlays together. Ground-truth label topics are scored with
``vggts_ros.metrics``. The same bag and options give byte-identical output.

Objects in 3D, as the node publishes them: with depth topics (``camera.<name>.depth_topic``
of ``--params-file`` or ``--depth-topic CAMERA=TOPIC``; registered ``sensor_msgs/Image``,
32FC1/16UC1) and the camera_info beside each image topic (or ``camera.<name>.intrinsics``),
the set processor's 3D step writes ``<ns>/<camera>/objects3d``, ``<ns>/objects3d`` (fused,
with ``camera.<name>.pose``), ``<ns>/<camera>/object_cloud`` and, with VGGT's heads,
``<ns>/camera_poses``. A set waits until each of its depth streams has passed its colour
frame's stamp (or has been silent ``sync.stale_after`` s of log time, or the bag ended), so
its depth image is matched whatever order the recorder wrote them in.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from vggts_ros import bags
from vggts_ros.config import CameraConfig, GeometryConfig, SyncConfig
from vggts_ros.registry import MAX_OBJECT_ID, ObjectRegistry, RegistryError
from vggts_ros.frame_history import check_pixels
from vggts_ros.geometry.depth import camera_info_topic
from vggts_ros.geometry.objects3d_step import Objects3DStep
from vggts_ros.propagation import PropagationConfig
from vggts_ros.propagation_stage import PropagationStage
from vggts_ros.set_processor import (CameraFrame, CameraOutput, SetOutput, SetProcessor, apply_advances,  # noqa: F401
                                     compose_labels)
from vggts_ros.sync import ApproximateTimeSync, SyncSet
from vggts_ros.types import ROLES

_IMAGE_TYPES = (bags.IMAGE, bags.COMPRESSED)
_SUFFIXES = {"image_raw", "image", "compressed", "image_rect", "image_color", "image_rect_color", "image_mono"}
STAMP_TOLERANCE = 1e-3  # seconds: a mask's stamp names the frame within this


class ReplayError(ValueError):
    """A replay that cannot run as asked; the message names the problem."""


@dataclass
class SourceMask:
    """One object drawn on one camera: ``stamp`` in seconds, None = the first frame."""

    camera: str
    mask: np.ndarray
    stamp: Optional[float] = None
    object_id: int = 0
    label: str = ""


@dataclass
class ReplayOptions:
    cameras: List[CameraConfig] = field(default_factory=list)  # empty: every image topic
    sync: SyncConfig = field(default_factory=SyncConfig)
    source_masks: List[SourceMask] = field(default_factory=list)
    mask_topics: Dict[str, str] = field(default_factory=dict)  # camera -> label topic
    gt_topics: Dict[str, str] = field(default_factory=dict)  # camera -> label topic
    roles: Dict[str, str] = field(default_factory=dict)  # camera -> role, over those of ``cameras``
    source_mode: str = "keyframe"  # or "track": the source mask follows the object (the node's modes)
    namespace: str = "/vggts"
    overlay: bool = True
    copy_inputs: bool = True
    progress: bool = True
    depth_topics: Dict[str, str] = field(default_factory=dict)  # camera -> depth topic, over the cameras'
    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    # Real time on the log clock (issue 22): one cross-view worker takes the newest set when
    # it is free and its results come out when its step's time is up; sets that arrive
    # while it is busy are left out. ``propagation`` (implies real time) publishes a mask on
    # every target frame, moved from the latest cross-view result (vggts_ros.propagation_stage).
    realtime: bool = False
    propagation: bool = False
    step_seconds: Optional[float] = None  # simulated length of every cross-view step; None: its CPU time
    max_age: float = 2.0  # publish.max_age
    refresh_pairs: int = 0  # publish.refresh_pairs (0 = all pairs every step)


@dataclass
class ScoreRow:
    camera: str
    stamp_ns: int
    object_id: int
    iou: float
    location_error: float
    contour_accuracy: float
    gt_area: int
    pred_area: int


@dataclass
class ReplayResult:
    cameras: List[CameraConfig]
    sets: List[SyncSet]  # every set the synchroniser emitted (frames replaced by stamps)
    outputs: Dict[str, List[int]]  # camera -> stamps (ns) of the masks written
    scores: List[ScoreRow]
    skipped_frames: Dict[str, int]  # camera -> frames not used (undecodable, blank, another size)
    messages_read: int
    seconds: float
    sync_stats: Dict
    results: List[Dict] = field(default_factory=list)  # per target frame and object: path, reason, area
    stream: Dict[str, str] = field(default_factory=dict)  # the stream state at the end (temporal memory)
    frames_read: Dict[str, int] = field(default_factory=dict)  # camera -> its messages in the bag
    skip_reasons: Dict[str, Dict[str, int]] = field(default_factory=dict)  # camera -> reason -> frames
    objects3d: List[Dict] = field(default_factory=list)  # per set: each camera's and the fused objects in 3D
    # real time: each cross-view step (start and length in log seconds, set stamp, pairs)
    # and the sets left out because the worker was busy
    steps: List[Dict] = field(default_factory=list)
    dropped_sets: int = 0

    def camera_problems(self) -> List[str]:
        """One line per camera that gave nothing usable or lost frames (empty when all is well)."""
        lines = []
        for cam in self.cameras:
            read, skipped = self.frames_read.get(cam.name, 0), self.skipped_frames.get(cam.name, 0)
            if read == 0:
                lines.append(f"camera {cam.name!r}: no messages on {cam.topic} in the bag")
            elif skipped:
                why = "; ".join(f"{n} x {r}" for r, n in sorted(self.skip_reasons.get(cam.name, {}).items(),
                                                             key=lambda kv: -kv[1]))
                lines.append(f"camera {cam.name!r}: {skipped} of {read} frames skipped ({why})")
        return lines

    def empty_reasons(self) -> Dict[str, int]:
        """Why target masks came out empty (reason -> count; every empty mask has one)."""
        out: Dict[str, int] = {}
        for r in self.results:
            if r["area"] == 0:
                out[r["reason"]] = out.get(r["reason"], 0) + 1
        return out

    def mean_iou(self) -> Dict[Tuple[str, int], float]:
        out: Dict[Tuple[str, int], List[float]] = {}
        for row in self.scores:
            out.setdefault((row.camera, row.object_id), []).append(row.iou)
        return {k: float(np.mean(v)) for k, v in sorted(out.items())}


# ----------------------------------------------------------------------------- frames
@dataclass
class _Frame:
    camera: str
    stamp_ns: int
    log_ns: int
    msg: object
    compressed: bool
    _rgb: Optional[np.ndarray] = None

    @property
    def stamp(self) -> float:
        return self.stamp_ns * 1e-9

    def rgb(self) -> np.ndarray:
        from vggts_ros.ros.conversions import compressed_to_rgb, image_to_rgb

        if self._rgb is None:
            self._rgb = compressed_to_rgb(self.msg) if self.compressed else image_to_rgb(self.msg)
        return self._rgb


def _labels_of(msg, what: str) -> np.ndarray:
    """A mono8/8UC1 label image message -> ``HxW`` uint8 (value = object id)."""
    if msg.encoding not in ("mono8", "8UC1"):
        raise ReplayError(f"{what}: label images must be mono8 or 8UC1, got {msg.encoding!r}")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.frombuffer(bytes(msg.data), np.uint8)
    if h <= 0 or w <= 0 or step < w or data.size < step * h:
        raise ReplayError(f"{what}: a {w}x{h} label image with step {step} needs {step * h} bytes, has {data.size}")
    return data[: step * h].reshape(h, step)[:, :w].copy()


def bag_topic(camera: CameraConfig) -> str:
    """The camera's topic as recorded: absolute (a relative topic is taken from /)."""
    topic = camera.resolved_topic()
    return topic if topic.startswith("/") else "/" + topic


def camera_name_from_topic(topic: str) -> str:
    """``/robot/front/image_raw`` -> ``front`` (the last part that is not an image suffix)."""
    parts = [p for p in topic.strip("/").split("/") if p]
    while len(parts) > 1 and parts[-1] in _SUFFIXES:
        parts.pop()
    name = re.sub(r"[^A-Za-z0-9_]", "_", parts[-1] if parts else "camera")
    return name or "camera"


# ----------------------------------------------------------------------------- composition
def points_msg(header, source_camera: str, target_camera: str, entries):
    """``vggts_ros/msg/ProjectedPoints`` (rosbags type) from (object, result, area) entries."""
    ts = bags.typestore()
    Points = ts.types["vggts_ros/msg/ProjectedPoints"]
    Obj = ts.types["vggts_ros/msg/ObjectPoints"]

    def f32(a) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(a, np.float32).reshape(-1))

    fields = [f for f in Obj.__dataclass_fields__ if not f.startswith("__")]
    objects = []
    for obj, res, area in entries:
        values = dict(object_id=int(obj.object_id), source_xy=f32(res.source_points), target_xy=f32(res.target_points),
                      visibility=f32(res.visibility), confidence=f32(res.confidence), score=float(res.score),
                      label=obj.label, area=int(area), path=str(res.path), reason=str(res.reason))
        objects.append(Obj(**{k: values.get(k, _default(Obj, k)) for k in fields}))
    return Points(header=header, source_camera=source_camera, target_camera=target_camera, objects=objects)


def _default(cls, name: str):
    """Zero value of a rosbags message field (for fields this code does not know yet)."""
    hint = str(cls.__dataclass_fields__[name].type)
    if "ndarray" in hint:
        return np.zeros(0, np.float32)
    if hint.startswith("str"):
        return ""
    if hint.startswith("float"):
        return 0.0
    if hint.startswith("int") or hint.startswith("bool"):
        return 0
    if hint.startswith("list"):
        return []
    raise ReplayError(f"cannot fill field {name!r} ({hint}) of {cls.__msgtype__}")


# ----------------------------------------------------------------------------- progress
class _Progress:
    """tqdm when installed (and enabled), else a line every few seconds on stderr."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled, self.count = total, enabled, 0
        self._bar = None
        self._last = time.monotonic()
        if enabled:
            try:
                from tqdm import tqdm

                self._bar = tqdm(total=total, unit="msg", desc="replay", file=sys.stderr, leave=True)
            except ImportError:
                self._bar = None

    def update(self, sets: int) -> None:
        self.count += 1
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.set_postfix(sets=sets, refresh=False)
            self._bar.update(1)
        elif time.monotonic() - self._last > 2.0 or self.count == self.total:
            self._last = time.monotonic()
            print(f"replay: {self.count}/{self.total} messages, {sets} sets", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


# ----------------------------------------------------------------------------- replay
class _Replayer:
    def __init__(self, reader, writer: bags.BagWriter, segmentor, options: ReplayOptions) -> None:
        self.reader, self.writer, self.segmentor, self.opt = reader, writer, segmentor, options
        self.cameras = self._cameras()
        self.roles = {c.name: c.role for c in self.cameras}
        self.topic_camera = {c.topic: c.name for c in self.cameras}
        self.objects = ObjectRegistry(max_objects=MAX_OBJECT_ID, max_label_length=1 << 16)
        self.processor: Optional[SetProcessor] = None  # made once the backend is loaded
        self.pending: List[SourceMask] = list(options.source_masks)
        self.topic_masks: Dict[str, Dict[int, np.ndarray]] = {}  # camera -> stamp -> labels
        self.gt: Dict[str, Dict[int, np.ndarray]] = {}
        self.sets: List[SyncSet] = []
        self.outputs: Dict[str, List[int]] = {c.name: [] for c in self.cameras}
        self.scores: List[ScoreRow] = []
        self.skipped: Dict[str, int] = {c.name: 0 for c in self.cameras}
        self.reasons: Dict[str, str] = {}
        self.skip_reasons: Dict[str, Dict[str, int]] = {c.name: {} for c in self.cameras}
        self.read: Dict[str, int] = {c.name: 0 for c in self.cameras}
        self.results: List[Dict] = []
        self.waiting: List[SyncSet] = []  # sets emitted, waiting for their depth images
        self.depth_camera: Dict[str, str] = {}  # depth topic -> camera
        self.info_camera: Dict[str, str] = {}  # camera_info topic -> camera
        self.objects3d: List[Dict] = []
        self.frame_ids: Dict[str, str] = {}  # camera -> the optical frame its images name
        # real time (see ReplayOptions)
        self.realtime = options.realtime or options.propagation
        self.stage: Optional[PropagationStage] = None
        self.busy_until = -math.inf  # when the cross-view worker is free (log seconds)
        self.held: Optional[SyncSet] = None  # the newest set that came while it was busy
        self.done: List[Tuple[float, SetOutput, object, Dict]] = []  # the step in flight: (end, output, targets, frames)
        self.steps: List[Dict] = []
        self.dropped = 0
        self._end = 0.0  # log time the synchroniser is flushed at (the end)

    # -- configuration against the bag
    def _topics(self) -> Dict[str, str]:
        return {c.topic: c.msgtype for c in self.reader.connections}

    def _cameras(self) -> List[CameraConfig]:
        topics = self._topics()
        images = sorted(t for t, ty in topics.items() if ty in _IMAGE_TYPES)
        label_topics = set(self.opt.mask_topics.values()) | set(self.opt.gt_topics.values())
        ns = self.opt.namespace.rstrip("/") + "/"
        # Bag topics are absolute; a relative camera topic (the node's default) is taken from /.
        cams = [dataclasses.replace(c, topic=bag_topic(c)) for c in self.opt.cameras]
        depth_given = set(self.opt.depth_topics.values()) | {c.depth_topic for c in self.opt.cameras if c.depth_topic}
        if not cams:
            # depth images are not cameras: given depth topics and any topic with a "depth" level
            candidates = [t for t in images if t not in label_topics and not t.startswith(ns) and t not in depth_given
                          and "depth" not in t.strip("/").split("/")]
            # Camera streams end in image_raw, image, compressed...; masks and labels do not.
            named = [t for t in candidates if t.strip("/").split("/")[-1] in _SUFFIXES]
            candidates = named or candidates
            names = [camera_name_from_topic(t) for t in candidates]
            if len(set(names)) != len(names):
                raise ReplayError(f"cannot name cameras after their topics {candidates}; give --camera NAME=TOPIC")
            cams = [CameraConfig(n, t) for n, t in zip(names, candidates)]
        unknown = sorted(set(self.opt.roles) - {c.name for c in cams})
        if unknown:
            raise ReplayError(f"roles given for unknown camera(s) {unknown}; cameras: {[c.name for c in cams]}")
        for cam in cams:
            cam.role = self.opt.roles.get(cam.name, cam.role)
            topic = cam.topic
            if topic not in topics:
                raise ReplayError(f"camera {cam.name!r}: topic {topic} is not in the bag; its image topics are {images}")
            if topics[topic] not in _IMAGE_TYPES:
                raise ReplayError(f"camera {cam.name!r}: topic {topic} holds {topics[topic]}, not an image")
            cam.compressed = topics[topic] == bags.COMPRESSED
            if cam.role not in ROLES:
                raise ReplayError(f"camera {cam.name!r}: role {cam.role!r} is not one of {ROLES}")
        names = [c.name for c in cams]
        if len(cams) < 2:
            raise ReplayError(f"need at least two cameras, found {names} (image topics in the bag: {images})")
        for what, mapping in (("mask topic", self.opt.mask_topics), ("ground-truth topic", self.opt.gt_topics)):
            for cam, topic in mapping.items():
                if cam not in names:
                    raise ReplayError(f"{what} {topic} names camera {cam!r}, not one of {names}")
                if topic not in topics:
                    raise ReplayError(f"{what} {topic} is not in the bag (topics: {sorted(topics)})")
        for sm in self.opt.source_masks:
            if sm.camera not in names:
                raise ReplayError(f"source mask for camera {sm.camera!r}: cameras are {names}")
        if not self.opt.source_masks and not self.opt.mask_topics:
            raise ReplayError("no object to follow: give --source-mask CAMERA=PNG[@STAMP] or --mask-topic CAMERA=TOPIC")
        unknown = sorted(set(self.opt.depth_topics) - set(names))
        if unknown:
            raise ReplayError(f"--depth-topic names unknown camera(s) {unknown}; cameras: {names}")
        for cam in cams:
            cam.depth_topic = self.opt.depth_topics.get(cam.name, cam.depth_topic)
            if cam.depth_topic:
                cam.depth_topic = cam.depth_topic if cam.depth_topic.startswith("/") else "/" + cam.depth_topic
                if cam.depth_topic not in topics:
                    raise ReplayError(f"camera {cam.name!r}: depth topic {cam.depth_topic} is not in the bag "
                                      f"(its image topics are {images})")
                if topics[cam.depth_topic] != bags.IMAGE:
                    raise ReplayError(f"camera {cam.name!r}: depth topic {cam.depth_topic} holds "
                                      f"{topics[cam.depth_topic]}, not sensor_msgs/msg/Image")
        return cams

    # -- pass 1: label topics (masks drawn by a person or a tool, ground truth)
    def read_labels(self) -> None:
        wanted = {}
        for cam, topic in self.opt.mask_topics.items():
            wanted[topic] = ("mask", cam)
        for cam, topic in self.opt.gt_topics.items():
            if topic in wanted:
                raise ReplayError(f"topic {topic} is given both as a mask topic and as ground truth")
            wanted[topic] = ("gt", cam)
        conns = [c for c in self.reader.connections if c.topic in wanted]
        if not conns:
            return
        for conn, _, raw in self.reader.messages(connections=conns):
            kind, cam = wanted[conn.topic]
            msg = bags.deserialize(raw, conn.msgtype)
            if conn.msgtype != bags.IMAGE:
                raise ReplayError(f"{conn.topic}: label topics must hold sensor_msgs/Image, not {conn.msgtype}")
            labels = _labels_of(msg, conn.topic)
            store = self.topic_masks if kind == "mask" else self.gt
            store.setdefault(cam, {})[bags.stamp_of(msg)] = labels

    # -- objects
    def _attach(self, frame: _Frame) -> None:
        for sm in list(self.pending):
            if sm.camera != frame.camera:
                continue
            if sm.stamp is None or abs(sm.stamp - frame.stamp) <= STAMP_TOLERANCE:
                self._add_object(sm.object_id, frame, sm.mask, sm.label, f"source mask of camera {sm.camera!r}")
                self.pending.remove(sm)
        labels = self.topic_masks.get(frame.camera, {}).pop(frame.stamp_ns, None)
        if labels is not None:
            for oid in (int(v) for v in np.unique(labels) if v):
                self._add_object(oid, frame, labels == oid, f"object {oid}", f"mask topic of camera {frame.camera!r}")

    def _add_object(self, object_id: int, frame: _Frame, mask: np.ndarray, label: str, what: str) -> None:
        try:
            image = frame.rgb()
        except ValueError as exc:
            raise ReplayError(f"{what}: the frame it was drawn on (camera {frame.camera!r} at {frame.stamp:.6f} s) "
                              f"cannot be decoded: {exc}") from exc
        if mask.shape != image.shape[:2]:
            raise ReplayError(f"{what} is {mask.shape[1]}x{mask.shape[0]} but the camera's frames are "
                              f"{image.shape[1]}x{image.shape[0]} (width x height)")
        if not mask.any():
            raise ReplayError(f"{what} is empty: no nonzero pixel marks the object")
        try:  # a new mask for an existing id replaces it (its memory restarts), as set_source_mask does
            self.objects.put(frame.camera, label, image, mask.astype(bool), frame.stamp, object_id)
        except RegistryError as exc:
            raise ReplayError(f"{what}: {exc}") from exc

    # -- pass 2: camera streams through the synchroniser
    def _objects3d_step(self) -> Optional[Objects3DStep]:
        """The 3D step (None when no camera has depth): depth topics and camera_info read from the bag."""
        # VGGT's heads count when the backend runs them (PipelineConfig.geometry_heads)
        heads = bool(getattr(getattr(self.segmentor, "cfg", None), "geometry_heads", False))
        geometry = dataclasses.replace(self.opt.geometry, vggt_heads=self.opt.geometry.vggt_heads and heads)
        step = Objects3DStep(self.cameras, geometry, self.opt.sync.slop)
        if not step.active:
            return None
        topics = self._topics()
        self.depth_camera = {c.depth_topic: c.name for c in self.cameras if c.depth_topic}
        self.info_camera = {camera_info_topic(c.topic): c.name for c in self.cameras
                            if topics.get(camera_info_topic(c.topic)) == "sensor_msgs/msg/CameraInfo"}
        return step

    def _ready(self, item: SyncSet, log_now: Optional[float]) -> bool:
        """A set may be processed once every depth stream of its cameras has passed its frame's
        stamp, or has been silent for sync.stale_after s of log time (``log_now`` None: the end)."""
        step = self.processor.objects3d
        if step is None or log_now is None:
            return True
        for name, frame in item.messages.items():
            stream = step.depth.get(name)
            if stream is None:
                continue
            kept = stream.kept()
            if (not kept or kept[-1] < frame.stamp) and log_now - frame.log_ns * 1e-9 < self.opt.sync.stale_after:
                return False
        return True

    def _drain(self, log_now: Optional[float]) -> None:
        while self.waiting and self._ready(self.waiting[0], log_now):
            self._process(self.waiting.pop(0), self._end if log_now is None else log_now)

    def run(self) -> Tuple[int, Dict]:
        s = self.opt.sync
        sync = ApproximateTimeSync.from_config(s, self.cameras)
        self.processor = SetProcessor(self.segmentor, self.roles, self.opt.source_mode, stale_after=s.stale_after,
                                      objects3d=self._objects3d_step())
        step = self.processor.objects3d
        extra = set(self.depth_camera) | set(self.info_camera) if step is not None else set()
        conns = [c for c in self.reader.connections if c.topic in self.topic_camera or c.topic in extra]
        if self.opt.propagation:
            self.stage = PropagationStage(self.roles, PropagationConfig(max_age=self.opt.max_age),
                                          backend=self.processor.backend,
                                          max_pairs=self.opt.refresh_pairs or None)
        total = sum(int(getattr(c, "msgcount", 0) or 0) for c in conns)
        progress = _Progress(total, self.opt.progress)
        count, last_log = 0, 0
        try:
            for conn, log_ns, raw in self.reader.messages(connections=conns):
                msg = bags.deserialize(raw, conn.msgtype)
                if self.opt.copy_inputs:
                    self.writer.write_raw(conn.topic, conn.msgtype, raw, log_ns)
                if conn.topic in extra:
                    if conn.topic in self.info_camera:
                        step.camera_info[self.info_camera[conn.topic]] = msg
                    else:
                        step.depth[self.depth_camera[conn.topic]].add(bags.stamp_of(msg) * 1e-9, msg)
                    self._drain(log_ns * 1e-9)
                    continue
                camera = self.topic_camera[conn.topic]
                frame = _Frame(camera, bags.stamp_of(msg), int(log_ns), msg, conn.msgtype == bags.COMPRESSED)
                self.read[camera] += 1
                self._attach(frame)
                now = log_ns * 1e-9
                if self.realtime:
                    self._clock(now)
                self.waiting += sync.add(camera, frame.stamp, frame, now=now)
                self._drain(now)
                if self.stage is not None:
                    self._propagate(frame)
                count += 1
                last_log = max(last_log, int(log_ns))
                progress.update(len(self.sets))
            # Nothing more will come: let every camera go stale and flush what is queued.
            self._end = last_log * 1e-9 + 2 * s.stale_after + 1.0
            self.waiting += sync.poll(now=self._end)
            self._drain(None)
            if self.realtime:
                self._clock(math.inf)
        finally:
            progress.close()
        if self.pending:
            def where(p: SourceMask) -> str:
                if not self.read[p.camera]:
                    return f"camera {p.camera!r}, which has no messages in the bag"
                return f"camera {p.camera!r} " + ("(its first frame)" if p.stamp is None else f"at {p.stamp:.6f} s")
            missing = ", ".join(where(p) for p in self.pending)
            raise ReplayError(f"no frame for the source mask(s) of {missing} (within {STAMP_TOLERANCE * 1e3:.0f} ms)")
        unused = {cam: sorted(v) for cam, v in self.topic_masks.items() if v}
        if unused:
            cam, stamps = next(iter(unused.items()))
            raise ReplayError(f"mask topic of camera {cam!r}: no frame of that camera has stamp "
                              f"{stamps[0] * 1e-9:.6f} s (masks must carry the stamp of the frame they were drawn on)")
        return count, sync.stats()

    def _process(self, item: SyncSet, now: float = 0.0) -> None:
        """A set from the synchroniser: processed at once (offline), or offered to the
        cross-view worker at log time ``now`` (real time)."""
        self.sets.append(SyncSet(item.stamp, {n: f.stamp_ns for n, f in item.messages.items()}, item.stamps,
                                 item.missing))
        if not self.realtime:
            output, frames = self._cross_view(item)
            if output is not None:
                apply_advances(output, self.objects)  # lost objects keep their frame, as in the node
                self._write3d(output.objects3d, frames)
                for cam in output.cameras:
                    self._write(cam)
            return
        self._clock(now)
        if now >= self.busy_until:
            self._start(item, now)
        else:  # the worker is busy: this set waits, replacing an older waiting one
            self.dropped += self.held is not None
            self.held = item

    def _cross_view(self, item: SyncSet, targets=None) -> Tuple[Optional[SetOutput], Dict]:
        newest = max(f.stamp_ns for f in item.messages.values()) * 1e-9
        _, objects = self.objects.snapshot()
        objects = [o for o in objects if o.stamp <= newest]  # an object applies from its frame on
        if not objects:
            return None, {}
        frames, rejected = self.processor.usable(item.messages, lambda f: f.rgb(), lambda f: f.stamp)
        self._rejected(rejected)
        return self.processor.process(item.stamp, frames, objects, targets), frames

    def _rejected(self, rejected) -> None:
        for r in rejected:
            self.skipped[r.camera] += 1
            counts = self.skip_reasons[r.camera]
            counts[r.problem] = counts.get(r.problem, 0) + 1
            if self.reasons.get(r.camera) != r.problem:
                print(f"replay: camera {r.camera!r}: frame at {r.stamp:.3f} s skipped: {r.problem}", file=sys.stderr)
            self.reasons[r.camera] = r.problem

    # -- real time: one cross-view worker on the log clock
    def _clock(self, now: float) -> None:
        """Everything the worker finishes or starts up to log time ``now``."""
        while True:
            if self.done and self.done[0][0] <= now:
                end, output, targets, frames = self.done.pop(0)
                self._finish(end, output, targets, frames)
            elif self.held is not None and self.busy_until <= now:
                item, self.held = self.held, None
                self._start(item, self.busy_until)
            else:
                return

    def _start(self, item: SyncSet, start: float) -> None:
        newest = max(f.stamp_ns for f in item.messages.values()) * 1e-9
        _, objects = self.objects.snapshot()
        objects = [o for o in objects if o.stamp <= newest]
        if not objects:
            return
        targets = self.stage.choose(start, objects) if self.stage is not None else None
        t0 = time.thread_time()
        output, frames = self._cross_view(item, targets)
        seconds = time.thread_time() - t0 if self.opt.step_seconds is None else self.opt.step_seconds
        if output is None or not output.cameras:
            if self.stage is not None:
                self.stage.cancel(targets)
            return
        pairs = sorted((o.object.object_id, c.camera) for c in output.cameras for o in c.objects)
        self.steps.append(dict(start=start, seconds=seconds, stamp=item.stamp, pairs=[list(p) for p in pairs]))
        self.busy_until = start + seconds
        self.done.append((self.busy_until, output, targets, frames))

    def _finish(self, end: float, output: SetOutput, targets, frames) -> None:
        """A step's results come out at log time ``end``."""
        apply_advances(output, self.objects)
        self._write3d(output.objects3d, frames)
        if self.stage is not None:
            _, objects = self.objects.snapshot()
            self.stage.accept(output, {o.object_id: o for o in objects}, targets)
            return
        for cam in output.cameras:
            self._write(cam, int(round(end * 1e9)))

    def _propagate(self, frame: _Frame) -> None:
        """Propagation: this camera frame gets the latest masks, moved to it."""
        _, objects = self.objects.snapshot()
        if not objects:
            return
        # A frame it cannot use is left out here and reported once, by the set it belongs to.
        try:
            image = frame.rgb()
        except ValueError:
            return
        size = self.processor.sizes.size(frame.camera)
        if check_pixels(image) or (size is not None and image.shape[:2] != size):
            return
        out = self.stage.frame(CameraFrame(frame.camera, frame.stamp, image, frame), objects)
        if out is not None:
            self._write(out)


    def _write3d(self, result, frames) -> None:
        """A set's objects in 3D, as the node publishes them (each camera's at its frame's log time)."""
        if result is None:
            return
        from vggts_ros.geometry import messages

        ns = self.opt.namespace.rstrip("/")
        types, as_array = messages.bag_types, (lambda a: a)
        headers = {}
        for name, f in frames.items():
            stamp = f.meta.stamp_ns
            headers[name] = bags.header(stamp, f.meta.msg.header.frame_id or f"{name}_optical_frame")
        row: Dict = dict(stamp=result.stamp, cameras={}, fused=None, notes=list(result.notes))
        for name, objs in result.cameras.items():
            log = frames[name].meta.log_ns
            self.writer.write(f"{ns}/{name}/objects3d", messages.objects3d_msg(types, headers[name], objs), log)
            self.writer.write(f"{ns}/{name}/object_cloud",
                              messages.cloud_msg(types, headers[name], objs, as_array), log)
            row["cameras"][name] = messages.objects_dict(objs)
        self.frame_ids.update({name: h.frame_id for name, h in headers.items()})
        ref = result.frame
        if ref in headers:
            fused_header, log = headers[ref], frames[ref].meta.log_ns
        else:  # the reference camera is not in this set (or the reference is not a camera)
            frame_id = self.frame_ids.get(ref, f"{ref}_optical_frame") if ref in self.roles else ref
            fused_header = bags.header(int(round(result.stamp * 1e9)), frame_id)
            log = max(f.meta.log_ns for f in frames.values())
        if result.fused is not None:
            self.writer.write(f"{ns}/objects3d", messages.objects3d_msg(types, fused_header, result.fused), log)
            row["fused"] = messages.objects_dict(result.fused)
        if result.poses is not None:
            self.writer.write(f"{ns}/camera_poses", messages.camera_poses_msg(types, fused_header, result.poses), log)
        self.objects3d.append(row)

    def _write(self, out: CameraOutput, log_ns: Optional[int] = None) -> None:
        from vggts_ros import metrics
        from vggts_ros.visualize import overlay_masks

        camera, frame, labels = out.camera, out.frame.meta, out.labels
        log_ns = frame.log_ns if log_ns is None else log_ns
        header = frame.msg.header
        entries = [(o.object, o.result, o.area) for o in out.objects]
        ns = self.opt.namespace.rstrip("/")
        mask = bags.image_msg(labels, "mono8", 0)
        mask.header = header
        self.writer.write(f"{ns}/{camera}/mask", mask, log_ns)
        self.writer.write(f"{ns}/{camera}/points", points_msg(header, out.source_cameras, camera, entries),
                          log_ns)
        if self.opt.overlay:
            drawn = overlay_masks(out.frame.image, labels,
                                  [np.asarray(o.result.target_points).reshape(-1, 2) for o in out.objects])
            over = bags.image_msg(drawn, "rgb8", 0)
            over.header = header
            self.writer.write(f"{ns}/{camera}/overlay", over, log_ns)
        self.outputs[camera].append(frame.stamp_ns)
        for obj, res, area in sorted(entries, key=lambda e: e[0].object_id):
            self.results.append(dict(camera=camera, stamp_ns=frame.stamp_ns, object_id=obj.object_id,
                                     area=area, score=float(res.score), path=res.path, reason=res.reason))
        gt = self.gt.get(camera, {}).get(frame.stamp_ns)
        if gt is None:
            return
        if gt.shape != labels.shape:
            raise ReplayError(f"ground truth of camera {camera!r} is {gt.shape[1]}x{gt.shape[0]} but its frames are "
                              f"{labels.shape[1]}x{labels.shape[0]}")
        for obj in sorted((o.object for o in out.objects), key=lambda o: o.object_id):
            g, p = gt == obj.object_id, labels == obj.object_id
            self.scores.append(ScoreRow(camera, frame.stamp_ns, obj.object_id, metrics.iou(g, p),
                                        metrics.location_error(g, p), metrics.contour_accuracy(g, p),
                                        int(g.sum()), int(p.sum())))


def replay(input_path: str | Path, out_path: str | Path, segmentor, options: ReplayOptions,
           storage: str = "mcap") -> ReplayResult:
    """Replay ``input_path`` into ``out_path`` (a ``.mcap`` file or a rosbag2 directory).

    ``segmentor`` is a backend, or a function returning one (called after the bag, its
    topics and the label topics were checked, so a typo does not wait for weights)."""
    t0 = time.monotonic()
    reader = bags.open_reader(input_path)
    try:
        writer = bags.BagWriter(out_path, storage=storage)
        try:
            rp = _Replayer(reader, writer, segmentor, options)
            rp.read_labels()
            if not hasattr(segmentor, "segment"):  # a factory: weights load once the bag is known good
                rp.segmentor = segmentor()
            count, stats = rp.run()
        except BaseException:
            writer.abort()
            raise
        writer.close()
    finally:
        reader.close()
    stream = rp.processor.state.describe() if rp.processor is not None else {}
    return ReplayResult(rp.cameras, rp.sets, rp.outputs, rp.scores, rp.skipped, count,
                        time.monotonic() - t0, stats, rp.results, stream, dict(rp.read), rp.skip_reasons,
                        rp.objects3d, rp.steps, rp.dropped)


def format_scores(result: ReplayResult) -> str:
    lines = [f"{'camera':<12} {'obj':>3} {'frames':>6} {'IoU':>6} {'LE':>6} {'CA':>6}"]
    rows: Dict[Tuple[str, int], List[ScoreRow]] = {}
    for r in result.scores:
        rows.setdefault((r.camera, r.object_id), []).append(r)
    for (cam, oid), rs in sorted(rows.items()):
        lines.append(f"{cam:<12} {oid:>3} {len(rs):>6} {np.mean([r.iou for r in rs]):>6.3f} "
                     f"{np.mean([r.location_error for r in rs]):>6.3f} {np.mean([r.contour_accuracy for r in rs]):>6.3f}")
    lines.append(f"mean IoU: {np.mean([r.iou for r in result.scores]):.3f} over {len(result.scores)} object/frame pairs")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- argument parsing
def parse_source_mask(spec: str, read_mask: Callable[[str], np.ndarray], object_id: int) -> SourceMask:
    """``CAMERA=PATH`` (first frame), ``CAMERA=PATH@first`` or ``CAMERA=PATH@STAMP`` (seconds)."""
    camera, sep, rest = spec.partition("=")
    if not sep or not camera or not rest:
        raise ReplayError(f"--source-mask {spec!r}: expected CAMERA=PNG[@STAMP|@first]")
    path, stamp = rest, None
    if "@" in rest:
        head, _, tail = rest.rpartition("@")
        if tail == "first":
            path = head
        else:
            try:
                stamp = float(tail)
                path = head
            except ValueError:
                pass  # an '@' in the file name
            if stamp is not None and not math.isfinite(stamp):
                raise ReplayError(f"--source-mask {spec!r}: the stamp must be a finite number of seconds")
    return SourceMask(camera, read_mask(path), stamp, object_id, label=Path(path).stem)


def parse_pairs(values: Optional[Sequence[str]], what: str) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for spec in values or []:
        key, sep, value = spec.partition("=")
        if not sep or not key or not value:
            raise ReplayError(f"{what} {spec!r}: expected NAME=VALUE")
        if key in out:
            raise ReplayError(f"{what}: {key!r} given twice")
        out[key] = value
    return out
