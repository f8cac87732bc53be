"""``vggts replay``: a bag made here from a bundled scene goes through the synchroniser
and the geometric backend; the output MCAP is read back with the same library."""

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rosbags", reason="rosbags is not installed (pip install -r requirements.txt)")

from vggts_ros import bags, metrics
from vggts_ros.cli import main
from vggts_ros.scenes import synthetic_scene, textureless_scene
from vggts_ros.sync import ApproximateTimeSync

FRAMES = 4
DROP = (("exo2", 2),)  # one camera misses a frame


@pytest.fixture(scope="module")
def scene():
    return synthetic_scene(0)


@pytest.fixture(scope="module")
def data(tmp_path_factory, scene):
    import cv2

    root = tmp_path_factory.mktemp("replay")
    bags.write_scene_bag(scene, root / "in.mcap", frames=FRAMES, mask_camera="ego", drop=DROP)
    bags.write_scene_bag(scene, root / "in_sqlite", frames=FRAMES, storage="sqlite3", mask_camera="ego", drop=DROP)
    for oid in scene.object_ids:
        cv2.imwrite(str(root / f"object{oid}.png"), scene.mask("ego", oid).astype(np.uint8) * 255)
    return root


def read_bag(path):
    """topic -> list of (log time, deserialised message), in log order."""
    out = {}
    reader = bags.open_reader(path)
    try:
        for conn, log_ns, raw in reader.messages(connections=reader.connections):
            out.setdefault(conn.topic, []).append((log_ns, bags.deserialize(raw, conn.msgtype)))
    finally:
        reader.close()
    return out


def labels_of(msg):
    return np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width)


def expected_sets(path, cameras):
    """The synchroniser run by hand on the input's camera stamps (log time as clock)."""
    sync = ApproximateTimeSync(cameras, slop=0.05, queue_size=10, stale_after=1.0)
    sets, last = [], 0
    reader = bags.open_reader(path)
    topics = {f"/scene/{c}/image_raw": c for c in cameras}
    try:
        conns = [c for c in reader.connections if c.topic in topics]
        for conn, log_ns, raw in reader.messages(connections=conns):
            msg = bags.deserialize(raw, conn.msgtype)
            stamp = bags.stamp_of(msg)
            sets += sync.add(topics[conn.topic], stamp * 1e-9, stamp, now=log_ns * 1e-9)
            last = log_ns
    finally:
        reader.close()
    return sets + sync.poll(now=last * 1e-9 + 3.0)


def run_replay(data, out, *extra):
    argv = ["replay", str(data / "in.mcap"), "--out", str(out), "--role", "ego=ego", "--no-progress",
            "--gt-topic", "exo1=/scene/exo1/gt", "--gt-topic", "exo2=/scene/exo2/gt"]
    for oid in (1, 2, 3):
        argv += ["--source-mask", f"ego={data / f'object{oid}.png'}"]
    return main(argv + list(extra))


