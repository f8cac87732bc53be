"""``vggts segment`` end to end as a user runs it (a subprocess), with the test-tiny preset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return subprocess.run(
        [sys.executable, "-m", "vggts_ros.cli", *args], cwd=str(cwd), env=env, capture_output=True, text=True,
        timeout=600,
    )


def write_rgb(path: Path, image: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), np.ascontiguousarray(image[..., ::-1]))
    return path


def scene(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 90, np.uint8) + rng.integers(0, 40, (h, w, 3), dtype=np.uint8)
    cv2.rectangle(img, (w // 4, h // 3), (w // 2, 2 * h // 3), (200, 40, 40), -1)
    return img


@pytest.fixture()
def files(tmp_path: Path):
    src = write_rgb(tmp_path / "source.png", scene(120, 160, 0))
    mask = np.zeros((120, 160), np.uint8)
    mask[40:80, 40:80] = 255
    assert cv2.imwrite(str(tmp_path / "source_mask.png"), mask)
    exo = write_rgb(tmp_path / "exo_cam.png", scene(150, 210, 1))
    ego = write_rgb(tmp_path / "ego_cam.png", scene(100, 100, 2))
    return dict(source=src, mask=tmp_path / "source_mask.png", exo=exo, ego=ego, dir=tmp_path)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, f"exit {proc.returncode}; stderr: {proc.stderr}"
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected a one-line message, got: {proc.stderr!r}"
    assert "Traceback" not in proc.stderr and lines[0].startswith("vggts segment: error:")
    return lines[0]


def test_segment_writes_masks_and_overlays(files):
    out = files["dir"] / "out"
    proc = run_cli(
        "segment", "--source", str(files["source"]), "--source-mask", str(files["mask"]),
        "--target", str(files["exo"]), "--target", str(files["ego"]),
        "--target-role", "exo", "--target-role", "ego",
        "--out", str(out), "--config", "test-tiny", "--device", "cpu", cwd=files["dir"],
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["backend"] == "vggts" and summary["config"] == "test-tiny"
    assert [t["role"] for t in summary["targets"]] == ["exo", "ego"]
    for stem, (h, w) in (("exo_cam", (150, 210)), ("ego_cam", (100, 100))):
        mask = cv2.imread(str(out / f"{stem}_mask.png"), cv2.IMREAD_UNCHANGED)
        assert mask is not None and mask.shape == (h, w) and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 255}
        overlay = cv2.imread(str(out / f"{stem}_overlay.png"), cv2.IMREAD_COLOR)
        assert overlay is not None and overlay.shape == (h, w, 3)
        entry = next(t for t in summary["targets"] if Path(t["target"]).stem == stem)
        assert entry["area"] == int((mask > 0).sum())
        assert len(entry["points"]) == 5


def test_unreadable_file(files):
    bad = files["dir"] / "broken.png"
    bad.write_bytes(b"this is not a PNG")
    proc = run_cli("segment", "--source", str(bad), "--source-mask", str(files["mask"]), "--target",
                   str(files["exo"]), "--out", str(files["dir"] / "o"), "--config", "test-tiny", "--device", "cpu",
                   cwd=files["dir"])
    line = one_line_error(proc)
    assert "broken.png" in line and "cannot read" in line

    proc = run_cli("segment", "--source", str(files["source"]), "--source-mask", str(files["mask"]), "--target",
                   str(files["dir"] / "missing.png"), "--out", str(files["dir"] / "o"), "--config", "test-tiny",
                   "--device", "cpu", cwd=files["dir"])
    line = one_line_error(proc)
    assert "missing.png" in line and "not found" in line


def test_mask_size_mismatch(files):
    small = np.zeros((60, 80), np.uint8)
    small[10:30, 10:30] = 255
    assert cv2.imwrite(str(files["dir"] / "small_mask.png"), small)
    proc = run_cli("segment", "--source", str(files["source"]), "--source-mask", str(files["dir"] / "small_mask.png"),
                   "--target", str(files["exo"]), "--out", str(files["dir"] / "o"), "--config", "test-tiny",
                   "--device", "cpu", cwd=files["dir"])
    line = one_line_error(proc)
    assert "80x60" in line and "160x120" in line


def test_empty_mask(files):
    assert cv2.imwrite(str(files["dir"] / "empty_mask.png"), np.zeros((120, 160), np.uint8))
    proc = run_cli("segment", "--source", str(files["source"]), "--source-mask", str(files["dir"] / "empty_mask.png"),
                   "--target", str(files["exo"]), "--out", str(files["dir"] / "o"), "--config", "test-tiny",
                   "--device", "cpu", cwd=files["dir"])
    line = one_line_error(proc)
    assert "empty" in line and "empty_mask.png" in line
    assert not (files["dir"] / "o" / "exo_cam_mask.png").exists()


def test_colour_image_given_as_mask_is_refused(files):
    proc = run_cli("segment", "--source", str(files["source"]), "--source-mask", str(files["source"]),
                   "--target", str(files["exo"]), "--out", str(files["dir"] / "o"), "--config", "test-tiny",
                   "--device", "cpu", cwd=files["dir"])
    line = one_line_error(proc)
    assert "source.png is a colour image, not a mask" in line
    # A grey mask saved with three equal channels is a mask, not a colour image.
    grey3 = np.dstack([cv2.imread(str(files["mask"]), cv2.IMREAD_GRAYSCALE)] * 3)
    assert cv2.imwrite(str(files["dir"] / "mask3.png"), grey3)
    proc = run_cli("segment", "--source", str(files["source"]), "--source-mask", str(files["dir"] / "mask3.png"),
                   "--target", str(files["exo"]), "--out", str(files["dir"] / "o"), "--backend", "geometric",
                   cwd=files["dir"])
    assert proc.returncode == 0, proc.stderr


def test_precision_option_runs_the_same_model_in_float64(files):
    """``--precision float64`` runs the networks in float64 (the machine-independent reference
    mode): the projected points agree with the float32 run to the tracker's float32 drift."""
    points = {}
    for mode in ("float32", "float64"):
        out = files["dir"] / f"out_{mode}"
        proc = run_cli(
            "segment", "--source", str(files["source"]), "--source-mask", str(files["mask"]),
            "--target", str(files["exo"]), "--target-role", "exo", "--precision", mode,
            "--out", str(out), "--config", "test-tiny", "--device", "cpu", cwd=files["dir"],
        )
        assert proc.returncode == 0, proc.stderr
        points[mode] = np.asarray(json.loads(proc.stdout)["targets"][0]["points"], dtype=np.float64)
    assert points["float32"].shape == points["float64"].shape == (5, 2)
    assert np.abs(points["float32"] - points["float64"]).max() < 0.5

    proc = run_cli("segment", "--source", str(files["source"]), "--source-mask", str(files["mask"]),
                   "--target", str(files["exo"]), "--precision", "float16", "--config", "test-tiny", cwd=files["dir"])
    assert proc.returncode == 2 and "--precision" in proc.stderr and "float16" in proc.stderr


