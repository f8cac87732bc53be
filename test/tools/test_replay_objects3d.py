"""``vggts replay`` writes the node's 3D topics: a bag of a bundled scene with each camera's
exact depth (32FC1 / 16UC1, written after its colour frame, as a recorder may) and
camera_info; per-camera ``objects3d`` and ``object_cloud``, the fused ``objects3d`` with the
cameras' static poses, decoded with Foxglove's reader (mcap + mcap-ros2-support) from the
schemas stored in the file, and compared with the scene's truth."""

import json

import numpy as np
import pytest

pytest.importorskip("rosbags", reason="rosbags is not installed (pip install -r requirements.txt)")

from vggts_ros import bags  # noqa: E402
from vggts_ros.cli import main  # noqa: E402
from vggts_ros.geometry.boxes import OrientedBox, compare_boxes, matrix_from_quaternion  # noqa: E402
from vggts_ros.geometry.boxes import quaternion_from_matrix  # noqa: E402
from vggts_ros.scenes import synthetic_scene  # noqa: E402

SIZE = (320, 240)
FRAMES = 3
DEPTH = {"ego": "32FC1", "exo1": "32FC1", "exo2": "16UC1"}


@pytest.fixture(scope="module")
def scene():
    return synthetic_scene(0, ego_size=SIZE, exo_size=SIZE)


@pytest.fixture(scope="module")
def data(tmp_path_factory, scene):
    import cv2

    root = tmp_path_factory.mktemp("replay3d")
    bags.write_scene_bag(scene, root / "in.mcap", frames=FRAMES, gt=False, depth=DEPTH, camera_info=True)
    for oid in scene.object_ids:
        cv2.imwrite(str(root / f"object{oid}.png"), scene.mask("ego", oid).astype(np.uint8) * 255)
    lines = ["vggts:", "  ros__parameters:", "    cameras: [ego, exo1, exo2]", "    camera:"]
    for name in scene.views:
        T = scene.cameras["ego"].T_cam_from_world @ scene.cameras[name].T_world_from_cam
        pose = [float(v) for v in T[:3, 3]] + [float(v) for v in quaternion_from_matrix(T[:3, :3])]
        depth = "" if name == "ego" else f"depth_topic: /scene/{name}/depth/image_raw, "
        lines.append(f"      {name}: {{topic: /scene/{name}/image_raw, role: {scene.role(name)}, {depth}pose: {pose}}}")
    lines.append("    model: {backend: geometric}")
    (root / "params.yaml").write_text("\n".join(lines) + "\n")
    return root