def test_replay_mcap_round_trip_and_scores(data, scene, capsys):
    out = data / "out.mcap"
    report = data / "report.json"
    assert run_replay(data, out, "--report", str(report)) == 0
    printed = capsys.readouterr().out
    assert "mean IoU" in printed

    got = read_bag(out)
    cams = ["ego", "exo1", "exo2"]
    sets = expected_sets(data / "in.mcap", cams)
    # exo2 is live, so its gap is waited for and then loses that set (the node does the same)
    assert len(sets) == FRAMES - 1
    rep = json.loads(report.read_text())
    assert [s["stamps"] for s in rep["sets"]] == [s.stamps for s in sets]

    # Every synchronised set has a mask, points and overlay for each target camera in it.
    for cam in ("exo1", "exo2"):
        want = sorted(s.messages[cam] for s in sets if cam in s.messages)
        for kind in ("mask", "points", "overlay"):
            stamps = [bags.stamp_of(m) for _, m in got[f"/vggts/{cam}/{kind}"]]
            assert stamps == want, (cam, kind)
    assert "/vggts/ego/mask" not in got  # the source camera is not a target
    # the inputs are copied, untouched
    assert len(got["/scene/ego/image_raw"]) == FRAMES

    # Points messages carry every object; masks score as the metrics say, and as printed.
    rows = {}
    for cam in ("exo1", "exo2"):
        for (_, mask), (_, pts) in zip(got[f"/vggts/{cam}/mask"], got[f"/vggts/{cam}/points"]):
            assert mask.encoding == "mono8" and bags.stamp_of(mask) == bags.stamp_of(pts)
            assert pts.target_camera == cam and pts.source_camera == "ego"
            assert sorted(o.object_id for o in pts.objects) == [1, 2, 3]
            labels = labels_of(mask)
            for obj in pts.objects:
                assert obj.area == int((labels == obj.object_id).sum())
                assert len(obj.target_xy) == 2 * 5 and len(obj.visibility) == 5
                rows.setdefault((cam, obj.object_id), []).append(
                    metrics.iou(scene.mask(cam, obj.object_id), labels == obj.object_id))
    assert len(rep["scores"]) == sum(len(v) for v in rows.values())
    for (cam, oid), values in rows.items():
        mean = float(np.mean(values))
        assert rep["mean_iou"][f"{cam}/{oid}"] == pytest.approx(mean, abs=1e-12)
        assert f"{mean:.3f}" in printed
    # the geometric backend finds the textured boxes of this scene
    assert rows[("exo1", 1)][0] > 0.9 and rows[("exo2", 2)][0] > 0.9


def test_replay_is_deterministic(data):
    (data / "a").mkdir()
    (data / "b").mkdir()
    a, b = data / "a" / "out.mcap", data / "b" / "out.mcap"  # the file name is stored in the file
    assert run_replay(data, a) == 0
    assert run_replay(data, b) == 0
    assert a.read_bytes() == b.read_bytes()


def test_replay_sqlite_bag_with_mask_topic_matches_png_masks(data, capsys):
    png = data / "png.mcap"
    assert run_replay(data, png) == 0
    out = data / "from_sqlite"
    argv = ["replay", str(data / "in_sqlite"), "--out", str(out), "--role", "ego=ego", "--no-progress",
            "--mask-topic", "ego=/scene/ego/source_mask", "--gt-topic", "exo1=/scene/exo1/gt"]
    assert main(argv) == 0
    assert (out / "metadata.yaml").is_file() and (out / "from_sqlite.mcap").is_file()
    a, b = read_bag(png), read_bag(out)
    for cam in ("exo1", "exo2"):
        ma = [labels_of(m) for _, m in a[f"/vggts/{cam}/mask"]]
        mb = [labels_of(m) for _, m in b[f"/vggts/{cam}/mask"]]
        assert len(ma) == len(mb) > 0
        assert all(np.array_equal(x, y) for x, y in zip(ma, mb))


def test_replay_source_mask_on_a_later_stamp(data, scene):
    """Objects apply from the stamp of the frame they were drawn on (as set_source_mask)."""
    out = data / "later.mcap"
    stamp = 100.0 + 0.2  # ego's second frame
    argv = ["replay", str(data / "in.mcap"), "--out", str(out), "--no-progress",
            "--source-mask", f"ego={data / 'object1.png'}@{stamp}"]
    assert main(argv) == 0
    masks = read_bag(out)["/vggts/exo1/mask"]
    assert [round(bags.stamp_of(m) * 1e-9, 3) for _, m in masks] == [100.204, 100.604]  # not the first set; the third is lost to exo2's gap


@pytest.mark.parametrize("extra, message", [
    (["--source-mask", "ego=MISSING.png"], "mask file not found"),
    ([], "no object to follow"),
    (["--source-mask", "ego=OBJ@12.5"], "no frame for the source mask(s) of camera 'ego' at 12.500000"),
    (["--source-mask", "front=OBJ"], "cameras are ['ego', 'exo1', 'exo2']"),
    (["--source-mask", "ego=OBJ", "--gt-topic", "exo1=/nope"], "ground-truth topic /nope is not in the bag"),
    (["--source-mask", "ego=OBJ", "--camera", "a=/scene/ego/image_raw", "--camera", "b=/x"],
     "camera 'b': topic /x is not in the bag"),
])
def test_replay_bad_input_is_named(data, capsys, extra, message):
    extra = [e.replace("OBJ", str(data / "object1.png")) for e in extra]
    out = data / "bad.mcap"
    assert main(["replay", str(data / "in.mcap"), "--out", str(out), "--no-progress"] + extra) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not out.exists()