def test_set_reaches_the_geometric_backend_and_bad_settings_are_named(tmp_path):
    """`--set model.geometric.<key>=VALUE` tunes the weight-free backend (docs/parameters.md
    names): fewer prompt points come back, an unreachable match count empties the mask."""
    from vggts_ros.scenes import synthetic_scene

    sc = synthetic_scene(seed=0)
    src = write_rgb(tmp_path / "ego.png", sc.image("ego"))
    assert cv2.imwrite(str(tmp_path / "mask.png"), sc.mask("ego", 1).astype(np.uint8) * 255)
    tgt = write_rgb(tmp_path / "exo1.png", sc.image("exo1"))
    base = ["segment", "--source", str(src), "--source-mask", str(tmp_path / "mask.png"), "--target", str(tgt),
            "--backend", "geometric"]

    def run(out, *sets):
        proc = run_cli(*base, "--out", str(tmp_path / out), *[a for s in sets for a in ("--set", s)], cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)["targets"][0]

    three = run("three", "model.geometric.n_points=3")
    assert len(three["points"]) == 3 and three["area"] > 0
    none = run("none", "model.geometric.min_matches=1000000", "model.geometric.fallback=false")
    assert none["area"] == 0
    for sets, message in [(["model.geometric.ratio=2"], "model.geometric.ratio must be in [0.0, 1.0], got 2.0"),
                          (["model.geometric.ratioo=0.5"], "unknown vggts parameter(s): ['model.geometric.ratioo']"),
                          (["model.geometric.grabcut=1"], "model.geometric.grabcut: expected true or false, got 1"),
                          (["inference.precision=fp8"], "inference.precision: 'fp8' is not one of"),
                          (["model.geometric.ratio"], "expected name=value")]:
        proc = run_cli(*base, "--out", str(tmp_path / "bad"), *[a for s in sets for a in ("--set", s)], cwd=tmp_path)
        assert message in one_line_error(proc), proc.stderr


def test_segment_defaults_to_the_backend_that_needs_no_download(files):
    """First contact: no checkpoints at hand, no --backend: the weight-free backend runs
    (``auto``, as replay and demo choose); naming missing weights says how to do without."""
    out = files["dir"] / "auto"
    proc = run_cli("segment", "--source", str(files["source"]), "--source-mask", str(files["mask"]),
                   "--target", str(files["exo"]), "--out", str(out), cwd=files["dir"])
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["backend"] == "geometric"
    proc = run_cli("segment", "--source", str(files["source"]), "--source-mask", str(files["mask"]),
                   "--target", str(files["exo"]), "--out", str(out), "--backend", "vggts",
                   "--vggt-checkpoint", str(files["dir"] / "missing.pt"), "--head-checkpoint",
                   str(files["dir"] / "missing.pth"), cwd=files["dir"])
    line = one_line_error(proc)
    assert "checkpoint file not found" in line and "--backend geometric" in line
