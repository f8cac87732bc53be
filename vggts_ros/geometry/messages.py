"""Objects in 3D as ROS messages (``vggts_ros/msg/Objects3D``, ``sensor_msgs/msg/PointCloud2``,
``vggts_ros/msg/CameraPoses``), built with either rclpy's message classes (the node) or the
``rosbags`` type store's (``vggts replay``), so both publish the very same fields.

``types(name)`` returns the class of a full type name (``"geometry_msgs/msg/Point"``); every
field is given, as ``rosbags`` requires. ``uint8[]`` data goes through ``data_field`` (rclpy
wants ``array.array('B')``, rosbags a uint8 array).

An object without an estimate is published with its ``reason``, ``points = 0``,
``confidence = 0`` and zero centroid, size and box centre (identity orientation): never a
guess that looks like a measurement.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from .boxes import quaternion_from_matrix
from .objects3d import Object3D, Objects3D

Types = Callable[[str], Any]

# sensor_msgs/PointField datatypes
UINT8, FLOAT32 = 2, 7
CLOUD_POINT_STEP = 16  # x, y, z float32, object_id uint8, 3 bytes padding (aligned points)


def _point(types: Types, xyz) -> Any:
    x, y, z = (float(v) for v in xyz)
    return types("geometry_msgs/msg/Point")(x=x, y=y, z=z)


def _quaternion(types: Types, q) -> Any:
    x, y, z, w = (float(v) for v in q)
    return types("geometry_msgs/msg/Quaternion")(x=x, y=y, z=z, w=w)


def object3d_msg(types: Types, o: Object3D) -> Any:
    """One ``vggts_ros/msg/Object3D``."""
    ok = o.ok
    zero = (0.0, 0.0, 0.0)
    centre = o.box.center if ok and o.box is not None else (o.centroid if ok else zero)
    size = o.size if ok else np.zeros(3)
    return types("vggts_ros/msg/Object3D")(
        object_id=int(o.object_id), label=str(o.label), centroid=_point(types, o.centroid if ok else zero),
        size=types("geometry_msgs/msg/Vector3")(x=float(size[0]), y=float(size[1]), z=float(size[2])),
        orientation=_quaternion(types, o.orientation if ok else (0.0, 0.0, 0.0, 1.0)),
        points=int(o.points) if ok else 0, confidence=float(o.confidence) if ok else 0.0,
        cameras=[str(c) for c in o.cameras], reason=str(o.reason) if not ok else "",
        box_center=_point(types, centre))


def objects3d_msg(types: Types, header: Any, objects: Objects3D) -> Any:
    """``vggts_ros/msg/Objects3D`` of one camera (or the fused estimate) with ``header``."""
    return types("vggts_ros/msg/Objects3D")(
        header=header, scale=str(objects.scale), scale_source=str(objects.scale_source),
        objects=[object3d_msg(types, o) for o in objects.objects])


def cloud_points(objects: Objects3D) -> np.ndarray:
    """The points of every object with an estimate as one structured array (x, y, z
    float32, object_id uint8, padded to 16 bytes)."""
    dtype = np.dtype({"names": ["x", "y", "z", "object_id"], "formats": ["<f4", "<f4", "<f4", "u1"],
                      "offsets": [0, 4, 8, 12], "itemsize": CLOUD_POINT_STEP})
    parts = [o for o in objects.objects if o.ok and o.cloud is not None and len(o.cloud)]
    out = np.zeros(sum(len(o.cloud) for o in parts), dtype)
    i = 0
    for o in parts:
        n = len(o.cloud)
        c = np.asarray(o.cloud, np.float32)
        out["x"][i:i + n], out["y"][i:i + n], out["z"][i:i + n] = c[:, 0], c[:, 1], c[:, 2]
        out["object_id"][i:i + n] = int(o.object_id)
        i += n
    return out


def cloud_msg(types: Types, header: Any, objects: Objects3D, data_field: Callable[[np.ndarray], Any]) -> Any:
    """``sensor_msgs/msg/PointCloud2`` of the objects' points: fields x, y, z (float32) and
    object_id (uint8), unorganised (height 1), little-endian, dense (no NaN)."""
    pts = cloud_points(objects)
    Field = types("sensor_msgs/msg/PointField")
    fields = [Field(name=n, offset=off, datatype=dt, count=1)
              for n, off, dt in (("x", 0, FLOAT32), ("y", 4, FLOAT32), ("z", 8, FLOAT32), ("object_id", 12, UINT8))]
    raw = np.frombuffer(pts.tobytes(), np.uint8)
    return types("sensor_msgs/msg/PointCloud2")(
        header=header, height=1, width=int(len(pts)), fields=fields, is_bigendian=False,
        point_step=CLOUD_POINT_STEP, row_step=int(CLOUD_POINT_STEP * len(pts)), data=data_field(raw), is_dense=True)


def pose_msg(types: Types, T: np.ndarray) -> Any:
    """``geometry_msgs/msg/Pose`` of a 4x4 transform."""
    T = np.asarray(T, np.float64)
    return types("geometry_msgs/msg/Pose")(position=_point(types, T[:3, 3]),
                                           orientation=_quaternion(types, quaternion_from_matrix(T[:3, :3])))


def camera_poses_msg(types: Types, header: Any, poses: Any, order: Optional[Sequence[str]] = None) -> Any:
    """``vggts_ros/msg/CameraPoses`` of a :class:`vggts_ros.geometry.objects3d_step.CameraPoses`
    (cameras in ``order`` when given)."""
    names = [n for n in (order or poses.poses) if n in poses.poses]
    s = poses.scale
    return types("vggts_ros/msg/CameraPoses")(
        header=header, cameras=list(names), poses=[pose_msg(types, poses.poses[n]) for n in names],
        scale=str(s.kind), scale_source=str(s.source), scale_factor=float(s.value))


def object_frames(objects: Objects3D) -> Dict[int, np.ndarray]:
    """Per object with an estimate, the 4x4 pose of its box (centre and axes) in the
    message's frame: what a TF frame per object carries."""
    out = {}
    for o in objects.objects:
        if o.ok and o.box is not None:
            T = np.eye(4)
            T[:3, :3] = o.box.rotation
            T[:3, 3] = o.box.center
            out[int(o.object_id)] = T
    return out