def test_bag_problems_come_before_loading_weights(data, capsys):
    base = ["replay", str(data / "in.mcap"), "--no-progress", "--source-mask", f"ego={data / 'object1.png'}",
            "--vggt-checkpoint", str(data / "nope" / "model.pt"), "--head-checkpoint", str(data / "nope" / "h.pth")]
    assert main(base + ["--out", str(data / "w1.mcap"), "--gt-topic", "exo1=/typo"]) == 2
    assert "ground-truth topic /typo is not in the bag" in capsys.readouterr().err
    assert main(base + ["--out", str(data / "w2.mcap")]) == 2
    assert "checkpoint file not found" in capsys.readouterr().err
    assert not (data / "w1.mcap").exists() and not (data / "w2.mcap").exists()


def test_replay_refuses_to_overwrite(data, capsys):
    out = data / "exists.mcap"
    out.write_bytes(b"x")
    assert main(["replay", str(data / "in.mcap"), "--out", str(out), "--no-progress",
                 "--source-mask", f"ego={data / 'object1.png'}"]) == 2
    assert "exists already" in capsys.readouterr().err
    assert out.read_bytes() == b"x"


def test_replay_compressed_camera_topics(tmp_path, scene):
    """Bags usually hold CompressedImage: decoded like the node does, outputs the same."""
    bag = tmp_path / "compressed.mcap"
    bags.write_scene_bag(scene, bag, frames=2, compressed=True, mask_camera="ego")
    out = tmp_path / "out.mcap"
    argv = ["replay", str(bag), "--out", str(out), "--no-progress", "--role", "ego=ego", "--no-copy-inputs",
            "--mask-topic", "ego=/scene/ego/source_mask", "--gt-topic", "exo1=/scene/exo1/gt"]
    assert main(argv) == 0
    got = read_bag(out)
    assert not any(t.startswith("/scene/") for t in got)  # inputs not copied
    assert "/vggts/exo1/overlay" in got
    for cam in ("exo1", "exo2"):
        masks = got[f"/vggts/{cam}/mask"]
        assert len(masks) == 2
        labels = labels_of(masks[0][1])
        for oid in (1, 2):  # PNG is lossless: the textured boxes are found as from raw images
            assert metrics.iou(scene.mask(cam, oid), labels == oid) > 0.9


def test_replay_with_the_learned_backend(tmp_path, scene):
    """--backend vggts runs the VGGT-S pipeline (test-tiny: deterministic weights, so the
    masks mean nothing; the plumbing and the shared multi-object call are what count)."""
    bag = tmp_path / "one.mcap"
    bags.write_scene_bag(scene, bag, frames=1, mask_camera="ego", gt=False)
    out = tmp_path / "tiny.mcap"
    argv = ["replay", str(bag), "--out", str(out), "--no-progress", "--role", "ego=ego", "--backend", "vggts",
            "--config", "test-tiny", "--device", "cpu", "--mask-topic", "ego=/scene/ego/source_mask"]
    assert main(argv) == 0
    got = read_bag(out)
    for cam in ("exo1", "exo2"):
        (_, pts), = got[f"/vggts/{cam}/points"]
        assert sorted(o.object_id for o in pts.objects) == [1, 2, 3]
        assert all(len(o.target_xy) == 10 and len(o.confidence) == 5 for o in pts.objects)
        (_, mask), = got[f"/vggts/{cam}/mask"]
        assert (mask.height, mask.width) == scene.image(cam).shape[:2]


