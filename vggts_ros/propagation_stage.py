"""Masks at camera rate: the set processor's cross-view results carried to every new frame.

:class:`PropagationStage` sits beside a :class:`vggts_ros.set_processor.SetProcessor` (no
ROS here; the node and ``vggts replay`` drive both):

* **cross-view side** (the slow step, on the newest synchronised set): :meth:`choose`
  says which (object, target camera) pairs the next step computes (oldest refresh first,
  :class:`vggts_ros.refresh.RefreshScheduler`; all pairs when ``max_pairs`` is None), the
  caller passes that to ``SetProcessor.process(..., targets=...)``, and :meth:`accept`
  takes the step's output: each result (re)starts its pair's track on the set's frame and
  replaces whatever was propagated so far (it corrects drift); a late result catches up
  with the camera at once. One exception (``keep_tracked``, on by default): an empty
  result ("not found") does not replace a track that is still good, i.e. whose points
  are still followed on the object; a backend's miss then does not blank a mask the
  camera still sees (the track keeps its own age and deadline; when the object is really
  gone, its points go with it and the track stops being good).
* **camera side** (every new frame of a target camera): :meth:`frame` moves every tracked
  object's mask to that frame (:class:`vggts_ros.propagation.CameraPropagator`, one per
  camera) and returns a :class:`vggts_ros.set_processor.CameraOutput` for it, published
  with the frame's own header like a set's output.

A propagated object's result says so: ``path`` is ``propagated(age=0.400s, from=<the
cross-view path>)`` (the age is the frame's stamp minus the stamp of the cross-view
frame the track started from), its target points moved with the mask. A propagated mask
that is not good (older than the deadline ``max_age`` since its cross-view result, or
its tracker lost most of its points, left the image, or the fit degenerated) is left out
of the label image: area 0, ``reason`` ``"propagation: <why>"``. An object the tracker
predicts behind another tracked object (its points lost under it) is published where it is
predicted, minus the part under the one in front; its path says so
(``propagated(age=0.900s, occluded_by=1, from=...)``), and while none of it is in sight it
is published empty with the reason ``occluded by object 1 (predicted behind it by
propagation)``. Such a pair counts as lost for the refresh schedule, and a new cross-view
result that covers less than half of the object the track predicts (it saw the part in
sight) does not replace the prediction.

Objects cleared or replaced (a new registry generation for their id) lose their tracks.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Dict, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np

from vggts_ros import outcome
from vggts_ros.propagation import CameraPropagator, Propagated, PropagationConfig, make_propagator
from vggts_ros.refresh import RefreshScheduler
from vggts_ros.registry import TrackedObject
from vggts_ros.set_processor import CameraFrame, CameraOutput, ObjectOutput, SetOutput, compose_labels
from vggts_ros.types import SegmentationResult

PROPAGATED = "propagated"


def propagated_path(age: float, origin: str, occluded_by: Optional[int] = None) -> str:
    """``ObjectPoints.path`` of a propagated mask: the propagation, the age of the
    cross-view result it started from, the tracked object it is predicted behind (if it
    is), and that result's own path."""
    behind = "" if occluded_by is None else f", occluded_by={occluded_by}"
    return f"{PROPAGATED}(age={age:.3f}s{behind}, from={origin or 'cross_view'})"


