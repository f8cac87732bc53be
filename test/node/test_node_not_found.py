"""Over real DDS (rclpy, node in this process, weight-free geometric backend): every
published target says which path made its mask, and an object the backend cannot find
comes with a "not found" reason instead of a silent empty mask."""

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ros-kilted-rclpy) is not installed")

from helpers.node_graph import NodeGraph, labels, ros  # noqa: E402,F401
from vggts_ros import metrics  # noqa: E402
from vggts_ros.geometric import GeometricSegmentor  # noqa: E402
from vggts_ros.msg import ObjectPoints  # noqa: E402
from vggts_ros.ros.player import wait_until  # noqa: E402
from vggts_ros.scenes import textureless_scene  # noqa: E402

TARGETS = ("exo1", "exo2")


def test_interface_has_path_and_reason():
    fields = ObjectPoints.get_fields_and_field_types()
    assert (fields.get("path"), fields.get("reason")) == ("string", "string"), (
        "the installed vggts_ros interfaces predate msg/ObjectPoints.msg: rebuild them (bash run.sh setup)")


def test_a_textureless_object_is_published_empty_with_its_reason_and_a_textured_one_with_its_path(ros):
    scene = textureless_scene(0)  # object 1: one flat colour; object 2: textured
    # Without its colour fallback the geometric backend has only the object's own features,
    # which a flat-coloured box does not have.
    g = NodeGraph(scene, "vggts_notfound", segmentor=GeometricSegmentor(fallback=False))
    node, collector = g.node, g.collector
    try:
        assert wait_until(lambda: node.history.latest("ego") is not None, 20)
        for oid, label in ((1, "plain box"), (2, "textured box")):
            resp = collector.set_source_mask("ego", scene.mask("ego", oid), object_id=oid, label=label)
            assert resp.success, resp.message

        def both(cam):
            latest = collector.latest("points", cam)
            return (latest is not None and {o.object_id for o in latest.msg.objects} == {1, 2}
                    and collector.at_stamp("masks", cam, latest.stamp) is not None)

        assert wait_until(lambda: all(both(c) for c in TARGETS), 90), "no output with both objects"
        for cam in TARGETS:
            points = collector.latest("points", cam)
            mask = collector.at_stamp("masks", cam, points.stamp).msg
            ids = labels(mask)
            objs = {o.object_id: o for o in points.msg.objects}
            plain, textured = objs[1], objs[2]
            # not found: no pixel, zero score, the backend's name as path and its reason
            assert not (ids == 1).any() and plain.area == 0 and plain.score == 0.0
            assert plain.path == "geometric"
            assert "object" in plain.reason and ("matches" in plain.reason or "features" in plain.reason), plain.reason
            assert plain.label == "plain box"
            # found: its pixels, the path that found it, no reason
            assert textured.path == "object_features" and textured.reason == ""
            assert textured.area == int((ids == 2).sum()) > 0
            assert metrics.iou(scene.mask(cam, 2), ids == 2) > 0.5, cam
    finally:
        g.close()