def test_output_decodes_with_the_foxglove_mcap_reader(data):
    """A second, independent reader (mcap + mcap-ros2-support, Foxglove's own packages)
    decodes every output topic from the schemas stored in the file alone."""
    pytest.importorskip("mcap_ros2", reason="mcap-ros2-support is not installed")
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    out = data / "foxglove.mcap"
    assert run_replay(data, out) == 0
    ours = read_bag(out)
    with open(out, "rb") as handle:
        reader = make_reader(handle, decoder_factories=[DecoderFactory()])
        assert reader.get_header().profile == "ros2"
        summary = reader.get_summary()
        assert {s.name: s.encoding for s in summary.schemas.values()}["vggts_ros/msg/ProjectedPoints"] == "ros2msg"
        seen = {}
        for _, channel, message, decoded in reader.iter_decoded_messages():
            seen.setdefault(channel.topic, []).append(decoded)
    assert sorted(seen) == sorted(ours)
    for a, (_, b) in zip(seen["/vggts/exo1/points"], ours["/vggts/exo1/points"]):
        assert (a.header.stamp.sec, a.header.stamp.nanosec) == (b.header.stamp.sec, b.header.stamp.nanosec)
        assert [(o.object_id, o.label, o.area) for o in a.objects] == [(o.object_id, o.label, o.area) for o in b.objects]
        assert np.allclose([list(o.target_xy) for o in a.objects], [list(o.target_xy) for o in b.objects])
    a, (_, b) = seen["/vggts/exo2/mask"][0], ours["/vggts/exo2/mask"][0]
    assert a.encoding == "mono8" and bytes(a.data) == bytes(b.data)


def test_report_names_the_path_of_each_mask(tmp_path, capsys):
    """The plain box of the textureless scene is found by the geometric fallback, and the
    report says so for every target mask."""
    import cv2

    plain = textureless_scene(0)
    bag = tmp_path / "plain.mcap"
    bags.write_scene_bag(plain, bag, frames=1, gt=False)
    cv2.imwrite(str(tmp_path / "box.png"), plain.mask("ego", 1).astype(np.uint8) * 255)
    report = tmp_path / "r.json"
    assert main(["replay", str(bag), "--out", str(tmp_path / "o.mcap"), "--no-progress", "--role", "ego=ego",
                 "--source-mask", f"ego={tmp_path / 'box.png'}", "--report", str(report)]) == 0
    rows = json.loads(report.read_text())["results"]
    assert [(r["camera"], r["object_id"]) for r in rows] == [("exo1", 1), ("exo2", 1)]
    # with the fallback the box is found, and the path says how
    assert all(r["area"] > 0 and r["path"] == "scene_homography+colour" and r["reason"] == "" for r in rows)
    capsys.readouterr()


def test_empty_mask_reasons_are_reported(tmp_path, capsys):
    from vggts_ros.geometric import GeometricSegmentor
    from vggts_ros.replay import ReplayOptions, SourceMask, replay

    plain = textureless_scene(0)
    bag = tmp_path / "plain.mcap"
    bags.write_scene_bag(plain, bag, frames=1, gt=False)
    options = ReplayOptions(source_masks=[SourceMask("ego", plain.mask("ego", 1), None, 1, "box")],
                            roles={"ego": "ego"}, progress=False)
    result = replay(bag, tmp_path / "o.mcap", GeometricSegmentor(fallback=False), options)
    assert len(result.results) == 2 and all(r["area"] == 0 for r in result.results)
    reasons = result.empty_reasons()
    assert sum(reasons.values()) == 2 and set(reasons) == {r["reason"] for r in result.results}
    assert all("object" in why for why in reasons)  # e.g. "3 feature matches on the object (need 8)"
    # the MCAP's ProjectedPoints carry the same path and reason for each empty target
    got = read_bag(tmp_path / "o.mcap")
    for camera in ("exo1", "exo2"):
        (_, msg), = got[f"/vggts/{camera}/points"]
        (obj,) = msg.objects
        (row,) = [r for r in result.results if r["camera"] == camera]
        assert (obj.object_id, obj.area, obj.path, obj.reason) == (1, 0, "geometric", row["reason"])
        assert obj.reason and not labels_of(got[f"/vggts/{camera}/mask"][0][1]).any()