def object_dict(o: Object3D) -> Dict[str, Any]:
    """One object as JSON-ready values (``vggts segment``, the demo's results.json)."""
    ok = o.ok
    return dict(object_id=int(o.object_id), label=o.label,
                centroid=[round(float(v), 6) for v in o.centroid] if ok else None,
                box_center=[round(float(v), 6) for v in o.box.center] if ok and o.box is not None else None,
                size=[round(float(v), 6) for v in o.size] if ok else None,
                orientation=[round(float(v), 6) for v in o.orientation] if ok else None,
                points=int(o.points), confidence=round(float(o.confidence), 4), cameras=list(o.cameras),
                reason=o.reason)


def objects_dict(objects: Objects3D) -> Dict[str, Any]:
    return dict(frame=objects.frame, scale=objects.scale, scale_source=objects.scale_source,
                objects=[object_dict(o) for o in objects.objects])


def ros_types(name: str) -> Any:
    """rclpy's message class of a full type name (imported on use)."""
    import importlib

    pkg, kind, cls = name.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), cls)


def bag_types(name: str) -> Any:
    """The ``rosbags`` type store's class of a full type name (``vggts_ros.bags``)."""
    from vggts_ros import bags

    return bags.typestore().types[name]


__all__: List[str] = ["objects3d_msg", "object3d_msg", "cloud_msg", "cloud_points", "camera_poses_msg", "pose_msg",
                      "object_frames", "object_dict", "objects_dict", "ros_types", "bag_types"]
