"""Object intake: a source mask (or clicks turned into one) on a camera's recent frame
becomes a tracked object (no ROS).

The node's ``set_source_mask`` service, its ``click_to_mask`` service, the ``~/click`` topic
and the stock tools' click topics all end here with NumPy inputs, so every way of marking an
object is checked by the same rules and answered with the same messages: the camera (by
name, or by the ``frame_id`` of its images), the object id and label, the frame the mask was
drawn on (by stamp, within the synchroniser's slop, among the frames kept for
``inference.keyframe_history`` seconds; stamp 0 = the newest), the mask's size against that
frame, an empty mask, an unusable frame. Nothing is stored unless every check passes.

Frames in the history are :class:`vggts_ros.frame_history.Frame` whose ``payload`` has
``rgb()`` (decode; may raise ValueError), ``size()`` ((height, width) without decoding, or
None) and ``frame_id``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

from vggts_ros.click_mask import ClickMaskError, mask_from_clicks
from vggts_ros.frame_history import Frame, FrameHistory, check_pixels
from vggts_ros.registry import ObjectRegistry, RegistryError, TrackedObject


class IntakeError(ValueError):
    """A request that is refused; the message says exactly what was wrong."""


@dataclass
class Accepted:
    object: TrackedObject
    replaced: bool
    frame: Frame  # the frame the mask belongs to
    message: str


MaskInput = Union[np.ndarray, Callable[[], np.ndarray]]


class ObjectIntake:
    """Checks and stores source masks; see the module docstring."""

    def __init__(self, registry: ObjectRegistry, history: FrameHistory, cameras: Sequence[str],
                 tolerance: float = 1e-3, topics: Optional[dict] = None) -> None:
        self.registry = registry
        self.history = history
        self.cameras = list(cameras)
        self.tolerance = float(tolerance)  # s: a stamp names the frame within this
        self.topics = dict(topics or {})  # camera -> topic, named when no frame is found

    def camera(self, name: str) -> str:
        """A camera of this node by its name or by the ``frame_id`` of its newest frame."""
        if name in self.cameras:
            return name
        by_frame = [n for n in self.cameras if (f := self.history.latest(n)) is not None
                    and getattr(f.payload, "frame_id", None) == name]
        if not by_frame:
            raise IntakeError(f"unknown camera {name[:64]!r}: name one of {self.cameras} or its images' frame_id")
        return by_frame[0]

    def check(self, object_id: int, label: str) -> None:
        """Refuse an id or label before any costly work is done for the request."""
        try:
            self.registry.check_request(int(object_id), label)
        except RegistryError as exc:
            raise IntakeError(str(exc)) from exc

    def set_mask(self, camera: str, mask: MaskInput, stamp: float, object_id: int = 0, label: str = "",
                 mask_size: Optional[Tuple[int, int]] = None) -> Accepted:
        """Store ``mask`` (HxW, nonzero = object; or a function decoding it, raising
        ValueError) as object ``object_id`` (0: a free id) on ``camera``'s frame at ``stamp``
        (0: the newest). ``mask_size`` (height, width) lets a wrong size be refused before
        decoding. Raises :class:`IntakeError` naming the problem; stores nothing then."""
        camera = self.camera(camera)
        self.check(object_id, label)
        frame, why = self.history.find(camera, float(stamp), self.tolerance)
        if frame is None:
            raise IntakeError(why + (f" (topic {self.topics[camera]})" if camera in self.topics else ""))
        size = frame.payload.size()
        if mask_size is None and isinstance(mask, np.ndarray):
            mask_size = tuple(mask.shape[:2])
        if size is not None and mask_size is not None and tuple(mask_size) != tuple(size):
            raise IntakeError(f"mask is {mask_size[1]}x{mask_size[0]} but camera {camera!r} frames are "
                              f"{size[1]}x{size[0]} (width x height)")
        try:
            pixels = mask() if callable(mask) else mask
        except ValueError as exc:
            raise IntakeError(f"bad mask image: {exc}") from exc
        pixels = np.asarray(pixels)
        if pixels.ndim == 3 and pixels.shape[2] == 1:
            pixels = pixels[..., 0]
        if pixels.ndim != 2:
            raise IntakeError(f"mask must be HxW, got shape {tuple(pixels.shape)}")
        try:
            image = frame.payload.rgb()
        except ValueError as exc:
            raise IntakeError(f"the frame of camera {camera!r} at {frame.stamp:.3f} s cannot be decoded: {exc}") from exc
        if pixels.shape != image.shape[:2]:
            raise IntakeError(f"mask is {pixels.shape[1]}x{pixels.shape[0]} but the frame is "
                              f"{image.shape[1]}x{image.shape[0]} (width x height)")
        binary = pixels > 0
        area = int(binary.sum())
        if area == 0:
            raise IntakeError("mask is empty: no nonzero pixel marks the object")
        problem = check_pixels(image)
        if problem:
            raise IntakeError(f"the frame of camera {camera!r} at {frame.stamp:.3f} s is unusable: {problem}")
        try:
            obj, replaced = self.registry.put(camera, label, image.copy(), binary.copy(), frame.stamp, int(object_id))
        except RegistryError as exc:
            raise IntakeError(str(exc)) from exc
        verb = "replaced" if replaced else "set"
        return Accepted(obj, replaced, frame,
                        f"object {obj.object_id} {verb} on camera {camera!r}: {area} px on the frame at {frame.stamp:.3f} s")

    def click(self, camera: str, points: Optional[Sequence[Sequence[float]]] = None,
              labels: Optional[List[int]] = None, box: Optional[Sequence[float]] = None, object_id: int = 0,
              label: str = "") -> Tuple[Accepted, np.ndarray]:
        """Points (1 = object, 0 = background) and/or a box on a camera's newest frame ->
        a GrabCut mask (weight-free, :mod:`vggts_ros.click_mask`) -> :meth:`set_mask`.
        Returns the accepted object and the mask."""
        camera = self.camera(camera)
        frame = self.history.latest(camera)
        if frame is None:
            raise IntakeError(f"no frame received yet from camera {camera!r}")
        try:
            mask = mask_from_clicks(frame.payload.rgb(), points, labels, box)
        except (ClickMaskError, ValueError) as exc:
            raise IntakeError(f"camera {camera!r}, frame at {frame.stamp:.3f} s: {exc}") from exc
        return self.set_mask(camera, mask, frame.stamp, object_id, label), mask