def decoded(path):
    """topic -> decoded messages, with Foxglove's reader."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    out = {}
    with open(path, "rb") as handle:
        reader = make_reader(handle, decoder_factories=[DecoderFactory()])
        for _, channel, _, msg in reader.iter_decoded_messages():
            out.setdefault(channel.topic, []).append(msg)
    return out


def _p(p):
    return np.array([p.x, p.y, p.z])


def test_replay_writes_objects3d_that_foxglove_decodes(data, scene, tmp_path, capsys):
    pytest.importorskip("mcap_ros2", reason="mcap-ros2-support is not installed (requirements.txt: tests)")
    out, report = tmp_path / "out.mcap", tmp_path / "report.json"
    argv = ["replay", str(data / "in.mcap"), "--out", str(out), "--no-progress", "--params-file",
            str(data / "params.yaml"), "--depth-topic", "ego=/scene/ego/depth/image_raw", "--report", str(report)]
    for oid in scene.object_ids:
        argv += ["--source-mask", f"ego={data / f'object{oid}.png'}"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    topics = decoded(out)
    for name in ("exo1", "exo2"):
        msgs = topics[f"/vggts/{name}/objects3d"]
        assert len(msgs) == FRAMES
        for msg in msgs:
            assert msg.header.frame_id == name and (msg.scale, msg.scale_source) == ("metric", f"depth:{name}")
            assert [o.object_id for o in msg.objects] == scene.object_ids
            for o in msg.objects:
                truth = scene.surface_points(name, o.object_id).mean(0)
                err = np.linalg.norm(_p(o.centroid) - truth) / np.linalg.norm(truth)
                assert not o.reason and err < 0.01, (name, o.object_id, o.reason, err)
        cloud = topics[f"/vggts/{name}/object_cloud"][-1]
        rec = np.frombuffer(bytes(cloud.data), np.dtype({"names": ["x", "y", "z", "id"],
                                                         "formats": ["<f4", "<f4", "<f4", "u1"],
                                                         "offsets": [0, 4, 8, 12], "itemsize": cloud.point_step}))
        last = msgs[-1]
        assert cloud.width == len(rec) == sum(o.points for o in last.objects)
        for o in last.objects:
            mine = rec[rec["id"] == o.object_id]
            assert np.abs(np.stack([mine["x"], mine["y"], mine["z"]], 1).mean(0) - _p(o.centroid)).max() < 1e-4
    # the operator's frame (the first set) gives ego its own estimate, from its exact mask
    ego = topics["/vggts/ego/objects3d"]
    assert len(ego) == 1 and all(not o.reason for o in ego[0].objects)
    # fused in ego's optical frame from the static poses: the true boxes
    fused = topics["/vggts/objects3d"]
    assert len(fused) == FRAMES and fused[0].header.frame_id == "ego"
    for o in fused[-1].objects:
        truth = scene.box(o.object_id, "ego")
        box = OrientedBox(_p(o.box_center), np.array([o.size.x, o.size.y, o.size.z]),
                          matrix_from_quaternion([o.orientation.x, o.orientation.y, o.orientation.z, o.orientation.w]))
        c = compare_boxes(box, truth)
        assert sorted(o.cameras) == ["exo1", "exo2"] and c["size_error"] < 0.2
        assert c["center_error"] < 0.05 * np.linalg.norm(truth.center), c
    # depth and camera_info are copied next to the images; the report carries the 3D
    assert len(topics["/scene/exo2/depth/image_raw"]) == FRAMES and len(topics["/scene/exo2/camera_info"]) == FRAMES
    rows = json.loads(report.read_text())["objects3d"]
    assert len(rows) == FRAMES and rows[-1]["fused"]["frame"] == "ego"
    assert "objects in 3D: 21 of 21 per-camera estimates, 3 fused sets" in printed


def test_replay_depth_that_stops_gives_a_reason_not_an_old_image(data, scene, tmp_path):
    """exo1's depth ends after the first frame: its later sets wait for it until the bag ends,
    then say why they have no 3D; nothing is matched to an older depth image."""
    cut = tmp_path / "cut.mcap"
    reader = bags.open_reader(data / "in.mcap")
    kept = 0
    try:
        with bags.BagWriter(cut) as writer:
            for conn, log_ns, raw in reader.messages(connections=reader.connections):
                if conn.topic == "/scene/exo1/depth/image_raw":
                    kept += 1
                    if kept > 1:
                        continue
                writer.write_raw(conn.topic, conn.msgtype, raw, log_ns)
    finally:
        reader.close()
    out = tmp_path / "out.mcap"
    argv = ["replay", str(cut), "--out", str(out), "--no-progress", "--params-file", str(data / "params.yaml"),
            "--source-mask", f"ego={data / 'object1.png'}"]
    assert main(argv) == 0
    msgs = [bags.deserialize(raw, conn.msgtype) for conn, _, raw in _messages(out, "/vggts/exo1/objects3d")]
    assert len(msgs) == FRAMES
    assert not msgs[0].objects[0].reason
    for msg in msgs[1:]:
        o = msg.objects[0]
        assert "the depth stream stopped or lags" in o.reason and o.points == 0 and not _p(o.centroid).any(), o.reason


def test_replay_refuses_a_depth_topic_that_is_not_in_the_bag(data, capsys):
    argv = ["replay", str(data / "in.mcap"), "--out", str(data / "never.mcap"), "--no-progress",
            "--source-mask", f"ego={data / 'object1.png'}", "--depth-topic", "exo1=/scene/exo1/depth"]
    assert main(argv) == 2
    assert "camera 'exo1': depth topic /scene/exo1/depth is not in the bag" in capsys.readouterr().err
    argv[-1] = "exo9=/scene/exo1/depth/image_raw"
    assert main(argv) == 2
    assert "--depth-topic names unknown camera(s) ['exo9']" in capsys.readouterr().err


def _messages(path, topic):
    reader = bags.open_reader(path)
    try:
        return [(c, t, bytes(r)) for c, t, r in reader.messages(connections=[c for c in reader.connections
                                                                             if c.topic == topic])]
    finally:
        reader.close()
