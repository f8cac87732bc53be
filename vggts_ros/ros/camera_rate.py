"""``publish.propagation``: masks on every camera frame, between the cross-view results.

Each camera frame (the newest per camera, never a queue: :class:`vggts_ros.worker.LatestPerKeyWorker`)
moves every object's latest mask in that camera to the frame with the per-camera tracker
(:class:`vggts_ros.propagation_stage.PropagationStage`) and publishes it with the frame's
own header; the inference thread's cross-view results restart the tracks. See
docs/propagation.md.
"""

from __future__ import annotations

import time
from typing import Dict

from vggts_ros.frame_history import Frame
from vggts_ros.propagation_stage import PropagationStage
from vggts_ros.set_processor import CameraFrame
from vggts_ros.worker import LatestPerKeyWorker


class CameraRate:
    """The camera-rate thread of a node (its ``outputs``, ``processor``, ``registry``, ``io3d``)."""

    def __init__(self, node, stage: PropagationStage) -> None:
        self.node = node
        self.stage = stage
        self.frames = 0  # frames published by propagation
        self.worker = LatestPerKeyWorker(self._propagate, self._failed)

    def submit(self, camera: str, frame: Frame) -> None:
        self.worker.submit(camera, frame)

    def stop(self, timeout: float = 5.0) -> None:
        self.worker.stop(timeout=timeout)

    def diagnostics(self, stamp: float) -> Dict[str, str]:
        return dict(propagated_frames=str(self.frames), **self.stage.diagnostics(stamp))

    def _propagate(self, camera: str, frame: Frame) -> None:
        processor = self.node.processor
        if processor is None:
            return
        size = processor.sizes.size(camera)
        image = frame.payload.rgb()
        if size is not None and image.shape[:2] != size:
            return  # a frame the set path refuses (and reports)
        _, objects = self.node.registry.snapshot()
        out = self.stage.frame(CameraFrame(camera, frame.stamp, image, frame), objects)
        if out is not None:
            self.node.outputs.publish(out, frame.payload.msg.header, self.node.io3d.markers(camera))
            self.frames += 1

    def _failed(self, camera: str, frame: Frame, exc: BaseException) -> None:
        self.node.throttle.say(f"propagation:{camera}", time.monotonic(), self.node.get_logger().error,
                               f"camera {camera!r}: propagation failed on the frame at {frame.stamp:.3f} s: "
                               f"{type(exc).__name__}: {exc}")
