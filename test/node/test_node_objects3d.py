"""Objects in 3D through the node over real DDS: colour, registered depth and camera_info
in; ``~/<camera>/objects3d``, the fused ``~/objects3d`` and ``~/<camera>/object_cloud`` out.
The bundled scene's exact depth is the depth topic (exo1 as 32FC1 metres, exo2 as 16UC1
millimetres), the truth is the visible surface's centroid of each view. Then the bad inputs
of issue 20, one at a time on exo1 while exo2 stays good: each gives a reason, never an
estimate published as good, and the fused estimate goes on from the camera that is fine."""

import os
import re
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ros-kilted-rclpy) is not installed")

from rclpy.parameter import Parameter  # noqa: E402

from helpers.node_graph import node_config, ros  # noqa: E402,F401
from vggts_ros.geometric import GeometricSegmentor  # noqa: E402
from vggts_ros.geometry.boxes import OrientedBox, compare_boxes, matrix_from_quaternion  # noqa: E402
from vggts_ros.geometry.boxes import quaternion_from_matrix  # noqa: E402
from vggts_ros.ros.node import VGGTSNode  # noqa: E402
from vggts_ros.ros.player import CameraPlayer, OutputCollector, PlayedCamera, Spinner, wait_until  # noqa: E402

SIZE = (320, 240)


@pytest.fixture(scope="module")
def scene():
    from vggts_ros.scenes import synthetic_scene

    return synthetic_scene(seed=0, ego_size=SIZE, exo_size=SIZE)


def _pose(scene, name):
    T = scene.cameras["ego"].T_cam_from_world @ scene.cameras[name].T_world_from_cam
    return [float(v) for v in T[:3, 3]] + [float(v) for v in quaternion_from_matrix(T[:3, :3])]


def _point(p):
    return np.array([p.x, p.y, p.z])


