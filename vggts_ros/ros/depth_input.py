"""The node's depth input: one subscription (sensor QoS, REP-2003 QoS overrides allowed) per
camera with a ``camera.<name>.depth_topic``, feeding the 3D step's
:class:`vggts_ros.geometry.depth_stream.DepthStream` of that camera. Messages are kept as
they arrive and decoded only when a set matches them. The camera_info beside each image
topic is subscribed by :mod:`vggts_ros.ros.outputs` and shared with the 3D step.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Tuple

from rclpy.qos import qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import Image

from vggts_ros.geometry.depth_stream import DepthStream


class DepthInput:
    """Depth subscriptions of ``cameras`` (those with a depth topic). ``streams`` (camera ->
    DepthStream) is rebound at every configure (:meth:`bind`); images arriving while
    ``active()`` is false, or for a camera without a stream, are ignored."""

    def __init__(self, node, cameras, active, callback_group=None) -> None:
        self.node = node
        self.active = active
        self.streams: Mapping[str, DepthStream] = {}
        qos_options = QoSOverridingOptions.with_default_policies()
        self.subscriptions = {
            c.name: node.create_subscription(Image, c.depth_topic, lambda msg, name=c.name: self._on_depth(name, msg),
                                             qos_profile_sensor_data, callback_group=callback_group,
                                             qos_overriding_options=qos_options)
            for c in cameras if c.depth_topic}
        self.topics: Dict[str, str] = {name: sub.topic_name for name, sub in self.subscriptions.items()}

    @staticmethod
    def key(cameras) -> Tuple:
        """What the subscriptions depend on (made anew only when it changes)."""
        return tuple((c.name, c.depth_topic) for c in cameras if c.depth_topic)

    def bind(self, streams: Optional[Mapping[str, DepthStream]]) -> None:
        self.streams = dict(streams or {})
        for name, stream in self.streams.items():
            stream.topic = self.topics.get(name, stream.topic)

    def _on_depth(self, camera: str, msg) -> None:
        stream = self.streams.get(camera)
        if stream is None or not self.active():
            return
        stream.add(float(msg.header.stamp.sec) + float(msg.header.stamp.nanosec) * 1e-9, msg)

    def reset(self) -> None:
        """A ROS time jump back: the kept depth images' stamps no longer compare."""
        for stream in self.streams.values():
            stream.reset()

    def values(self, camera: str) -> Dict[str, str]:
        """Diagnostics key/values of a camera's depth (empty without a depth topic)."""
        stream = self.streams.get(camera)
        return stream.values() if stream is not None else {}

    def destroy(self) -> None:
        for sub in self.subscriptions.values():
            self.node.destroy_subscription(sub)
        self.subscriptions = {}
