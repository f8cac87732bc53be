"""``vggts segment`` with depth: the object in 3D in the JSON report, as a user runs it (a
subprocess), on a bundled scene whose exact depth stands in for the depth camera; and the
Python API example of docs/geometry.md, run as written."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from test_cli import run_cli, write_rgb

REPO = Path(__file__).resolve().parents[2]
SIZE = (320, 240)


@pytest.fixture(scope="module")
def scene():
    from vggts_ros.scenes import synthetic_scene

    return synthetic_scene(0, ego_size=SIZE, exo_size=SIZE)


@pytest.fixture()
def files(tmp_path, scene):
    write_rgb(tmp_path / "ego.png", scene.image("ego"))
    assert cv2.imwrite(str(tmp_path / "mask.png"), scene.mask("ego", 1).astype(np.uint8) * 255)
    for name in ("exo1", "exo2"):
        write_rgb(tmp_path / f"{name}.png", scene.image(name))
    np.save(tmp_path / "exo1_depth.npy", scene.depth("exo1").astype(np.float32))  # metres
    mm = np.nan_to_num(np.round(scene.depth("exo2") * 1000)).astype(np.uint16)
    assert cv2.imwrite(str(tmp_path / "exo2_depth.png"), mm)  # 16-bit PNG, millimetres
    return tmp_path


def _k(scene, name):
    K = scene.cameras[name].K
    return f"{name}={K[0, 0]},{K[1, 1]},{K[0, 2]},{K[1, 2]}"


def _pose(scene, name):
    from vggts_ros.geometry.boxes import quaternion_from_matrix

    T = scene.cameras["ego"].T_cam_from_world @ scene.cameras[name].T_world_from_cam
    return f"{name}=" + ",".join(f"{v:.12g}" for v in list(T[:3, 3]) + list(quaternion_from_matrix(T[:3, :3])))


def test_segment_reports_the_object_in_3d_per_target_and_fused(files, scene):
    d = files
    proc = run_cli("segment", "--backend", "geometric", "--source", str(d / "ego.png"), "--source-mask",
                   str(d / "mask.png"), "--target", str(d / "exo1.png"), "--target", str(d / "exo2.png"),
                   "--out", str(d / "out"), "--depth", f"exo1={d / 'exo1_depth.npy'}", "--depth",
                   f"exo2={d / 'exo2_depth.png'}", "--intrinsics", _k(scene, "exo1"), "--intrinsics", _k(scene, "exo2"),
                   "--pose", _pose(scene, "exo1"), "--pose", _pose(scene, "exo2"), "--frame", "ego", cwd=d)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    for entry, name in zip(report["targets"], ("exo1", "exo2")):
        o = entry["object3d"]
        truth = scene.surface_points(name, 1).mean(0)
        assert not o["reason"] and o["points"] > 100 and o["cameras"] == [name]
        assert np.linalg.norm(np.array(o["centroid"]) - truth) < 0.01 * np.linalg.norm(truth)
    fused = report["objects3d"]["fused"]
    assert fused["frame"] == "ego" and fused["scale"] == "metric"
    f = fused["objects"][0]
    true_box = scene.box(1, "ego")
    assert sorted(f["cameras"]) == ["exo1", "exo2"]
    assert np.linalg.norm(np.array(f["box_center"]) - true_box.center) < 0.05 * np.linalg.norm(true_box.center)
    assert np.allclose(sorted(f["size"]), sorted(true_box.size), rtol=0.2)


def test_segment_depth_problems_are_one_line_errors_before_the_backend_runs(files, scene, capsys):
    from vggts_ros.cli import main

    d = files
    base = ["segment", "--backend", "geometric", "--source", str(d / "ego.png"), "--source-mask", str(d / "mask.png"),
            "--target", str(d / "exo1.png"), "--out", str(d / "out"), "--intrinsics", _k(scene, "exo1")]
    write_rgb(d / "colour.png", scene.image("exo1"))
    cases = [
        (["--depth", f"exo1={d / 'colour.png'}"], "a depth PNG must be single-channel 16-bit (millimetres)"),
        (["--depth", f"exo9={d / 'exo1_depth.npy'}"], "depth given for unknown camera(s) ['exo9']"),
        (["--depth", f"exo1={d / 'missing.npy'}"], "depth file not found"),
        (["--depth", f"exo1={d / 'exo1_depth.npy'}", "--pose", "exo1=1,2,3"], "--pose exo1: a pose is 7 numbers"),
        (["--intrinsics", "source=500,500"], "--intrinsics source: needs 4 numbers fx,fy,cx,cy"),
    ]
    for extra, message in cases:
        assert main(base + extra) == 2, extra
        err = capsys.readouterr().err
        assert message in err and err.startswith("vggts segment: error:") and "Traceback" not in err, (extra, err)
        assert not (d / "out" / "exo1_mask.png").exists()  # refused before segmenting


def test_the_python_api_example_of_the_docs_runs():
    """docs/geometry.md's results_in_3d example, executed as written."""
    text = (REPO / "docs" / "geometry.md").read_text()
    code = text.split("<!-- example: results_in_3d -->\n```python\n")[1].split("```")[0]
    env: dict = {}
    exec(compile(code, "docs/geometry.md", "exec"), env)  # noqa: S102 - the documentation's own code
    o, scene = env["o"], env["scene"]
    assert o.ok and np.linalg.norm(o.centroid - scene.surface_points("exo1", 1).mean(0)) < 0.01 * np.linalg.norm(
        o.centroid)
    fused = env["located"].fused.get(1)
    assert sorted(fused.cameras) == ["exo1", "exo2"]
    assert np.linalg.norm(fused.box.center - scene.box(1).center) < 0.05 * np.linalg.norm(
        scene.cameras["exo1"].center - scene.box(1).center)
