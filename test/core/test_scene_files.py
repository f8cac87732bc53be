"""A bundled scene written as PNG files (``python -m vggts_ros.scene_files``): what is read
back is the scene, pixel for pixel."""

import subprocess
import sys

import cv2
import numpy as np

from vggts_ros.scene_files import main, write_scene
from vggts_ros.scenes import synthetic_scene


def test_written_files_read_back_as_the_scene(tmp_path):
    scene = synthetic_scene(1)
    written = write_scene(scene, tmp_path / "s")
    assert set(written) == {c for c in scene.views} | {f"{c}_object{i}" for c in scene.views for i in scene.object_ids}
    for camera in scene.views:
        rgb = cv2.imread(str(written[camera]), cv2.IMREAD_COLOR)[..., ::-1]
        np.testing.assert_array_equal(rgb, scene.image(camera))
        for object_id in scene.object_ids:
            mask = cv2.imread(str(written[f"{camera}_object{object_id}"]), cv2.IMREAD_UNCHANGED)
            assert mask.dtype == np.uint8 and mask.ndim == 2 and set(np.unique(mask)) <= {0, 255}
            np.testing.assert_array_equal(mask == 255, scene.mask(camera, object_id))


def test_command_line_names_a_bad_scene_in_one_line(tmp_path, capsys):
    assert main(["tall:x", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tall:x" in err[0] and "seed must be an integer" in err[0]
    assert not any(tmp_path.iterdir())


def test_module_runs_as_a_script(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "vggts_ros.scene_files", "synthetic:0", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "source ego, targets exo1, exo2, objects [1, 2, 3]; 12 files" in proc.stdout
    assert (tmp_path / "exo2_object3.png").is_file()
