"""The node with the ROS tools users already run (real rclpy over DDS, node in this
process, weight-free geometric backend on a bundled scene with exact ground truth):
RViz/Foxglove markers and CameraInfo beside the masks, click to mask, the managed
(lifecycle) node."""

import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ros-kilted-rclpy) is not installed")
pytest.importorskip("visualization_msgs", reason="visualization_msgs (ros-kilted-visualization-msgs) is not installed")

from rclpy.node import Node  # noqa: E402
from sensor_msgs.msg import CameraInfo  # noqa: E402
from visualization_msgs.msg import Marker, MarkerArray  # noqa: E402

from helpers.node_graph import graph_factory, iou_on, labels, ros, scene  # noqa: E402,F401
from vggts_ros import metrics  # noqa: E402
from vggts_ros.markers import nominal_intrinsics, rays_to_pixels  # noqa: E402
from vggts_ros.ros.player import wait_until  # noqa: E402


class Listener(Node):
    """Keeps every message of the given (topic, type) pairs."""

    def __init__(self, name, topics):
        super().__init__(name)
        self.lock = threading.Lock()
        self.got = {t: [] for t, _ in topics}
        for topic, msg_type in topics:
            self.create_subscription(msg_type, topic, lambda m, t=topic: self._keep(t, m), 10)

    def _keep(self, topic, msg):
        with self.lock:
            self.got[topic].append(msg)

    def all(self, topic):
        with self.lock:
            return list(self.got[topic])


def stamp_of(header):
    return header.stamp.sec + header.stamp.nanosec * 1e-9


