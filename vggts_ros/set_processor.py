"""One synchronised set of camera frames through a backend: the single path shared by the
ROS node, ``vggts replay`` and the demo (no ROS here).

:class:`SetProcessor` owns what a stream needs between sets: the backend's
:class:`vggts_ros.stream.StreamState` (Temporal VGGT-S memory, stream reuse) and each camera's
frame size. For one set it

1. keeps the usable frames (:meth:`SetProcessor.usable`: decodable, not blank, of the
   camera's size; the others are returned as rejections with their reason),
2. groups the objects by source frame (objects drawn on one frame share one backend call:
   one first backbone pass) and makes every other camera of the set a target (in ``track``
   mode the source camera's newer frame too, so the source mask follows the object),
3. runs ``segment_objects`` with the stream state and a :class:`StreamStep` naming the
   objects and their source-mask versions,
4. composes each target camera's label image (pixel = object id, a higher score wins
   overlaps), completes every result's ``path`` and ``reason`` (:mod:`vggts_ros.outcome`),
   and sums the stage times,
5. returns the track-mode moves of the source masks (:class:`Advance`), which the caller
   applies to its registry when the objects are still current (:func:`apply_advances`),
6. with a 3D step (``objects3d``, :class:`vggts_ros.geometry.objects3d_step.Objects3DStep`)
   locates the objects in 3D from the cameras' depth (``SetOutput.objects3d``).

Objects are :class:`vggts_ros.registry.TrackedObject` (id, camera, label, frame, mask,
stamp, generation); frames are :class:`CameraFrame` (the caller's own message rides along
in ``meta``, so a node publishes with the frame's header and a replay writes at its log time).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from vggts_ros import outcome
from vggts_ros.frame_history import SizeTracker, check_pixels
from vggts_ros.registry import ObjectRegistry, TrackedObject
from vggts_ros.stream import StreamState, StreamStep
from vggts_ros.types import SegmentationResult, Segmentor, TargetView

SOURCE_MODES = ("keyframe", "track")
# Stages timed once per backend call and shared by its objects (the others add up).
SHARED_STAGES = ("first_pass", "total")


@dataclass
class CameraFrame:
    """One camera's decoded frame of a set; ``meta`` is the caller's (a ROS message, a bag
    record) and is passed through untouched."""

    camera: str
    stamp: float
    image: np.ndarray  # HxWx3 uint8 RGB
    meta: Any = None


@dataclass
class ObjectOutput:
    """One object as published on one target camera."""

    object: TrackedObject
    result: SegmentationResult  # ``path`` and ``reason`` completed
    area: int  # its pixels in the camera's label image


@dataclass
class CameraOutput:
    """Everything published on one target camera for one set."""

    camera: str
    frame: CameraFrame
    labels: np.ndarray  # HxW uint8, pixel = object id
    objects: List[ObjectOutput]

    @property
    def source_cameras(self) -> str:
        return ",".join(sorted({o.object.camera for o in self.objects}))


@dataclass
class Advance:
    """Track mode: an object's source moves to a newer frame of its camera (``mask`` None:
    the object was lost there and keeps its previous source frame)."""

    object: TrackedObject
    frame: CameraFrame
    mask: Optional[np.ndarray]


@dataclass
class SetOutput:
    stamp: float
    cameras: List[CameraOutput]  # in the processor's camera order
    advances: List[Advance] = field(default_factory=list)
    pipeline_seconds: float = 0.0  # inside the backend
    stages: Dict[str, float] = field(default_factory=dict)  # stage -> seconds, summed over calls
    # Objects in 3D (vggts_ros.geometry.objects3d_step.Set3D) when the processor has a 3D step
    objects3d: Optional[Any] = None

    def camera(self, name: str) -> Optional[CameraOutput]:
        return next((c for c in self.cameras if c.camera == name), None)


@dataclass(frozen=True)
class Rejection:
    camera: str
    stamp: float
    problem: str


class SetProcessor:
    """See the module docstring. ``roles``: camera name -> role, in the cameras' order."""

    def __init__(self, segmentor: Segmentor, roles: Mapping[str, str], source_mode: str = "keyframe",
                 stale_after: Optional[float] = None, clock: Optional[Callable[[], float]] = None,
                 objects3d: Optional[Any] = None) -> None:
        if source_mode not in SOURCE_MODES:
            raise ValueError(f"source mode must be one of {SOURCE_MODES}, got {source_mode!r}")
        import time

        self.segmentor = segmentor
        self.roles = dict(roles)
        self.order = list(roles)
        self.source_mode = source_mode
        self.stale_after = stale_after  # a camera's memory restarts after this gap (s); None: the memory's
        self.clock = clock or time.monotonic
        self.state: StreamState = segmentor.init_stream()
        self.sizes = SizeTracker()
        # Objects in 3D after segmentation (vggts_ros.geometry.objects3d_step.Objects3DStep), or None
        self.objects3d = objects3d

    @property
    def backend(self) -> str:
        return getattr(self.segmentor, "name", type(self.segmentor).__name__)

    # ------------------------------------------------------------------ stream state
    def remove_object(self, object_id: int) -> None:
        self.state.remove_object(object_id)

    def retain(self, object_ids) -> None:
        self.state.retain(object_ids)

    def reset(self) -> None:
        """A new stream (a time jump back, a new recording): forget memory and sizes."""
        self.state.reset()
        self.sizes = SizeTracker()

    # ------------------------------------------------------------------ frames
    def usable(self, messages: Mapping[str, Any], decode: Callable[[Any], np.ndarray],
               stamp_of: Callable[[Any], float]) -> Tuple[Dict[str, CameraFrame], List[Rejection]]:
        """Decode a set's messages (``decode`` may raise ValueError) and keep the usable
        frames, in the set's camera order; the others come back as rejections."""
        usable: Dict[str, CameraFrame] = {}
        rejected: List[Rejection] = []
        for name, msg in messages.items():
            try:
                image = decode(msg)
                problem = check_pixels(image) or self.sizes.check(name, image.shape[:2])
            except ValueError as exc:
                problem = f"cannot decode: {exc}"
            if problem:
                rejected.append(Rejection(name, stamp_of(msg), problem))
                continue
            usable[name] = CameraFrame(name, stamp_of(msg), image, msg)
        return usable, rejected

    # ------------------------------------------------------------------ one set
    def process(self, stamp: float, frames: Mapping[str, CameraFrame],
                objects: Sequence[TrackedObject],
                targets: Optional[Mapping[int, Collection[str]]] = None) -> SetOutput:
        """Every object of ``objects`` found in the other cameras of ``frames`` (usable frames,
        in the set's order). Objects are taken in id order. ``targets`` (object id -> target
        cameras, e.g. a refresh schedule's choice) limits the work to those objects and,
        per backend call, to the union of its objects' targets; None: every object in every
        other camera."""
        out = SetOutput(stamp, [])
        if not objects or not frames:
            return out
        if self.objects3d is not None:
            self.objects3d.begin(frames)  # keep the set's depth images through inference
        track = self.source_mode == "track"
        per_target: Dict[str, List[Tuple[TrackedObject, SegmentationResult]]] = {}
        groups: Dict[Tuple[str, float], List[TrackedObject]] = {}
        for obj in sorted(objects, key=lambda o: o.object_id):
            if targets is not None and not targets.get(obj.object_id):
                continue
            groups.setdefault((obj.camera, obj.stamp), []).append(obj)
        for (camera, source_stamp), members in groups.items():
            wanted = None if targets is None else set().union(*(targets[m.object_id] for m in members))
            cams = [name for name in frames if name != camera and (wanted is None or name in wanted)]
            if track and camera in frames and frames[camera].stamp > source_stamp:
                cams.append(camera)  # the source camera's newer frame: the object moves on
            if not cams:
                continue
            views = [TargetView(frames[n].image, role=self.roles[n], name=n) for n in cams]
            step = StreamStep(stamp, [m.object_id for m in members], [m.generation for m in members],
                              self.stale_after)
            t0 = self.clock()
            per_object = self.segmentor.segment_objects(members[0].image, [m.mask for m in members], views,
                                                        state=self.state, step=step)
            out.pipeline_seconds += self.clock() - t0
            call_stages: Dict[str, float] = {}
            for obj, results in zip(members, per_object):
                for name, seconds in (results[0].timings or {}).items() if results else ():
                    call_stages[name] = (max(call_stages.get(name, 0.0), seconds) if name in SHARED_STAGES
                                         else call_stages.get(name, 0.0) + seconds)
                for name, result in zip(cams, results):
                    if name == camera:
                        out.advances.append(Advance(obj, frames[name], result.mask.astype(bool)
                                                    if result.mask.any() else None))
                    per_target.setdefault(name, []).append((obj, result))
            for name, seconds in call_stages.items():
                out.stages[name] = out.stages.get(name, 0.0) + seconds
        for name in self.order:
            if name in per_target:
                out.cameras.append(self.compose(frames[name], per_target[name]))
        if self.objects3d is not None:
            out.objects3d = self.objects3d.process(out, frames, objects)
            if out.objects3d is not None:
                out.stages["objects3d"] = out.objects3d.seconds
        return out

    def compose(self, frame: CameraFrame, pairs: Sequence[Tuple[TrackedObject, SegmentationResult]]) -> CameraOutput:
        """One camera's label image (a higher score wins overlaps) and each object's result
        with its path and, for an empty mask, the reason."""
        labels = compose_labels(frame.image.shape[:2], [(o.object_id, r) for o, r in pairs])
        told = outcome.annotate(labels, [(o.object_id, r) for o, r in pairs], self.backend)
        objects = [ObjectOutput(o, r, int((labels == o.object_id).sum())) for (o, _), r in zip(pairs, told)]
        return CameraOutput(frame.camera, frame, labels, objects)


def compose_labels(shape: Tuple[int, int], pairs: Sequence[Tuple[int, SegmentationResult]]) -> np.ndarray:
    """One mono8 label image from several objects' masks; a higher score wins overlaps."""
    labels = np.zeros(shape, np.uint8)
    for object_id, result in sorted(pairs, key=lambda p: p[1].score):
        labels[np.asarray(result.mask, bool)] = object_id
    return labels


def apply_advances(output: SetOutput, registry: ObjectRegistry) -> List[Advance]:
    """Move the track-mode sources of ``output`` in ``registry`` (each only if its object is
    still the one the set was computed for); returns the objects lost in their source camera."""
    lost = []
    for adv in output.advances:
        if adv.mask is None:
            lost.append(adv)
        else:
            registry.advance(adv.object, adv.frame.image, adv.mask, adv.frame.stamp)
    return lost
