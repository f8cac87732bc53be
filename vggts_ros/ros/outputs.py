"""The node's per-camera outputs: what one processed set looks like on ROS topics.

Per target camera (``~/<camera>/...``): ``mask`` (mono8, pixel = object id, the frame's
header), ``points`` (``vggts_ros/ProjectedPoints``: per object the source/target points,
visibility, confidence, score, label, area, path and reason), ``overlay`` (rgb8, only when
enabled and subscribed), ``camera_info`` (the camera's own ``CameraInfo`` with the mask's
header when its size matches, else a nominal pinhole) and ``markers`` (the projected points
on their viewing rays, placed with the ``CameraInfo``'s ``P`` as RViz and Foxglove project
them, plus the objects' 3D boxes and centroids when there are some; only while subscribed).
The camera_info beside each image topic is subscribed here.
"""

from __future__ import annotations

from typing import Dict, Iterable, Optional, Tuple

import numpy as np
from geometry_msgs.msg import Point
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, Image
from visualization_msgs.msg import Marker, MarkerArray

from vggts_ros.geometry.depth import camera_info_topic  # noqa: F401  (re-exported)
from vggts_ros.markers import ObjectPointsView, camera_info_fields, projected_point_markers
from vggts_ros.msg import ObjectPoints, ProjectedPoints
from vggts_ros.ros.conversions import fill_image
from vggts_ros.set_processor import CameraOutput
from vggts_ros.visualize import overlay_masks


def mouse_topic(image_topic: str) -> str:
    """Where rqt_image_view publishes the clicks on a stream: ``<image topic>_mouse_left``
    (of the base topic when the stream is ``.../compressed``)."""
    base = image_topic[: -len("/compressed")] if image_topic.endswith("/compressed") else image_topic
    return base + "_mouse_left"


def viewer_matrix(info: CameraInfo) -> np.ndarray:
    """The matrix a viewer projects with: ``P`` (3x4) when it is set, else ``[K | 0]``."""
    P = np.asarray(info.p, np.float64).reshape(3, 4)
    if P[0, 0] > 0 and P[1, 1] > 0:
        return P
    return np.hstack([np.asarray(info.k, np.float64).reshape(3, 3), np.zeros((3, 1))])