def test_replay_with_the_node_parameters_file(data, tmp_path, capsys):
    """--params-file: the node's YAML (relative topics, roles, sync) drives the replay."""
    params = tmp_path / "params.yaml"
    params.write_text(
        "vggts:\n  ros__parameters:\n    cameras: [ego, exo1, exo2]\n"
        "    camera:\n      ego: {topic: scene/ego/image_raw, role: ego, required: true}\n"
        "      exo1: {topic: scene/exo1/image_raw}\n      exo2: {topic: /scene/exo2/image_raw}\n"
        "    sync: {slop: 0.05, queue_size: 5}\n    model: {backend: geometric}\n")
    out = tmp_path / "p.mcap"
    assert main(["replay", str(data / "in.mcap"), "--out", str(out), "--no-progress", "--params-file", str(params),
                 "--source-mask", f"ego={data / 'object2.png'}"]) == 0
    printed = capsys.readouterr().out
    assert "ego (ego, /scene/ego/image_raw), exo1 (exo, /scene/exo1/image_raw)" in printed
    assert len(read_bag(out)["/vggts/exo2/mask"]) == FRAMES - 1


def test_replay_runs_the_temporal_memory_of_the_node_parameters(data, tmp_path):
    """``inference.temporal`` in --params-file: the replay streams every set through the
    memory as the node does (one bank per object and target camera, written every set)."""
    params = tmp_path / "params.yaml"
    params.write_text(
        "vggts:\n  ros__parameters:\n    cameras: [ego, exo1, exo2]\n"
        "    camera:\n      ego: {topic: /scene/ego/image_raw, role: ego}\n"
        "      exo1: {topic: /scene/exo1/image_raw}\n      exo2: {topic: /scene/exo2/image_raw}\n"
        "    model: {backend: vggts, config: test-tiny}\n"
        "    inference: {temporal: true, memory_frames: 2}\n")
    report = tmp_path / "r.json"
    assert main(["replay", str(data / "in.mcap"), "--out", str(tmp_path / "t.mcap"), "--no-progress",
                 "--params-file", str(params), "--source-mask", f"ego={data / 'object2.png'}",
                 "--report", str(report)]) == 0
    stream = json.loads(report.read_text())["stream"]
    assert stream["temporal"] == "true"
    writes = {k: int(v) for k, v in stream.items() if k.startswith("memory_writes_")}
    # 3 sets, each with both exo targets (6 masks): every bank written 3 times, never restarted
    assert writes == {"memory_writes_1/exo1": 3, "memory_writes_1/exo2": 3}
    # without the option: no memory
    params.write_text(params.read_text().replace("temporal: true", "temporal: false"))
    assert main(["replay", str(data / "in.mcap"), "--out", str(tmp_path / "p.mcap"), "--no-progress",
                 "--params-file", str(params), "--source-mask", f"ego={data / 'object2.png'}",
                 "--report", str(report)]) == 0
    assert json.loads(report.read_text())["stream"] == {"temporal": "false"}


def test_replay_track_mode_moves_the_source_mask(data, tmp_path, scene):
    """track: the source camera becomes a target of its own newer frames (as in the node)."""
    out = tmp_path / "track.mcap"
    assert main(["replay", str(data / "in.mcap"), "--out", str(out), "--no-progress", "--role", "ego=ego",
                 "--source-mode", "track", "--source-mask", f"ego={data / 'object1.png'}"]) == 0
    got = read_bag(out)
    ego = got["/vggts/ego/mask"]
    # every set after the first: the object followed into ego's newer frame, found there
    assert len(ego) == FRAMES - 2
    assert all(metrics.iou(scene.mask("ego", 1), labels_of(m) == 1) > 0.95 for _, m in ego)
    assert len(got["/vggts/exo1/mask"]) == FRAMES - 1