class PropagationStage:
    """See the module docstring. ``roles``: camera name -> role (the processor's cameras)."""

    def __init__(self, roles: Mapping[str, str], config: Optional[PropagationConfig] = None, backend: str = "",
                 max_pairs: Optional[int] = None, lost_bonus: float = 3.0, keep_tracked: bool = True) -> None:
        self.roles = dict(roles)
        self.config = config or PropagationConfig()
        self.backend = backend
        self.keep_tracked = keep_tracked
        self.scheduler = RefreshScheduler(max_pairs=max_pairs, lost_bonus=lost_bonus)
        self._props: Dict[str, CameraPropagator] = {}
        # (object id, camera) -> (generation of the object, the cross-view result it came from)
        self._origin: Dict[Tuple[int, str], Tuple[int, SegmentationResult]] = {}
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ objects
    def _targets(self, obj: TrackedObject) -> List[str]:
        return [c for c in self.roles if c != obj.camera]

    def sync_objects(self, objects: Sequence[TrackedObject], now: float) -> None:
        """Follow the registry: schedule the pairs of new objects, forget cleared or
        replaced ones (their tracks and pairs)."""
        with self._lock:
            current = {o.object_id: o for o in objects}
            for (oid, cam), (gen, _) in list(self._origin.items()):
                obj = current.get(oid)
                if obj is None or obj.generation != gen or cam == obj.camera:
                    self._forget(oid, cam)
            wanted = {(o.object_id, c) for o in objects for c in self._targets(o)}
            for pair in self.scheduler.pairs:
                if pair not in wanted:
                    self.scheduler.remove(pair)
            for pair in sorted(wanted):
                self.scheduler.add(pair, now)

    def _forget(self, oid: int, cam: str) -> None:
        self._origin.pop((oid, cam), None)
        prop = self._props.get(cam)
        if prop is not None:
            prop.drop(oid)

    def reset(self) -> None:
        """A new stream (a time jump back): forget every track and the refresh schedule
        (its pairs come back with the next :meth:`choose`, never refreshed)."""
        with self._lock:
            self._props.clear()
            self._origin.clear()
            self.scheduler = RefreshScheduler(self.scheduler.max_pairs, self.scheduler.lost_bonus, self.scheduler.group)

    # ------------------------------------------------------------------ cross-view side
    def choose(self, now: float, objects: Sequence[TrackedObject]) -> Optional[Dict[int, Set[str]]]:
        """Targets per object id for the cross-view step starting at ``now`` (None: every
        pair, when ``max_pairs`` is None). The chosen pairs are in flight until
        :meth:`accept` (or :meth:`cancel`)."""
        with self._lock:
            self.sync_objects(objects, now)
            if self.scheduler.max_pairs is None:
                return None
            chosen: Dict[int, Set[str]] = {}
            for oid, cam in self.scheduler.choose(now):
                chosen.setdefault(oid, set()).add(cam)
            return chosen

    def cancel(self, targets: Optional[Mapping[int, Set[str]]]) -> None:
        """A chosen step was not run (no usable frames): its pairs are free again."""
        with self._lock:
            if targets is None:
                self.scheduler.cancel(self.scheduler.pairs)
            else:
                self.scheduler.cancel([(o, c) for o, cams in targets.items() for c in cams])

    def accept(self, output: SetOutput, current: Optional[Mapping[int, TrackedObject]] = None,
               chosen: Optional[Mapping[int, Set[str]]] = None) -> None:
        """Take a cross-view step's results: every (object, camera) result restarts that
        pair's track on the set's frame. ``current`` (object id -> object now): results
        for objects cleared or replaced since the step started are dropped. ``chosen``: what
        :meth:`choose` gave for this step; its pairs without a result (a camera missing from
        the set) are free again."""
        with self._lock:
            done = []
            for cam_out in output.cameras:
                frame = cam_out.frame
                prop = self._props.get(frame.camera)
                if prop is None or (prop.shape is not None and prop.shape != tuple(frame.image.shape[:2])):
                    prop = self._props[frame.camera] = make_propagator(self.config)
                for oo in cam_out.objects:
                    obj, res = oo.object, oo.result
                    now_obj = None if current is None else current.get(obj.object_id)
                    if current is not None and (now_obj is None or now_obj.generation != obj.generation):
                        continue  # cleared or replaced since the step started (a track-mode move is fine)
                    if frame.camera == obj.camera:
                        continue
                    done.append((obj.object_id, frame.camera))
                    mask = np.asarray(res.mask, bool)
                    if not mask.any() and self.keep_tracked and self._still_tracked(obj, frame.camera):
                        continue  # "not found" while the track still follows it: a miss, kept out
                    if self.keep_tracked and self._partly_behind(obj, frame.camera, mask):
                        continue  # only the part of it in sight beside the object it is predicted behind
                    prop.start(obj.object_id, frame.image, frame.stamp, mask, np.asarray(res.target_points))
                    self._origin[(obj.object_id, frame.camera)] = (obj.generation, res)
            self.scheduler.refreshed(done, output.stamp)
            if chosen is not None:
                self.scheduler.cancel([(o, c) for o, cams in chosen.items() for c in cams if (o, c) not in done])

    def _still_tracked(self, obj: TrackedObject, camera: str) -> bool:
        """The pair's track is good (points kept, within its deadline) and shows the object."""
        origin = self._origin.get((obj.object_id, camera))
        prop = self._props.get(camera)
        state = prop.current(obj.object_id) if prop is not None else None
        return (origin is not None and origin[0] == obj.generation and state is not None and state.good
                and (bool(state.mask.any()) or state.occluded_by is not None))

    def _partly_behind(self, obj: TrackedObject, camera: str, mask: np.ndarray) -> bool:
        """The pair's track has the object (mostly) behind another tracked one (predicted
        there, or half of it under that one) and ``mask`` (a new cross-view result) covers
        less than half of the whole object the track has: the result saw the part in
        sight, a worse start than the whole object tracked (its shape from before it went
        behind)."""
        origin = self._origin.get((obj.object_id, camera))
        prop = self._props.get(camera)
        state = prop.current(obj.object_id) if prop is not None else None
        return (origin is not None and origin[0] == obj.generation and state is not None and state.good
                and (state.occluded_by is not None or state.hidden >= 0.5) and mask.sum() < 0.5 * state.full)

    # ------------------------------------------------------------------ camera side
    def frame(self, frame: CameraFrame, objects: Sequence[TrackedObject]) -> Optional[CameraOutput]:
        """A new frame of one camera: the masks of the objects tracked there, moved to it
        (None when no object has a track on this camera yet)."""
        with self._lock:
            prop = self._props.get(frame.camera)
            shape = tuple(np.asarray(frame.image).shape[:2])
            if prop is not None and prop.shape is not None and prop.shape != shape:
                # the camera changed its frame size: its tracks cannot follow; new ones start
                # with the next cross-view result on frames of the new size
                for oid, cam in [k for k in self._origin if k[1] == frame.camera]:
                    self._forget(oid, cam)
                prop = None
            if prop is None:
                prop = self._props[frame.camera] = make_propagator(self.config)
            if prop.stamp is not None and frame.stamp < prop.stamp:
                return None  # an older frame arriving late: the tracks are past it
            states = prop.update(frame.image, frame.stamp)
            current = {o.object_id: o for o in objects}
            pairs: List[Tuple[TrackedObject, SegmentationResult]] = []
            for oid in sorted(states):
                obj = current.get(oid)
                origin = self._origin.get((oid, frame.camera))
                if obj is None or origin is None or origin[0] != obj.generation:
                    continue
                state = states[oid]
                # a prediction behind another object follows no point: refreshed early, as a lost one
                self.scheduler.set_lost((oid, frame.camera), not state.good or state.occluded_by is not None)
                pairs.append((obj, self._result(state, origin[1])))
            if not pairs:
                return None
            labels = compose_labels(frame.image.shape[:2], [(o.object_id, r) for o, r in pairs])
            told = outcome.annotate(labels, [(o.object_id, r) for o, r in pairs], self.backend)
            outs = [ObjectOutput(o, r, int((labels == o.object_id).sum())) for (o, _), r in zip(pairs, told)]
            return CameraOutput(frame.camera, frame, labels, outs)

    def _result(self, state: Propagated, origin: SegmentationResult) -> SegmentationResult:
        """The published result of a propagated state (the mask only when it is good)."""
        n = len(state.points)
        visibility = np.asarray(origin.visibility, np.float32)[:n] if len(origin.visibility) >= n \
            else np.ones(n, np.float32)
        visibility = np.where(state.visible, visibility, 0.0).astype(np.float32)
        confidence = np.asarray(origin.confidence, np.float32)[:n] if len(origin.confidence) >= n \
            else np.zeros(n, np.float32)
        mask = state.mask if state.good else np.zeros_like(state.mask)
        path = origin.path if state.steps == 0 else propagated_path(state.age, origin.path, state.occluded_by)
        reason = "" if state.good else f"propagation: {state.reason}"
        if state.good and not mask.any():
            if state.occluded_by is not None:  # predicted behind another object, all of it hidden
                reason = f"occluded by object {state.occluded_by} (predicted behind it by propagation)"
            else:
                reason = origin.reason  # the cross-view step did not find it; still not found
        return dataclasses.replace(origin, mask=mask, target_points=state.points, visibility=visibility,
                                   confidence=(confidence * min(1.0, state.kept)).astype(np.float32),
                                   score=float(origin.score) if state.good else 0.0, logits=None, path=path,
                                   reason=reason, timings={})

    def set_limits(self, max_age: Optional[float], max_pairs: Optional[int]) -> None:
        """Live settings: the deadline (publish.max_age) and the pairs per step."""
        with self._lock:
            self.config.max_age = max_age
            for prop in self._props.values():
                prop.config.max_age = max_age
            self.scheduler.max_pairs = max_pairs

    # ------------------------------------------------------------------ diagnostics
    def diagnostics(self, now: float) -> Dict[str, str]:
        """Key/values for /diagnostics: the refresh age of every (object, camera) pair at
        ``now`` (the newest set's stamp) and the largest."""
        ages = self.refresh_ages(now)
        out = {"propagation": "on", "max_age_s": f"{self.config.max_age}"}
        if ages:
            out["refresh_age_max_s"] = f"{max(ages.values()):.3f}"
        for (oid, cam), age in sorted(ages.items()):
            out[f"refresh_age_s/{oid}@{cam}"] = f"{age:.3f}"
        return out
    def refresh_ages(self, now: float) -> Dict[Tuple[int, str], float]:
        """Seconds since the frame of each pair's newest cross-view result."""
        with self._lock:
            return self.scheduler.ages(now)

    def refresh_bound(self, step_max: float, set_age_max: float) -> float:
        with self._lock:
            return self.scheduler.bound(step_max, set_age_max)