class Graph:
    def __init__(self, scene, name):
        name = f"{name}_{os.getpid()}"
        self.name, self.scene = name, scene
        cfg = node_config(scene, name)
        params = dict(cfg.to_parameters())
        for cam in ("exo1", "exo2"):
            params[f"camera.{cam}.depth_topic"] = f"/{name}_cams/{cam}/depth/image_raw"
            params[f"camera.{cam}.pose"] = _pose(scene, cam)
        self.node = VGGTSNode(name, segmentor=GeometricSegmentor(),
                              parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        played = []
        for c in cfg.cameras:
            depth_topic = params.get(f"camera.{c.name}.depth_topic", "")
            played.append(PlayedCamera(c.name, c.topic, scene.image(c.name),
                                       depth=scene.depth(c.name) if depth_topic else None, depth_topic=depth_topic,
                                       depth_encoding="16UC1" if c.name == "exo2" else "32FC1",
                                       K=scene.cameras[c.name].K if c.name == "exo1" else None))
        self.player = CameraPlayer(played, rate_hz=5.0, name=f"{name}_player")
        self.collector = OutputCollector(name, list(scene.views), name=f"{name}_collector", objects3d=True, clouds=True)
        self.spinner = Spinner(self.node, self.player, self.collector)

    def close(self):
        self.spinner.close()
        for n in (self.node, self.player, self.collector):
            n.destroy_node()

    def newer(self, camera, after, timeout=30.0):
        """The first objects3d message of ``camera`` ("" = fused) stamped after ``after`` (wall s)."""
        found = {}

        def check():
            with self.collector._lock:
                for r in self.collector.objects3d[camera]:
                    if r.stamp > after:
                        found["r"] = r
                        return True
            return False

        assert wait_until(check, timeout), f"no objects3d on {camera or 'fused'} stamped after {after:.3f}: " \
                                           f"{self.collector.camera_status(camera or 'exo1')}"
        return found["r"].msg


@pytest.fixture()
def graph(ros, scene):  # noqa: F811
    g = Graph(scene, "obj3d")
    yield g
    g.close()


def _no_estimate(msg, oid, expected):
    o = next(o for o in msg.objects if o.object_id == oid)
    assert expected in o.reason, o.reason
    # never a guess published as a measurement
    assert o.points == 0 and o.confidence == 0.0 and not _point(o.centroid).any() and not _point(o.box_center).any()
    return o


def test_objects3d_from_depth_topics_and_every_bad_input_says_why(graph, scene):
    g, oid = graph, 1
    assert wait_until(lambda: len(g.player.stamps) >= 2 and g.node.history.latest("ego") is not None, 20)
    resp = g.collector.set_source_mask("ego", scene.mask("ego", oid), object_id=oid, label="box")
    assert resp.success, resp.message

    # exo2 has depth but neither camera_info nor an intrinsics parameter
    msg = g.newer("exo2", time.time())
    _no_estimate(msg, oid, "no camera_info beside its image topic and no camera.exo2.intrinsics")

    # exo1: 32FC1 depth and camera_info -> the visible surface's centroid, in its optical frame
    msg = g.newer("exo1", 0.0)
    assert msg.header.frame_id == "exo1_optical_frame" and (msg.scale, msg.scale_source) == ("metric", "depth:exo1")
    o = next(o for o in msg.objects if o.object_id == oid)
    truth = scene.surface_points("exo1", oid).mean(0)
    err = np.linalg.norm(_point(o.centroid) - truth) / np.linalg.norm(truth)
    assert not o.reason and o.points >= 100 and 0 < o.confidence <= 1
    assert o.label == "box" and list(o.cameras) == ["exo1"]
    assert err < 0.01, f"exo1 centroid error {100 * err:.2f} % of the distance"
    print(f"node exo1 centroid error: {100 * err:.3f} % of {np.linalg.norm(truth):.2f} m ({o.points} points)")
    # the object cloud: x, y, z float32 and object_id uint8, the estimate's points
    assert wait_until(lambda: g.collector.count("clouds", "exo1") > 0, 20)
    cloud = g.collector.latest("clouds", "exo1").msg
    assert [(f.name, f.offset, f.datatype) for f in cloud.fields] == [("x", 0, 7), ("y", 4, 7), ("z", 8, 7),
                                                                      ("object_id", 12, 2)]
    layout = {"names": ["x", "y", "z", "id"], "formats": ["<f4", "<f4", "<f4", "u1"], "offsets": [0, 4, 8, 12],
              "itemsize": cloud.point_step}
    rec = np.frombuffer(bytes(cloud.data), np.dtype(layout))
    same = g.newer("exo1", cloud.header.stamp.sec + cloud.header.stamp.nanosec * 1e-9 - 1e-6)
    assert cloud.width == len(rec) and set(rec["id"]) == {oid}
    assert abs(np.stack([rec["x"], rec["y"], rec["z"]], 1).mean(0) - _point(
        next(o for o in same.objects if o.object_id == oid).centroid)).max() < 1e-3

    # camera_info arrives for exo2 (16UC1 millimetres): it recovers
    g.player.set_camera_info("exo2", scene.cameras["exo2"].K)
    t = time.time()
    msg = g.newer("exo2", t + 0.3)
    o2 = next(o for o in msg.objects if o.object_id == oid)
    truth2 = scene.surface_points("exo2", oid).mean(0)
    err2 = np.linalg.norm(_point(o2.centroid) - truth2) / np.linalg.norm(truth2)
    assert not o2.reason and err2 < 0.01, (o2.reason, err2)
    print(f"node exo2 (16UC1) centroid error: {100 * err2:.3f} %")
    # fused in the reference camera's optical frame from both static poses
    fused = g.newer("", t + 0.3)
    f = next(o for o in fused.objects if o.object_id == oid)
    assert fused.header.frame_id == "ego_optical_frame" and fused.scale == "metric"
    assert sorted(f.cameras) == ["exo1", "exo2"] and not f.reason
    q = f.orientation
    box = OrientedBox(_point(f.box_center), np.array([f.size.x, f.size.y, f.size.z]),
                      matrix_from_quaternion([q.x, q.y, q.z, q.w]))
    cmp = compare_boxes(box, scene.box(oid, "ego"))
    dist = np.linalg.norm(scene.box(oid, "ego").center)
    assert cmp["size_error"] < 0.2 and cmp["center_error"] < 0.05 * dist, cmp
    print(f"node fused box: size error {100 * cmp['size_error']:.1f} %, "
          f"centre {100 * cmp['center_error'] / dist:.2f} %")

    bad = [
        ("NaN, inf and zero depth", dict(raw=(np.where(np.arange(SIZE[0] * SIZE[1]).reshape(SIZE[1], SIZE[0]) % 3 == 0,
                                                       np.nan, np.where(np.arange(SIZE[0]) % 2 == 0, np.inf, 0.0))
                                              .astype(np.float32), "32FC1")), "no valid reading"),
        ("wrong aspect", dict(depth=np.full((200, 200), 3.0)), "does not have the colour image's aspect ratio"),
        ("unknown encoding", dict(raw=(np.zeros((SIZE[1], SIZE[0], 3), np.uint8), "rgb8")),
         "unknown depth encoding 'rgb8'"),
    ]
    for what, change, expected in bad:
        g.player.set_depth("exo1", **change)
        t = time.time()
        _no_estimate(g.newer("exo1", t + 0.3), oid, expected)
        fused = g.newer("", t + 0.3)
        f = next(o for o in fused.objects if o.object_id == oid)
        assert list(f.cameras) == ["exo2"] and not f.reason, (what, list(f.cameras), f.reason)  # exo2 carries on

    # the depth stream stops while colour goes on: no stale depth, a reason, a WARN naming it
    g.player.set_depth("exo1", scene.depth("exo1"), "32FC1")
    g.player.pause_depth("exo1")
    t = time.time()
    _no_estimate(g.newer("exo1", t + 0.5), oid, "the depth stream stopped")
    assert wait_until(lambda: "stopped" in (g.collector.camera_status("exo1") or {}).get("depth_last_reason", ""), 10)
    status = g.collector.camera_status("exo1")
    assert status["depth_ok"] == "false" and int(status["depth_sets_missed"]) >= 4, status
    # and it resumes
    g.player.pause_depth("exo1", False)
    o = next(o for o in g.newer("exo1", time.time() + 0.3).objects if o.object_id == oid)
    assert not o.reason and o.points > 0


def test_a_configuration_that_cannot_give_3d_refuses_the_start(ros, scene):  # noqa: F811
    base = node_config(scene, f"obj3d_refused_{os.getpid()}").to_parameters()
    cases = [
        ({"geometry.baseline": "exo1,exo9,0.6"}, "geometry.baseline names camera 'exo9'"),
        ({"camera.exo1.depth_topic": base["camera.exo2.topic"]}, "is a camera image topic"),
        ({"camera.exo1.intrinsics": [500.0, 500.0, 160.0]}, "camera.exo1.intrinsics: needs 4 numbers"),
        ({"camera.exo1.pose": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]}, "is not a unit quaternion"),
        ({"camera.exo1.pose": "1 2 three"}, "camera.exo1.pose[0]: expected a number"),
    ]
    for i, (change, expected) in enumerate(cases):
        params = dict(base, **change)
        with pytest.raises(ValueError, match=re.escape(expected)):
            VGGTSNode(f"obj3d_refused_{i}", segmentor=GeometricSegmentor(),
                      parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])


