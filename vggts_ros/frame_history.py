"""Recent frames per camera, per-camera frame sizes, and whether a frame is usable (no ROS).

``FrameHistory`` keeps the frames of the last ``seconds`` of each camera's stamps (at
most ``max_frames``), so that a mask drawn in a UI on a frame shown a moment ago still
finds that frame whatever the camera rate. A time jump back (stamps going back) starts
the camera's history afresh.

``SizeTracker`` knows the frame size of each camera. The first frame sets it; a frame of
another size is rejected (a stray frame must not reach the model mixed with the others),
but ``relock_after`` consecutive frames of one new size mean the camera really changed
resolution: that size is accepted from then on and the change is reported.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Deque, Dict, List, Optional, Tuple

import numpy as np

Size = Tuple[int, int]  # (height, width)


@dataclass
class Frame:
    """One received camera message; ``payload`` is whatever the caller stores."""

    camera: str
    stamp: float
    arrival: float
    payload: Any


class FrameHistory:
    def __init__(self, cameras: List[str], seconds: float = 2.0, max_frames: int = 120) -> None:
        self.seconds = float(seconds)
        self.max_frames = int(max_frames)
        self._lock = threading.Lock()
        self._frames: Dict[str, Deque[Frame]] = {c: deque() for c in cameras}

    def add(self, frame: Frame) -> None:
        with self._lock:
            frames = self._frames[frame.camera]
            if frames and frame.stamp < frames[-1].stamp - max(self.seconds, 1.0):
                frames.clear()  # time went back: the old frames belong to another timeline
            frames.append(frame)
            newest = max(frame.stamp, frames[-1].stamp)
            while frames and (len(frames) > self.max_frames or frames[0].stamp < newest - self.seconds - 1e-9):
                frames.popleft()

    def latest(self, camera: str) -> Optional[Frame]:
        with self._lock:
            frames = self._frames[camera]
            return frames[-1] if frames else None

    def frames(self, camera: str) -> List[Frame]:
        with self._lock:
            return list(self._frames[camera])

    def find(self, camera: str, stamp: float, tolerance: float) -> Tuple[Optional[Frame], str]:
        """The kept frame nearest ``stamp`` (the newest for stamp 0), or None and why not."""
        frames = self.frames(camera)
        if not frames:
            return None, f"no frame received yet from camera {camera!r}"
        if stamp == 0.0:
            return frames[-1], ""
        best = min(frames, key=lambda f: abs(f.stamp - stamp))
        if abs(best.stamp - stamp) > tolerance:
            return None, (
                f"no frame from camera {camera!r} at stamp {stamp:.3f} s (within {tolerance:.3f} s); "
                f"kept frames span {frames[0].stamp:.3f} .. {frames[-1].stamp:.3f} s "
                f"(inference.keyframe_history = {self.seconds:g} s)"
            )
        return best, ""


class SizeTracker:
    def __init__(self, relock_after: int = 3) -> None:
        self.relock_after = int(relock_after)
        self._lock = threading.Lock()
        self._size: Dict[str, Size] = {}
        self._candidate: Dict[str, Tuple[Size, int]] = {}
        self.changes: Dict[str, int] = {}

    def size(self, camera: str) -> Optional[Size]:
        with self._lock:
            return self._size.get(camera)

    def check(self, camera: str, size: Size) -> str:
        """'' if a frame of ``size`` is usable now, else why it is skipped."""
        with self._lock:
            expected = self._size.setdefault(camera, size)
            if size == expected:
                self._candidate.pop(camera, None)
                return ""
            seen, count = self._candidate.get(camera, (size, 0))
            count = count + 1 if seen == size else 1
            if count >= self.relock_after:
                self._size[camera] = size
                self._candidate.pop(camera, None)
                self.changes[camera] = self.changes.get(camera, 0) + 1
                return ""
            self._candidate[camera] = (size, count)
            return (f"frame size changed mid-stream to {size[1]}x{size[0]} (stream was {expected[1]}x{expected[0]}; "
                    f"accepted after {self.relock_after} consecutive frames of one new size)")


def check_pixels(image: np.ndarray) -> str:
    """Empty string for a usable frame, else why it is not (a dead or blank camera)."""
    if image.size == 0:
        return "image is empty"
    if not np.isfinite(image).all():
        return "image contains NaN or infinite values"
    if image.max() == image.min():
        return f"image is constant (all pixels = {image.flat[0]})"
    return ""
