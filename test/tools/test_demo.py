"""`vggts demo` (the README's first command without the environment set-up): the whole ROS
graph on the bundled scenes, scored against their exact ground truth, and the moving scene
(masks at camera rate, scored frame by frame)."""

import json
import subprocess
import sys

import cv2
import pytest

pytest.importorskip("rclpy", reason="rclpy (ros-kilted-rclpy) is not installed")
pytestmark = pytest.mark.ros


def test_demo_runs_the_graph_and_the_geometric_backend_finds_every_object(tmp_path):
    """Easy scenes found; hard scenes (tall, textureless, wall) in the table with their
    IoU, the path of each mask and a reason for every empty one; the moving scene's masks
    published at camera rate, propagated, and close to each frame's truth."""
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "vggts_ros.cli", "demo", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "backend: geometric" in proc.stdout
    assert "overall mean IoU" in proc.stdout
    summary = json.loads((out / "results.json").read_text())
    assert summary["backend"] == "geometric"
    scenes = {s["mosaic"]: s for s in summary["scenes"]}
    assert len(scenes) == 6
    for path, scene in scenes.items():
        image = cv2.imread(path)
        assert image is not None and image.shape[0] > 100 and image.shape[1] > 300
    per_view = {}
    for scene in summary["scenes"]:
        for row in scene["rows"]:
            per_view.setdefault((row["scene"], row["target"]), []).append(row["iou"])
    easy = {"synthetic_0", "synthetic_1", "middlebury_motorcycle"}
    hard = {"tall_0", "textureless_0", "wall_0"}
    assert {s for s, _ in per_view} == easy | hard
    for view, ious in per_view.items():
        if view[0] in easy:  # the hard scenes are in the table with their IoU, whatever it is
            assert sum(ious) / len(ious) >= 0.5, (view, ious)
    rows = [row for scene in summary["scenes"] for row in scene["rows"]]
    for row in rows:
        # every mask says which path made it; every empty one says why, every other nothing
        assert row["path"], row
        assert bool(row["reason"]) == (row["pred_area"] == 0), row
    # the textureless box and the painted wall: found by the geometric backend's fallback
    for scene in ("textureless_0", "wall_0"):
        paths = {r["path"] for r in rows if r["scene"] == scene and r["object"] == 1}
        assert paths <= {"scene_homography+colour", "geometric"} and "scene_homography+colour" in paths, (scene, paths)
    table = (out / "results.txt").read_text()
    assert table.startswith("backend: geometric")
    for row in rows:  # the printed table: each pair's line with its path (and reason when empty)
        line = [ln for ln in table.splitlines() if ln.split()[:4] == [row["scene"], row["target"], row["role"],
                                                                        str(row["object"])]]
        assert len(line) == 1 and f"{row['iou']:.3f}" in line[0] and row["path"] in line[0], (row, line)
        assert not row["reason"] or row["reason"] in line[0]
    empty = sum(1 for r in rows if r["pred_area"] == 0)
    assert f"not found: {empty} of {len(rows)} object/view pairs" in table
    # the 3D column: each scene's exact depth as the node's depth topics, scored against the
    # visible surface's centroid (issue 20's acceptance: median 1 %, 95th percentile 3 %)
    import numpy as np

    errors = [r["centroid_error"] for r in rows if r["pred_area"] > 0]
    assert all(e is not None for e in errors), [(r["scene"], r["target"], r["reason3d"]) for r in rows]
    assert np.median(errors) <= 0.01 and np.percentile(errors, 95) <= 0.03, errors
    for row in rows:
        line = [ln for ln in table.splitlines() if ln.split()[:4] == [row["scene"], row["target"], row["role"],
                                                                        str(row["object"])]][0]
        assert (f"{100 * row['centroid_error']:.2f}" if row["centroid_error"] is not None else " - ") in line
    boxes = [b for scene in summary["scenes"] for b in scene["boxes3d"]]
    assert len(boxes) == 15 and all(b["size_error"] is not None for b in boxes), boxes  # 5 box scenes x 3
    assert max(b["size_error"] for b in boxes) <= 0.2 and max(b["centre_error"] for b in boxes) <= 0.05, boxes
    assert "3D centroid error (% of the distance" in table and "fused boxes (static poses" in table
    # the moving scene (default moving:0/5s at 10 Hz, publish.propagation on): every frame
    # after the boxes were given is scored against its own exact masks
    moving = summary["moving_scene"]
    assert moving["sequence"] == "moving_0_5s" and moving["rate_hz"] == 10.0 and moving["scored_frames"] == 49
    assert moving["parameters"]["publish.propagation"] is True and moving["targets"] == ["exo1", "exo2"]
    per_target = moving["per_target"]
    # Masks at camera rate. Measured in 9 runs on the shared 2-core machine (load 3-6): 0.61-0.86
    # of the frames for exo1, 0.82-1.0 for exo2, 0.71-0.93 of the frame/target pairs together;
    # the camera-rate worker serves the newest frame per camera, so when it falls behind, the
    # frame it drops is the last camera's of each tick (exo1's or exo2's, whichever the player
    # sends last), and a load spike costs both a few frames in a row. With propagation off the
    # node publishes on 0.06 of the frames (docs/propagation.md).
    for cam, t in per_target.items():
        assert t["frames"] == 49 and t["published_fraction"] >= 0.4, (cam, t)
    assert sum(t["published"] for t in per_target.values()) >= 0.55 * 2 * 49, per_target
    # propagated (camera rate), from cross-view results refreshed on the way (several steps)
    assert moving["cross_view_steps"] >= 2, moving["diagnostics"]
    for cam, t in per_target.items():
        assert t["propagated"] > 0 and t["propagated"] >= 0.9 * t["good_masks"], (cam, t)
        assert 0 <= t["age_median"] <= moving["parameters"]["publish.max_age"], (cam, t)
        # the good masks against each frame's truth: measured 0.80-0.93 (exo1, where box 1 is
        # seen at a wide angle) and 0.81-0.95 (exo2) over the boxes the backend finds
        assert t["mean_iou"] >= 0.6, (cam, t)
    # boxes 1 and 2 are found and followed in both targets (box 3: "not found" by the
    # geometric backend in exo1 from ego's first frame, behind box 1 in exo2 for a while)
    for r in moving["per_object"]:
        if r["object"] in (1, 2):
            assert r["good"] >= 0.3 * 49 and r["mean_iou"] >= 0.5, r
    assert cv2.imread(moving["mosaic"]) is not None
    assert "moving scene: moving_0_5s" in table
    for cam, t in per_target.items():
        line = [ln for ln in table.splitlines() if ln.split()[:1] == [cam] and f"{t['published']}/49" in ln]
        assert len(line) == 1 and f"{t['mean_iou']:.3f}" in line[0], (cam, line)


def test_demo_moving_scene_can_be_skipped(tmp_path):
    """``--moving ''`` (and no still scene): nothing played, an empty moving section."""
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "vggts_ros.cli", "demo", "--scenes", "", "--moving", "",
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "results.json").read_text())
    assert summary["scenes"] == [] and summary["moving_scene"] is None
    assert "moving scene" not in (out / "results.txt").read_text()