def test_interfaces_and_the_same_bytes_from_the_node_and_from_replay(scene):
    """The fields issue 20 names, in order; and an Objects3D / PointCloud2 / CameraPoses built
    with rclpy's classes (the node) holds exactly what the one built with the rosbags type
    store (``vggts replay``) holds, value for value in CDR."""
    from rclpy.serialization import serialize_message
    from std_msgs.msg import Header

    from vggts_ros import bags
    from vggts_ros.geometry import messages
    from vggts_ros.geometry.objects3d import Object3D, Objects3D
    from vggts_ros.geometry.objects3d_step import CameraPoses
    from vggts_ros.geometry.boxes import OrientedBox
    from vggts_ros.geometry.scale import Scale
    from vggts_ros.msg import CameraPoses as CameraPosesMsg, Object3D as Object3DMsg, Objects3D as Objects3DMsg
    from vggts_ros.ros.conversions import to_uint8_array
    from builtin_interfaces.msg import Time

    assert list(Object3DMsg.get_fields_and_field_types().items()) == [
        ("object_id", "uint8"), ("label", "string"), ("centroid", "geometry_msgs/Point"),
        ("size", "geometry_msgs/Vector3"), ("orientation", "geometry_msgs/Quaternion"), ("points", "uint32"),
        ("confidence", "float"), ("cameras", "sequence<string>"), ("reason", "string"),
        ("box_center", "geometry_msgs/Point")]
    assert list(Objects3DMsg.get_fields_and_field_types().items()) == [
        ("header", "std_msgs/Header"), ("scale", "string"), ("scale_source", "string"),
        ("objects", "sequence<vggts_ros/Object3D>")]
    assert list(CameraPosesMsg.get_fields_and_field_types())[:3] == ["header", "cameras", "poses"]

    box = OrientedBox(np.array([0.1, -0.2, 3.0]), np.array([0.3, 0.2, 0.1]), matrix_from_quaternion([0, 0, 0.38, 0.92]))
    objs = Objects3D("exo1", [
        Object3D(1, "box", np.array([0.1, -0.25, 2.9]), box, 3, 0.75, ("exo1",),
                 cloud=np.array([[0.1, -0.2, 2.9], [0.2, -0.3, 2.8], [0.0, -0.25, 3.0]], np.float32)),
        Object3D(2, "cup", reason="no valid depth under the mask", cameras=("exo1",))], "metric", "depth:exo1")
    poses = CameraPoses("ego", {"ego": np.eye(4), "exo1": pose_matrix_of(scene)}, Scale(2.5, "metric", "depth:exo1"))
    stamp = int(12.5e9)
    ros_header = Header(stamp=Time(sec=12, nanosec=500_000_000), frame_id="exo1_optical_frame")
    bag_header = bags.header(stamp, "exo1_optical_frame")
    pairs = [
        (messages.objects3d_msg(messages.ros_types, ros_header, objs),
         messages.objects3d_msg(messages.bag_types, bag_header, objs)),
        (messages.cloud_msg(messages.ros_types, ros_header, objs, to_uint8_array),
         messages.cloud_msg(messages.bag_types, bag_header, objs, lambda a: a)),
        (messages.camera_poses_msg(messages.ros_types, ros_header, poses),
         messages.camera_poses_msg(messages.bag_types, bag_header, poses)),
    ]
    for ros_msg, bag_msg in pairs:
        # the node's CDR bytes read back as the replay's message (alignment padding may differ)
        back = bags.deserialize(serialize_message(ros_msg), bag_msg.__msgtype__)
        assert bags.serialize(back) == bags.serialize(bag_msg), type(ros_msg).__name__
    m = pairs[0][0]
    assert m.objects[1].reason and m.objects[1].points == 0 and m.objects[1].box_center.z == 0.0
    assert m.objects[0].box_center.z == 3.0 and abs(m.objects[0].centroid.z - 2.9) < 1e-12
    assert pairs[1][0].width == 3 and pairs[2][0].scale_factor == 2.5


def pose_matrix_of(scene):
    return scene.cameras["ego"].T_cam_from_world @ scene.cameras["exo1"].T_world_from_cam
