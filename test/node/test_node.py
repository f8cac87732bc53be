"""The vggts node over real DDS: the node runs as its own process (the installed entry
point with a parameters file), cameras and a client are rclpy nodes in this process."""

import os
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ros-kilted-rclpy) is not installed")

from helpers.node_graph import serving_node_process  # noqa: E402
from vggts_ros.config import CameraConfig, ModelConfig, NodeConfig, SyncConfig, InferenceConfig, PublishConfig  # noqa: E402
from vggts_ros.ros.player import NodeProcess, PlayedCamera, wait_until  # noqa: E402

SIZES = {"ego": (240, 320), "exo1": (270, 480), "exo2": (300, 400)}  # (height, width), all different
# Names unique to this process: another run on the same ROS domain must not cross-talk.
NODE = f"vggts_under_test_{os.getpid()}"
CAMS = f"/test_cams_{os.getpid()}"


def textured(height, width, seed):
    """A real-looking test image: smooth random texture plus a bright square object."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3)).astype(np.float32)
    import cv2

    image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)
    image += rng.normal(0, 12, image.shape)
    y0, x0 = height // 3, width // 3
    image[y0:y0 + height // 4, x0:x0 + width // 4] = (240, 60, 40)
    return image.clip(0, 255).astype(np.uint8)


def ego_mask():
    h, w = SIZES["ego"]
    mask = np.zeros((h, w), np.uint8)
    mask[h // 3:h // 3 + h // 4, w // 3:w // 3 + w // 4] = 255
    return mask


def node_config(**inference):
    return NodeConfig(
        cameras=[CameraConfig(name, f"{CAMS}/{name}/image_raw", "ego" if name == "ego" else "exo") for name in SIZES],
        sync=SyncConfig(slop=0.02, queue_size=5, stale_after=1.0),
        model=ModelConfig(backend=os.environ.get("VGGTS_NODE_TEST_BACKEND", "vggts"), config="test-tiny", device="cpu"),
        inference=InferenceConfig(refine_iterations=1, **inference),
        publish=PublishConfig(overlay=True, diagnostics_period=0.5),
    )


@pytest.fixture(scope="module")
def graph():
    node = NodeProcess(node_config(), node_name=NODE)
    cams = [PlayedCamera(n, f"{CAMS}/{n}/image_raw", textured(*SIZES[n], seed=i)) for i, n in enumerate(SIZES)]
    with serving_node_process(node, cams, NODE) as (player, collector):
        yield node, player, collector


@pytest.fixture()
def fresh(graph):
    node, player, collector = graph
    collector.clear_objects(0)
    for name in SIZES:
        player.pause(name, False)
    time.sleep(0.3)
    collector.clear_received()
    yield graph
    collector.clear_objects(0)


def test_bad_requests_are_refused_with_a_reason_and_change_nothing(fresh):
    node, player, collector = fresh
    assert wait_until(lambda: collector.pipeline_status() is not None, 10)
    good = ego_mask()
    h, w = SIZES["ego"]
    cases = [
        (dict(camera="nope", mask=good), "unknown camera"),
        (dict(camera="ego", mask=np.full((h + 2, w), 255, np.uint8)), "mask is 320x242"),
        (dict(camera="ego", mask=np.dstack([good] * 3), encoding="rgb8"), "mono8 or 8UC1"),
        (dict(camera="ego", mask=np.zeros((h, w), np.uint8)), "empty"),
        (dict(camera="ego", mask=good, stamp=12.5), "no frame from camera 'ego' at stamp 12.500"),
    ]
    for kwargs, expected in cases:
        resp = collector.set_source_mask(**kwargs)
        assert resp.success is False, kwargs
        assert expected in resp.message, resp.message
    missing = collector.clear_objects(9)
    assert missing.success is False and "no object with id 9" in missing.message
    # Nothing was stored: no outputs appear.
    time.sleep(1.0)
    assert all(collector.count("masks", n) == 0 for n in SIZES)
    # The node still answers a good request, and a later bad request for the same id
    # leaves the object in place.
    resp = collector.set_source_mask("ego", good, object_id=4, label="box")
    assert resp.success and resp.object_id == 4, resp.message
    bad = collector.set_source_mask("ego", np.zeros_like(good), object_id=4)
    assert not bad.success
    # Masks and points travel on separate topics: either may arrive first.
    assert wait_until(lambda: collector.count("masks", "exo1") > 0 and collector.count("points", "exo1") > 0, 60), \
        node.log()[-3000:]
    assert collector.latest("points", "exo1").msg.objects[0].object_id == 4
    assert node.alive()


def test_masks_and_points_for_every_other_camera_then_clear_stops_them(fresh):
    node, player, collector = fresh
    resp = collector.set_source_mask("ego", ego_mask(), label="red box")
    assert resp.success, resp.message
    oid = resp.object_id
    assert 1 <= oid <= 255
    assert wait_until(lambda: all(collector.count("points", n) >= 2 and collector.count("masks", n) >= 1
                                   and collector.count("overlays", n) >= 1 for n in ("exo1", "exo2")), 90), \
        node.log()[-3000:]
    published = {round(s, 6) for s in player.stamps}
    for name in ("exo1", "exo2"):
        h, w = SIZES[name]
        mask = collector.latest("masks", name).msg
        assert (mask.height, mask.width, mask.encoding, mask.step) == (h, w, "mono8", w)
        assert mask.header.frame_id == f"{name}_optical_frame"
        stamp = mask.header.stamp.sec + mask.header.stamp.nanosec * 1e-9
        assert any(abs(stamp - s) < 1e-6 for s in published), "mask stamp is not a published frame stamp"
        values = set(np.unique(np.frombuffer(bytes(mask.data), np.uint8)).tolist())
        assert values <= {0, oid}
        points = collector.latest("points", name).msg
        assert points.target_camera == name and points.source_camera == "ego"
        assert len(points.objects) == 1
        obj = points.objects[0]
        assert obj.object_id == oid and obj.label == "red box"
        assert len(obj.source_xy) == len(obj.target_xy) == 10
        assert len(obj.visibility) == len(obj.confidence) == 5
        assert all(0.0 <= v <= 1.0 for v in list(obj.visibility) + list(obj.confidence))
        src = np.asarray(obj.source_xy).reshape(-1, 2)
        assert ego_mask()[src[:, 1].round().astype(int), src[:, 0].round().astype(int)].all(), "source points lie on the mask"
        overlay = collector.latest("overlays", name)
        assert overlay is not None and (overlay.msg.height, overlay.msg.width, overlay.msg.encoding) == (h, w, "rgb8")
    # The source camera gets no output in keyframe mode.
    assert collector.count("masks", "ego") == 0
    status = collector.pipeline_status()
    assert status is not None and status["backend"] and status["device"] == "cpu"

    cleared = collector.clear_objects(0)
    assert cleared.success and "cleared 1" in cleared.message
    time.sleep(3.0)  # let a set already in inference finish
    before = {n: collector.count("masks", n) for n in SIZES}
    time.sleep(2.5)
    assert {n: collector.count("masks", n) for n in SIZES} == before, "outputs continued after clear_objects"


def test_a_silent_camera_does_not_stop_the_others_and_is_reported(fresh):
    node, player, collector = fresh
    resp = collector.set_source_mask("ego", ego_mask())
    assert resp.success, resp.message
    assert wait_until(lambda: collector.count("masks", "exo2") > 0, 90), node.log()[-3000:]
    player.pause("exo2")
    time.sleep(1.5)
    before = collector.count("masks", "exo1")
    stale_before = collector.count("masks", "exo2")
    assert wait_until(lambda: collector.count("masks", "exo1") >= before + 2, 90), node.log()[-3000:]
    assert collector.count("masks", "exo2") <= stale_before + 1
    assert wait_until(lambda: (collector.pipeline_status() or {}).get("stale_cameras") == "exo2", 10)
    player.pause("exo2", False)
    assert wait_until(lambda: (collector.pipeline_status() or {}).get("stale_cameras") == "", 10)
    # logged when it happened, once per change (not at every diagnostics tick); a loaded
    # machine may starve the node for a second more, which is a change too
    assert wait_until(lambda: "camera 'exo2' rejoined" in node.log(), 10), node.log()[-3000:]
    log = node.log()
    stale, rejoined = log.count("camera 'exo2' went stale"), log.count("camera 'exo2' rejoined")
    assert stale >= 1 and stale - rejoined in (0, 1), log[-3000:]


def test_several_objects_from_different_source_cameras(fresh):
    node, player, collector = fresh
    h, w = SIZES["exo1"]
    exo_mask = np.zeros((h, w), np.uint8)
    exo_mask[h // 3:h // 3 + h // 4, w // 3:w // 3 + w // 4] = 255
    a = collector.set_source_mask("ego", ego_mask(), object_id=0, label="a")
    # Same source frame as object a (named by the stamp the node answered), so both share
    # the first backbone pass; any nonzero value marks the object.
    stamp = a.frame_stamp.sec + a.frame_stamp.nanosec * 1e-9
    b = collector.set_source_mask("ego", ego_mask() // 255 * 7, object_id=0, stamp=stamp, label="b")
    c = collector.set_source_mask("exo1", exo_mask, object_id=200, label="c")
    assert a.success and b.success and c.success, (a.message, b.message, c.message)
    assert len({a.object_id, b.object_id, 200}) == 3 and c.object_id == 200

    def has(camera, ids):
        latest = collector.latest("points", camera)
        return latest is not None and {o.object_id for o in latest.msg.objects} == ids

    ego_ids = {a.object_id, b.object_id}
    assert wait_until(lambda: has("exo2", ego_ids | {200}) and has("exo1", ego_ids) and has("ego", {200}), 120), \
        node.log()[-3000:]
    assert collector.latest("points", "exo2").msg.source_camera == "ego,exo1"
    latest = collector.latest("points", "exo2")
    labels = {o.object_id: o.label for o in latest.msg.objects}
    assert labels == {a.object_id: "a", b.object_id: "b", 200: "c"}
    # The set's mask travels separately (and is larger): wait for it.
    assert wait_until(lambda: collector.at_stamp("masks", "exo2", latest.stamp) is not None, 30)
    mask = collector.at_stamp("masks", "exo2", latest.stamp).msg
    values = set(np.unique(np.frombuffer(bytes(mask.data), np.uint8)).tolist())
    assert values <= {0, a.object_id, b.object_id, 200}
    one = collector.clear_objects(200)
    assert one.success
    assert wait_until(lambda: has("exo2", ego_ids), 60)
    # ego's only object was 200: it is told explicitly that nothing is left.
    assert wait_until(lambda: has("ego", set()), 30)
    ego_mask_msg = collector.at_stamp("masks", "ego", collector.latest("points", "ego").stamp)
    assert ego_mask_msg is not None or wait_until(
        lambda: collector.at_stamp("masks", "ego", collector.latest("points", "ego").stamp) is not None, 10)
    cleared = collector.at_stamp("masks", "ego", collector.latest("points", "ego").stamp).msg
    assert not np.frombuffer(bytes(cleared.data), np.uint8).any()