class Outputs:
    """Publishers of every camera, and the camera_info subscriptions (see the module docstring)."""

    def __init__(self, node, cameras, overlay: bool, callback_group=None) -> None:
        qos_options = QoSOverridingOptions.with_default_policies()
        out_qos = QoSProfile(depth=10)
        self.node = node
        self.names = [c.name for c in cameras]

        def publishers(kind, msg_type):
            return {c.name: node.create_publisher(msg_type, f"~/{c.name}/{kind}", out_qos,
                                                  qos_overriding_options=qos_options) for c in cameras}

        self.mask = publishers("mask", Image)
        self.points = publishers("points", ProjectedPoints)
        self.overlay = publishers("overlay", Image) if overlay else {}
        self.markers = publishers("markers", MarkerArray)
        self.camera_info = publishers("camera_info", CameraInfo)
        self.infos: Dict[str, CameraInfo] = {}  # latest <camera>/camera_info, passed through
        self.info_subscriptions = [
            node.create_subscription(CameraInfo, camera_info_topic(c.topic),
                                     lambda msg, name=c.name: self.infos.__setitem__(name, msg),
                                     qos_profile_sensor_data, callback_group=callback_group)
            for c in cameras]
        self.published_on: set = set()  # cameras whose last output may still show objects

    def destroy(self) -> None:
        for table in (self.mask, self.points, self.overlay, self.markers, self.camera_info):
            for pub in table.values():
                self.node.destroy_publisher(pub)
        for sub in self.info_subscriptions:
            self.node.destroy_subscription(sub)

    # ------------------------------------------------------------------ one camera of a set
    def publish(self, out: CameraOutput, header, extra_markers=()) -> None:
        """One camera's outputs; ``extra_markers`` (e.g. the objects' 3D boxes) join its markers."""
        camera, labels = out.camera, out.labels
        points = ProjectedPoints(header=header, target_camera=camera, source_camera=out.source_cameras)
        for o in out.objects:
            r = o.result
            entry = ObjectPoints(object_id=o.object.object_id, label=o.object.label, area=o.area,
                                 score=float(r.score), path=r.path, reason=r.reason)
            entry.source_xy = _floats(r.source_points)
            entry.target_xy = _floats(r.target_points)
            entry.visibility = _floats(r.visibility)
            entry.confidence = _floats(r.confidence)
            points.objects.append(entry)
        mask_msg = Image(header=header)
        fill_image(mask_msg, labels, "mono8")
        self.mask[camera].publish(mask_msg)
        self.points[camera].publish(points)
        self.published_on.add(camera)
        info = self._camera_info(camera, header, labels.shape)
        if self.markers[camera].get_subscription_count() > 0:
            array = self._markers(header, viewer_matrix(info), out)
            array.markers.extend(extra_markers)
            self.markers[camera].publish(array)
        pub = self.overlay.get(camera)
        if pub is not None and pub.get_subscription_count() > 0:
            overlay = Image(header=header)
            fill_image(overlay, overlay_masks(out.frame.image, labels, [np.asarray(o.result.target_points).reshape(-1, 2)
                                                                       for o in out.objects]), "rgb8")
            pub.publish(overlay)

    def publish_cleared(self, cameras: Iterable[str], latest) -> None:
        """An empty points message and an all-zero mask on each of ``cameras``, stamped with
        its newest frame (``latest(camera) -> (header, (height, width)) or None``): a consumer
        must not keep acting on the last mask of a cleared object."""
        for camera in sorted(cameras):
            self.published_on.discard(camera)
            newest = latest(camera)
            if newest is None:
                continue
            header, size = newest
            mask = Image(header=header)
            fill_image(mask, np.zeros(size, np.uint8), "mono8")
            self.mask[camera].publish(mask)
            self.points[camera].publish(ProjectedPoints(header=header, target_camera=camera, source_camera=""))

    # ------------------------------------------------------------------ viewers
    def _camera_info(self, camera: str, header, size: Tuple[int, int]) -> CameraInfo:
        """The camera's CameraInfo with the mask's header (its own when its size matches,
        else a nominal pinhole), published; returned for the markers."""
        h, w = size
        received = self.infos.get(camera)
        if received is not None and (received.height, received.width) == (h, w):
            info = CameraInfo(height=received.height, width=received.width, distortion_model=received.distortion_model,
                              d=received.d, k=received.k, r=received.r, p=received.p,
                              binning_x=received.binning_x, binning_y=received.binning_y, roi=received.roi)
        else:
            info = CameraInfo(**camera_info_fields(w, h))
        info.header = header
        self.camera_info[camera].publish(info)
        return info

    @staticmethod
    def _markers(header, P: np.ndarray, out: CameraOutput) -> MarkerArray:
        views = [ObjectPointsView(o.object.object_id, np.asarray(o.result.target_points).reshape(-1, 2),
                                  np.asarray(o.result.visibility).reshape(-1), o.object.label) for o in out.objects]
        array = MarkerArray(markers=[Marker(header=header, action=Marker.DELETEALL)])
        for spec in projected_point_markers(views, P):
            m = Marker(header=header, ns=spec.ns, id=spec.id, action=Marker.ADD, text=spec.text,
                       type=Marker.POINTS if spec.kind == "points" else Marker.TEXT_VIEW_FACING)
            m.pose.orientation.w = 1.0
            m.scale.x = m.scale.y = m.scale.z = float(spec.scale)
            m.color.r, m.color.g, m.color.b, m.color.a = spec.color
            if spec.kind == "points":
                m.points = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in spec.positions]
            else:
                m.pose.position = Point(**dict(zip("xyz", map(float, spec.positions[0]))))
            array.markers.append(m)
        return array


def _floats(values) -> list:
    return np.asarray(values, dtype=np.float32).reshape(-1).tolist()


def latest_header(history, sizes, camera: str) -> Optional[Tuple[object, Tuple[int, int]]]:
    """``(header, (height, width))`` of a camera's newest received frame, or None."""
    frame = history.latest(camera)
    size = sizes.size(camera)
    if frame is None or size is None:
        return None
    return frame.payload.msg.header, size