def test_markers_and_camera_info_share_the_mask_header(graph_factory, scene):
    """Markers land where RViz's Camera display and Foxglove draw them: through the
    CameraInfo's P (here a rectified stereo-right camera: P differs from K and P[3] shifts),
    with the mask's header."""
    g = graph_factory(scene, "vggts_rviz", spin=False)
    name, node, player, collector = g.name, g.node, g.player, g.collector
    listener = Listener(f"{name}_listener", [(f"/{name}/{c}/{kind}", t) for c in ("exo1", "exo2")
                                             for kind, t in (("markers", MarkerArray), ("camera_info", CameraInfo))])
    # exo1 has a calibrated camera_info (it passes through); exo2 has none (a nominal pinhole).
    h1, w1 = scene.image("exo1").shape[:2]
    K1 = np.array([[321.0, 0.0, 150.5], [0.0, 322.0, 100.25], [0.0, 0.0, 1.0]])
    P1 = np.array([[305.0, 0.0, 160.0, -305.0 * 0.12], [0.0, 305.0, 95.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    info_pub = player.create_publisher(CameraInfo, f"/{name}_cams/exo1/camera_info", 10)
    player.create_timer(0.1, lambda: info_pub.publish(CameraInfo(
        width=w1, height=h1, distortion_model="plumb_bob", d=[0.1, -0.05, 0.0, 0.0, 0.0], k=K1.reshape(-1).tolist(),
        r=np.eye(3).reshape(-1).tolist(), p=P1.reshape(-1).tolist())))
    g.spin(listener)
    assert wait_until(lambda: node.history.latest("ego") is not None and "exo1" in node._infos, 20)
    resp = collector.set_source_mask("ego", scene.mask("ego", 1), object_id=1, label="crate")
    assert resp.success, resp.message
    assert wait_until(lambda: all(len(listener.all(f"/{name}/{c}/markers")) >= 2 for c in ("exo1", "exo2")), 60)
    nominal = nominal_intrinsics(*scene.image("exo2").shape[1::-1])
    for cam, K, P in (("exo1", K1, P1), ("exo2", nominal, np.hstack([nominal, np.zeros((3, 1))]))):
        array = listener.all(f"/{name}/{cam}/markers")[-1]
        # masks, markers and camera_info travel on separate topics: either may arrive first
        assert wait_until(lambda: collector.at_stamp("masks", cam, stamp_of(array.markers[0].header)) is not None
                          and collector.at_stamp("points", cam, stamp_of(array.markers[0].header)) is not None, 10), \
            "no mask with the markers' stamp"
        mask = collector.at_stamp("masks", cam, stamp_of(array.markers[0].header))
        assert wait_until(lambda: [i for i in listener.all(f"/{name}/{cam}/camera_info")
                                   if stamp_of(i.header) == mask.stamp], 10), "no CameraInfo with the mask's stamp"
        info = [i for i in listener.all(f"/{name}/{cam}/camera_info") if stamp_of(i.header) == mask.stamp]
        for header in [info[0].header] + [m.header for m in array.markers]:
            assert header.frame_id == mask.msg.header.frame_id
            assert (header.stamp.sec, header.stamp.nanosec) == (mask.msg.header.stamp.sec,
                                                                 mask.msg.header.stamp.nanosec)
        h, w = scene.image(cam).shape[:2]
        assert (info[0].height, info[0].width) == (h, w)
        assert np.allclose(np.asarray(info[0].k).reshape(3, 3), K) and np.allclose(np.asarray(info[0].p).reshape(3, 4), P)
        # The markers: reset, then per object its points and its label; projected through P
        # (as the viewers do) the points fall on the published target points.
        assert array.markers[0].action == Marker.DELETEALL
        points = [m for m in array.markers if m.type == Marker.POINTS]
        texts = [m for m in array.markers if m.type == Marker.TEXT_VIEW_FACING]
        assert len(points) == 1 and [t.text for t in texts] == ["crate"]
        projected = collector.at_stamp("points", cam, mask.stamp).msg.objects[0]
        xy = np.asarray(projected.target_xy).reshape(-1, 2)[np.asarray(projected.visibility) >= 0.5]
        xyz = np.array([[p.x, p.y, p.z] for p in points[0].points])
        drawn = rays_to_pixels(xyz, P)
        assert drawn.shape == xy.shape and np.allclose(drawn, xy, atol=1e-3)
        if cam == "exo1":  # placed with K instead, they would miss by many pixels
            assert np.abs(rays_to_pixels(xyz, K) - xy).max() > 10
        assert iou_on(mask, scene, cam) > 0.5


def centre_of(mask):
    import cv2

    dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    y, x = np.unravel_index(dist.argmax(), dist.shape)
    return float(x), float(y)


def test_a_click_on_an_object_makes_masks_in_the_other_cameras_and_background_is_refused(graph_factory, scene):
    from geometry_msgs.msg import PointStamped

    g = graph_factory(scene, "vggts_click", spin=False)
    name, node, player, collector = g.name, g.node, g.player, g.collector
    clicks = player.create_publisher(PointStamped, f"/{name}/click", 10)
    g.spin()

    def click(frame_id, x, y):
        msg = PointStamped()
        msg.header.frame_id = frame_id
        msg.point.x, msg.point.y = x, y
        clicks.publish(msg)

    def click_statuses():
        with collector._lock:
            return [(int.from_bytes(s.level, "little") if isinstance(s.level, bytes) else int(s.level), s.message)
                    for a in collector.diagnostics for s in a.status if s.name.endswith(": click")]

    def refusals():
        return [m for level, m in click_statuses() if level != 0]

    assert wait_until(lambda: node.history.latest("ego") is not None and clicks.get_subscription_count() > 0, 20)
    # Background (the sky in the image corner): refused with the reason, nothing stored.
    click("ego", 5.0, 5.0)
    assert wait_until(lambda: refusals(), 20), "no refusal on /diagnostics"
    assert "background" in refusals()[0] and "'ego'" in refusals()[0], refusals()
    assert len(node.registry) == 0
    # An unknown camera is refused too.
    click("nope", 5.0, 5.0)
    assert wait_until(lambda: len(refusals()) >= 2, 20) and "unknown camera 'nope'" in refusals()[1]
    # A click on object 1 in the source camera: masks of that object in the other cameras.
    click("ego", *centre_of(scene.mask("ego", 1)))
    assert wait_until(lambda: len(node.registry) == 1, 20), refusals()
    oid = node.registry.snapshot()[1][0].object_id
    assert wait_until(lambda: all(collector.count("masks", c) >= 1 for c in ("exo1", "exo2")), 60)
    for cam in ("exo1", "exo2"):
        assert iou_on(collector.latest("masks", cam), scene, cam, oid=oid, truth_oid=1) > 0.5, cam
    assert collector.count("masks", "ego") == 0
    # The camera named by its images' frame_id (what RViz/Foxglove send on an image panel).
    click("exo1_optical_frame", *centre_of(scene.mask("exo1", 2)))
    assert wait_until(lambda: len(node.registry) == 2, 20), refusals()
    assert {o.camera for o in node.registry.snapshot()[1]} == {"ego", "exo1"}
    # The good click after the refusals put the click status back to OK (the last status is
    # the exo1 click's; an earlier OK one was the ego click's).
    assert wait_until(lambda: "set on camera 'exo1'" in click_statuses()[-1][1], 10), click_statuses()[-3:]
    assert click_statuses()[-1][0] == 0
    # set_source_mask also takes the images' frame_id as the camera name.
    resp = collector.set_source_mask("exo2_optical_frame", scene.mask("exo2", 3), object_id=9)
    assert resp.success and "camera 'exo2'" in resp.message, resp.message


def test_a_click_in_rqt_image_view_makes_a_mask_on_that_camera(graph_factory, scene):
    """rqt_image_view publishes the pixel clicked on a stream as geometry_msgs/Point on
    ``<image topic>_mouse_left``: each camera's such topic drives the clicks."""
    from geometry_msgs.msg import Point

    g = graph_factory(scene, "vggts_rqt", spin=False)
    name, node, player, collector = g.name, g.node, g.player, g.collector
    topic = f"/{name}_cams/exo1/image_raw_mouse_left"  # what rqt_image_view on exo1's stream publishes
    mouse = player.create_publisher(Point, topic, 10)
    g.spin()
    assert wait_until(lambda: node.history.latest("exo1") is not None and mouse.get_subscription_count() > 0, 20)
    x, y = centre_of(scene.mask("exo1", 2))
    mouse.publish(Point(x=x, y=y, z=0.0))
    assert wait_until(lambda: len(node.registry) == 1, 20)
    (obj,) = node.registry.snapshot()[1]
    assert obj.camera == "exo1" and metrics.iou(scene.mask("exo1", 2), obj.mask) > 0.5
    # the object marked in exo1 is found in the other cameras
    assert wait_until(lambda: collector.count("masks", "ego") >= 1, 60)
    assert iou_on(collector.latest("masks", "ego"), scene, "ego", oid=obj.object_id, truth_oid=2) > 0.5


def test_the_lifecycle_node_loads_on_configure_and_works_only_while_active(graph_factory, scene):
    from lifecycle_msgs.msg import State, Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    from vggts_ros.ros.lifecycle import VGGTSLifecycleNode

    # No backend given: configure builds the geometric one from the parameters.
    g = graph_factory(scene, "vggts_managed", spin=False,
                      node_factory=lambda name, overrides: VGGTSLifecycleNode(name, parameter_overrides=overrides))
    name, node, player, collector = g.name, g.node, g.player, g.collector
    change = collector.create_client(ChangeState, f"/{name}/change_state")
    get = collector.create_client(GetState, f"/{name}/get_state")
    g.spin()

    def state():
        return collector._call(get, GetState.Request(), 10).current_state.id

    def transition(tid):
        ok = collector._call(change, ChangeState.Request(transition=Transition(id=tid)), 30).success
        assert ok, f"transition {tid} refused"
        return state()

    def outputs():
        return sum(collector.count("masks", c) for c in ("exo1", "exo2"))

    def silent_while_inactive():
        time.sleep(1.0)  # a set already in inference may finish
        before = outputs()
        time.sleep(2.0)
        return outputs() == before

    assert wait_until(lambda: get.service_is_ready() and change.service_is_ready(), 20)
    assert state() == State.PRIMARY_STATE_UNCONFIGURED and node.segmentor is None
    assert transition(Transition.TRANSITION_CONFIGURE) == State.PRIMARY_STATE_INACTIVE
    loaded = node.segmentor
    assert loaded is not None and loaded.name == "geometric"
    assert not collector._set.service_is_ready() and node.count_subscribers(f"/{name}/exo1/mask") >= 1
    assert node.history.latest("ego") is None  # not subscribed to the cameras yet
    assert transition(Transition.TRANSITION_ACTIVATE) == State.PRIMARY_STATE_ACTIVE
    assert wait_until(lambda: collector._set.service_is_ready() and node.history.latest("ego") is not None, 20)
    resp = collector.set_source_mask("ego", scene.mask("ego", 1), object_id=1)
    assert resp.success, resp.message
    assert wait_until(lambda: all(collector.count("masks", c) >= 1 for c in ("exo1", "exo2")), 60)
    assert iou_on(collector.latest("masks", "exo1"), scene, "exo1") > 0.5

    assert transition(Transition.TRANSITION_DEACTIVATE) == State.PRIMARY_STATE_INACTIVE
    assert silent_while_inactive(), "outputs continued while inactive"
    assert node.segmentor is loaded, "deactivate unloaded the backend"
    assert wait_until(lambda: not collector._set.service_is_ready(), 10)
    # Activate again: the same backend and object, outputs resume.
    assert transition(Transition.TRANSITION_ACTIVATE) == State.PRIMARY_STATE_ACTIVE
    before = outputs()
    assert wait_until(lambda: outputs() >= before + 2, 60)
    assert transition(Transition.TRANSITION_DEACTIVATE) == State.PRIMARY_STATE_INACTIVE
    assert transition(Transition.TRANSITION_CLEANUP) == State.PRIMARY_STATE_UNCONFIGURED
    assert node.segmentor is None
    assert silent_while_inactive()
    assert transition(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN) == State.PRIMARY_STATE_FINALIZED


def test_the_click_to_mask_service_answers_with_the_mask_or_the_reason(graph_factory, scene):
    try:
        from vggts_ros.srv import ClickToMask
    except ImportError:
        pytest.skip("vggts_ros/srv/ClickToMask not generated in this environment: run `bash run.sh setup`")
    g = graph_factory(scene, "vggts_clicksrv", spin=False)
    name, node, player, collector = g.name, g.node, g.player, g.collector
    client = collector.create_client(ClickToMask, f"/{name}/click_to_mask")
    g.spin()

    def call(**fields):
        return collector._call(client, ClickToMask.Request(**fields), 30)

    assert wait_until(lambda: client.service_is_ready() and node.history.latest("ego") is not None, 20)
    bg = call(camera="ego", points=[5.0, 5.0])
    assert not bg.success and "background" in bg.message and len(node.registry) == 0
    odd = call(camera="ego", points=[5.0, 5.0, 7.0])
    assert not odd.success and "x, y pairs" in odd.message
    # Object 3 sits on a busy texture: a point and a box around it.
    x, y = centre_of(scene.mask("ego", 3))
    ys, xs = np.nonzero(scene.mask("ego", 3))
    box = [xs.min() - 4.0, ys.min() - 4.0, xs.max() + 5.0, ys.max() + 5.0]
    ok = call(camera="ego", points=[x, y], labels=[1], box=box, object_id=9, label="clicked")
    assert ok.success and ok.object_id == 9, ok.message
    made = labels(ok.mask) > 0
    assert metrics.iou(scene.mask("ego", 3), made) > 0.8
    assert ok.frame_stamp.sec > 0 or ok.frame_stamp.nanosec > 0
    assert wait_until(lambda: collector.count("points", "exo1") >= 1, 60)
    obj = collector.latest("points", "exo1").msg.objects[0]
    assert (obj.object_id, obj.label) == (9, "clicked")