def test_points_msg_fills_fields_added_to_the_msg_later(monkeypatch):
    """When ObjectPoints.msg gains fields the replay does not know yet, it fills those it
    knows (path and reason included) and zeroes the others instead of failing."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    from vggts_ros.registry import TrackedObject
    from vggts_ros.replay import points_msg
    from vggts_ros.types import SegmentationResult

    msg_dir = Path(bags.__file__).resolve().parent.parent / "msg"
    store = get_typestore(Stores.LATEST)
    types = get_types_from_msg((msg_dir / "ObjectPoints.msg").read_text() + "\nfloat32[] extra\n", "vggts_ros/msg/ObjectPoints")
    types.update(get_types_from_msg((msg_dir / "ProjectedPoints.msg").read_text(), "vggts_ros/msg/ProjectedPoints"))
    store.register(types)
    monkeypatch.setattr(bags, "_TYPESTORE", store)
    res = SegmentationResult(mask=np.zeros((4, 4), bool), source_points=np.zeros((2, 2)), target_points=np.ones((2, 2)),
                             visibility=np.zeros(2), confidence=np.zeros(2), path="", reason="3 feature matches")
    obj = TrackedObject(7, "ego", "cup", np.zeros((4, 4, 3), np.uint8), np.ones((4, 4), bool), 0.0, 1)
    msg = points_msg(bags.header(5, "exo1"), "ego", "exo1", [(obj, res, 0)])
    back = bags.deserialize(bags.serialize(msg), "vggts_ros/msg/ProjectedPoints")
    (o,) = back.objects
    assert (o.object_id, o.label, o.reason, o.path, len(o.extra)) == (7, "cup", "3 feature matches", "", 0)


def test_replay_set_tunes_the_geometric_backend(data, tmp_path):
    """--set NAME=VALUE (node parameter names) reaches the backend the replay builds: an
    unreachable match count with the fallback off leaves every mask empty, with its reason;
    without a params file the backend stays the weight-free default."""
    report = tmp_path / "r.json"
    assert run_replay(data, tmp_path / "s.mcap", "--set", "model.geometric.min_matches=1000000",
                      "--set", "model.geometric.fallback=false", "--report", str(report)) == 0
    rows = json.loads(report.read_text())["results"]
    assert json.loads(report.read_text())["backend"] == "geometric"
    assert rows and all(r["area"] == 0 and "matches" in r["reason"] for r in rows), rows[:3]
    assert run_replay(data, tmp_path / "d.mcap", "--report", str(report)) == 0
    assert any(r["area"] > 0 for r in json.loads(report.read_text())["results"])


def test_cameras_without_usable_frames_are_named_and_counted(tmp_path, scene, capsys):
    """A camera topic with no messages, and one whose frames are all of an encoding the
    replay cannot decode (raw Bayer), are reported per camera (count and reason) and never as present;
    a source mask on the silent camera is refused by name, not with a traceback."""
    bag = tmp_path / "odd.mcap"
    with bags.BagWriter(bag) as w:
        w.connection("/rig/silent/image_raw", bags.IMAGE)
        for k in range(3):
            t = 10**9 + k * 200_000_000
            w.write("/rig/ego/image_raw", bags.image_msg(scene.image("ego"), "rgb8", t, "ego"), t)
            w.write("/rig/exo1/image_raw", bags.image_msg(scene.image("exo1"), "rgb8", t, "exo1"), t)
            raw = scene.image("exo2")[..., 1]  # a raw Bayer camera: not decoded here
            w.write("/rig/exo2/image_raw", bags.image_msg(raw, "bayer_rggb8", t, "exo2"), t)
    cv2 = pytest.importorskip("cv2")
    png = tmp_path / "m.png"
    cv2.imwrite(str(png), scene.mask("ego", 1).astype(np.uint8) * 255)
    report = tmp_path / "r.json"
    args = ["replay", str(bag), "--out", str(tmp_path / "o.mcap"), "--no-progress", "--role", "ego=ego",
            "--report", str(report), "--source-mask", f"ego={png}"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "camera 'silent': no messages on /rig/silent/image_raw" in err
    assert "camera 'exo2': 3 of 3 frames skipped" in err and "bayer_rggb8" in err
    cams = {c["name"]: c for c in json.loads(report.read_text())["cameras"]}
    assert cams["silent"]["present"] is False and cams["silent"]["frames"] == 0
    assert cams["exo2"]["frames"] == 3 and cams["ego"]["present"] is True
    # a source mask on the camera that has nothing
    args[3] = str(tmp_path / "o2.mcap")
    assert main(args[:-1] + [f"silent={png}"]) == 2
    assert "camera 'silent', which has no messages in the bag" in capsys.readouterr().err
