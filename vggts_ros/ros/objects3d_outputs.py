"""The node's objects in 3D on ROS topics (one processed set at a time).

* ``~/<camera>/objects3d`` (``vggts_ros/Objects3D``): that camera's objects in its optical
  frame (the colour image's header: its stamp and frame_id), for every camera with a
  depth source;
* ``~/objects3d``: the fused objects in the reference frame (``geometry.frame``: a
  camera's optical frame, or the frame ``camera.<name>.pose`` is given in), when some
  camera has a pose;
* ``~/<camera>/object_cloud`` (``sensor_msgs/PointCloud2``: x, y, z float32, object_id
  uint8): the objects' points, published only while subscribed;
* ``~/camera_poses`` (``vggts_ros/CameraPoses``): VGGT's camera poses when it gave them;
* box (CUBE) and centroid (SPHERE) markers, added by :mod:`vggts_ros.ros.outputs` to the
  existing ``~/<camera>/markers``;
* a TF frame ``<node>/object_<id>`` per object (its box, in the fused frame when there is
  one, else in the first camera that has it) where ``tf2_ros`` is importable (a ROS
  install; the pip path has no tf2: nothing is broadcast, said once in the log).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence

from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point
from rclpy.qos import QoSProfile
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import Marker

from vggts_ros.geometry import messages
from vggts_ros.geometry.objects3d import Objects3D
from vggts_ros.msg import CameraPoses, Objects3D as Objects3DMsg
from vggts_ros.ros.conversions import to_uint8_array
from vggts_ros.visualize import color_of


def optical_frame(camera: str, header) -> str:
    """The camera's optical frame: its images' ``frame_id``, else ``<camera>_optical_frame``."""
    return (getattr(header, "frame_id", "") if header is not None else "") or f"{camera}_optical_frame"


def _time(seconds: float) -> Time:
    sec = int(seconds // 1)
    return Time(sec=sec, nanosec=min(int(round((seconds - sec) * 1e9)), 999_999_999))


class Objects3DOutputs:
    """Publishers for ``cameras`` (names with a depth source), the fused topic and the poses."""

    def __init__(self, node, cameras: Sequence[str], reference: str, reference_is_camera: bool) -> None:
        qos_options = QoSOverridingOptions.with_default_policies()
        qos = QoSProfile(depth=10)
        self.node = node
        self.reference = reference
        self.reference_is_camera = reference_is_camera
        self.per_camera = {c: node.create_publisher(Objects3DMsg, f"~/{c}/objects3d", qos,
                                                    qos_overriding_options=qos_options) for c in cameras}
        self.clouds = {c: node.create_publisher(PointCloud2, f"~/{c}/object_cloud", qos,
                                                qos_overriding_options=qos_options) for c in cameras}
        self.fused = node.create_publisher(Objects3DMsg, "~/objects3d", qos, qos_overriding_options=qos_options)
        self.poses = node.create_publisher(CameraPoses, "~/camera_poses", qos, qos_overriding_options=qos_options)
        self.frame_ids: Dict[str, str] = {}  # camera -> its optical frame, as its images say
        self._markers: Dict[str, List[Marker]] = {}
        self.tf = None
        self.tf_note = ""
        try:
            from tf2_ros import TransformBroadcaster

            self.tf = TransformBroadcaster(node)
        except ImportError:
            self.tf_note = "tf2_ros is not importable (the pip install has no tf2): no TF frame per object"

    def destroy(self) -> None:
        for table in (self.per_camera, self.clouds):
            for pub in table.values():
                self.node.destroy_publisher(pub)
        self.node.destroy_publisher(self.fused)
        self.node.destroy_publisher(self.poses)

    # ------------------------------------------------------------------ one set
    def publish(self, result, headers: Mapping[str, Any]) -> None:
        """Publish one set's :class:`vggts_ros.geometry.objects3d_step.Set3D`; ``headers``:
        the set's colour frame header per camera. Prepares the markers of each camera."""
        self._markers = {}
        if result is None:
            return
        for name, header in headers.items():
            self.frame_ids[name] = optical_frame(name, header)
        for name, objs in result.cameras.items():
            pub = self.per_camera.get(name)
            if pub is None:
                continue
            header = Header(stamp=headers[name].stamp, frame_id=optical_frame(name, headers.get(name)))
            pub.publish(messages.objects3d_msg(messages.ros_types, header, objs))
            if self.clouds[name].get_subscription_count() > 0:
                self.clouds[name].publish(messages.cloud_msg(messages.ros_types, header, objs, to_uint8_array))
            self._markers[name] = self.markers_of(header, objs)
        fused_header = self.fused_header(result, headers)
        if result.fused is not None:
            self.fused.publish(messages.objects3d_msg(messages.ros_types, fused_header, result.fused))
        if result.poses is not None:
            self.poses.publish(messages.camera_poses_msg(messages.ros_types, fused_header, result.poses))
        if self.tf is not None:
            self._broadcast(result, headers, fused_header)

    def fused_header(self, result, headers: Mapping[str, Any]) -> Header:
        """The reference frame's header: the reference camera's colour stamp when it is in
        the set (else the set's stamp) and its optical frame (or ``geometry.frame``)."""
        ref = self.reference
        if self.reference_is_camera:
            frame_id = self.frame_ids.get(ref) or f"{ref}_optical_frame"
            stamp = headers[ref].stamp if ref in headers else _time(result.stamp)
            return Header(stamp=stamp, frame_id=frame_id)
        return Header(stamp=_time(result.stamp), frame_id=ref)

    def markers(self, camera: str) -> List[Marker]:
        """The current set's box and centroid markers of ``camera`` (for ``~/<camera>/markers``)."""
        return list(self._markers.get(camera, ()))

    @staticmethod
    def markers_of(header: Header, objs: Objects3D) -> List[Marker]:
        """Per object with an estimate: its box (CUBE, half transparent, id ``2*object_id``,
        namespace ``objects3d``) and its centroid (SPHERE, id ``2*object_id + 1``)."""
        out = []
        for o in objs.objects:
            if not o.ok or o.box is None:
                continue
            r, g, b = (float(c) / 255.0 for c in color_of(o.object_id))
            box = Marker(header=header, ns="objects3d", id=2 * int(o.object_id), type=Marker.CUBE, action=Marker.ADD)
            box.pose.position = Point(x=float(o.box.center[0]), y=float(o.box.center[1]), z=float(o.box.center[2]))
            q = box.pose.orientation
            q.x, q.y, q.z, q.w = (float(v) for v in o.orientation)
            box.scale.x, box.scale.y, box.scale.z = (max(float(v), 1e-3) for v in o.size)
            box.color.r, box.color.g, box.color.b, box.color.a = r, g, b, 0.35
            dot = Marker(header=header, ns="objects3d", id=2 * int(o.object_id) + 1, type=Marker.SPHERE,
                         action=Marker.ADD)
            dot.pose.position = Point(x=float(o.centroid[0]), y=float(o.centroid[1]), z=float(o.centroid[2]))
            dot.pose.orientation.w = 1.0
            d = max(0.01, 0.1 * float(min(v for v in o.size if v > 0) if any(v > 0 for v in o.size) else 0.1))
            dot.scale.x = dot.scale.y = dot.scale.z = d
            dot.color.r, dot.color.g, dot.color.b, dot.color.a = r, g, b, 1.0
            out += [box, dot]
        return out

    def _broadcast(self, result, headers: Mapping[str, Any], fused_header: Header) -> None:
        from geometry_msgs.msg import TransformStamped

        frames: Dict[int, tuple] = {}
        if result.fused is not None:
            for oid, T in messages.object_frames(result.fused).items():
                frames[oid] = (fused_header, T)
        for name, objs in result.cameras.items():
            if name not in headers:
                continue
            header = Header(stamp=headers[name].stamp, frame_id=optical_frame(name, headers[name]))
            for oid, T in messages.object_frames(objs).items():
                frames.setdefault(oid, (header, T))
        node_name = self.node.get_name()
        out = []
        for oid, (header, T) in sorted(frames.items()):
            t = TransformStamped()
            t.header = header
            t.child_frame_id = f"{node_name}/object_{oid}"
            tr = t.transform.translation
            tr.x, tr.y, tr.z = (float(v) for v in T[:3, 3])
            q = messages.pose_msg(messages.ros_types, T).orientation
            t.transform.rotation = q
            out.append(t)
        if out:
            self.tf.sendTransform(out)
