"""The node's camera input: the subscriptions (images, and rqt_image_view's clicks on each
stream); every image message is checked (size before decoding), kept in
the frame history (for masks drawn on recent frames) and given to the synchroniser; complete
sets go to the inference thread (the newest replaces one still waiting), and with
``publish.propagation`` every frame also goes to the camera-rate thread. A ROS time jump back
restarts the synchroniser, the history and the tracks.
"""

from __future__ import annotations

import time
from typing import Dict, List

from geometry_msgs.msg import Point
from rclpy.qos import qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CompressedImage, Image

from vggts_ros.frame_history import Frame, FrameHistory
from vggts_ros.ros.conversions import ReceivedImage, check_size
from vggts_ros.ros.outputs import mouse_topic
from vggts_ros.ros.services import stamp_to_sec
from vggts_ros.sync import SyncSet

FRAMES_KEPT = 120  # per camera, whatever keyframe_history says (memory bound)


class CameraInput:
    """The subscription, timer and clock-jump callbacks of a node's cameras."""

    def __init__(self, node) -> None:
        self.node = node

    def subscribe(self, cameras, images_group, clicks_group) -> Dict[str, object]:
        """Each camera's image subscription (sensor QoS, overridable) and its rqt_image_view
        click topic (``<image topic>_mouse_left``); keyed ``<camera>`` and ``<camera>:mouse``."""
        node = self.node
        qos_options = QoSOverridingOptions.with_default_policies()
        subs: Dict[str, object] = {}
        for cam in cameras:
            subs[cam.name] = node.create_subscription(
                CompressedImage if cam.compressed else Image, cam.topic,
                lambda msg, name=cam.name: self.on_image(name, msg),
                qos_profile_sensor_data, callback_group=images_group, qos_overriding_options=qos_options)
            subs[f"{cam.name}:mouse"] = node.create_subscription(
                Point, mouse_topic(subs[cam.name].topic_name), node.object_services.mouse_click(cam.name), 10,
                callback_group=clicks_group)
        return subs

    def on_image(self, camera: str, msg) -> None:
        if not self.node._active:  # inactive (or not yet configured)
            return
        try:
            self._take(camera, msg)
        except Exception as exc:  # noqa: BLE001 - an exception here would stop the executor for good
            now = time.monotonic()
            self.node.health.rejected(camera, now, f"internal error: {type(exc).__name__}: {exc}")
            self.node.throttle.say(f"image:{camera}", now, self.node.get_logger().error,
                                   f"camera {camera!r}: frame dropped: {type(exc).__name__}: {exc}")

    def _take(self, camera: str, msg) -> None:
        now = time.monotonic()
        cam = self.node.cfg.camera(camera)
        image = ReceivedImage(msg, cam.compressed, self.node.cfg.inference.max_image_pixels)
        stamp = stamp_to_sec(msg.header.stamp)
        size = image.size()
        problem = "compressed image has no readable PNG/JPEG header" if size is None else \
            check_size(size[0], size[1], self.node.cfg.inference.max_image_pixels, "frame")
        if problem:
            self.reject(camera, stamp, problem, now)
            return
        ros_now = self.node.get_clock().now().nanoseconds * 1e-9
        self.node.health.frame(camera, now, ros_now - stamp if ros_now > 0 else None)
        self.node.history.add(Frame(camera, stamp, now, image))
        self.dispatch(self.node.sync.add(camera, stamp, Frame(camera, stamp, now, image), now=now))
        if self.node.camera_rate is not None and len(self.node.registry) > 0:
            self.node.camera_rate.submit(camera, Frame(camera, stamp, now, image))

    def reject(self, camera: str, stamp: float, problem: str, now: float) -> None:
        changed = self.node.health.rejected(camera, now, problem)
        self.node.throttle.say(f"reject:{camera}", now, self.node.get_logger().warning,
                               f"camera {camera!r}: frame at {stamp:.3f} s skipped: {problem}", force=changed)

    def poll(self) -> None:
        self.dispatch(self.node.sync.poll())

    def time_jumped(self, jump) -> None:
        self.node.sync.time_jumped()
        self.node.history = FrameHistory([c.name for c in self.node.cfg.cameras], self.node.cfg.inference.keyframe_history,
                                    FRAMES_KEPT)
        self.node.intake.history = self.node.history
        if self.node.stage is not None:
            self.node.stage.reset()  # the tracks' frames are in the future now
        self.node.io3d.reset()
        self.node.get_logger().warning("ROS time jumped back: synchroniser and frame history restarted")

    def dispatch(self, sets: List[SyncSet]) -> None:
        now = time.monotonic()
        for item in sets:
            self.node.health.set_received(now)
            self.node.io3d.hold(item)
            if len(self.node.registry) > 0 and self.node.worker.submit(item):
                self.node.health.replaced += 1
