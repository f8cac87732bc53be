"""`vggts demo` (the README's first command without the environment set-up): the whole ROS
graph on the bundled scenes, scored against their exact ground truth."""

import json
import subprocess
import sys

import cv2
import pytest

pytest.importorskip("rclpy", reason="rclpy (ros-kilted-rclpy) is not installed")


def test_demo_runs_the_graph_and_the_geometric_backend_finds_every_object(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "vggts_ros.cli", "demo", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "backend: geometric" in proc.stdout
    assert "overall mean IoU" in proc.stdout
    summary = json.loads((out / "results.json").read_text())
    assert summary["backend"] == "geometric"
    scenes = {s["mosaic"]: s for s in summary["scenes"]}
    assert len(scenes) == 3
    for path, scene in scenes.items():
        image = cv2.imread(path)
        assert image is not None and image.shape[0] > 100 and image.shape[1] > 300
    per_view = {}
    for scene in summary["scenes"]:
        for row in scene["rows"]:
            per_view.setdefault((row["scene"], row["target"]), []).append(row["iou"])
    assert {s for s, _ in per_view} == {"synthetic_0", "synthetic_1", "middlebury_motorcycle"}
    for view, ious in per_view.items():
        assert sum(ious) / len(ious) >= 0.5, (view, ious)
    assert (out / "results.txt").read_text().startswith("backend: geometric")
