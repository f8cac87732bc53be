"""The core (config, models, pipeline, backends, training, CLI) works where ROS is absent:
a child interpreter whose import system refuses every ROS module imports every module
outside vggts_ros.ros (and the demo, a ROS front end) and segments a scene. The static
check of the same rule is test_import_graph.py."""

import subprocess
import sys
import textwrap
from pathlib import Path

from helpers.import_graph import modules

REPO = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import importlib.abc, sys
    BLOCKED = ("rclpy", "rosidl", "rcl_", "sensor_msgs", "std_msgs", "builtin_interfaces",
               "diagnostic_msgs", "geometry_msgs", "vggts_ros.msg", "vggts_ros.srv", "vggts_ros.ros")

    class NoRos(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.startswith(BLOCKED):
                raise ImportError(f"{name} is blocked: this interpreter has no ROS")
            return None

    sys.meta_path.insert(0, NoRos())
    import torch
    torch.set_num_threads(1)
    import importlib
    import vggts_ros, vggts_ros.cli
    for name in sys.argv[1:]:  # every core module of the package
        importlib.import_module(name)
    from vggts_ros.pipeline import VGGTSegmentor
    from vggts_ros.scenes import synthetic_scene
    scene = synthetic_scene(seed=0)
    seg = VGGTSegmentor.deterministic("test-tiny")
    results = seg.segment(scene.image("ego"), scene.mask("ego", 1), scene.target_views())
    assert [r.mask.shape for r in results] == [scene.image(c).shape[:2] for c in scene.targets]
    assert vggts_ros.cli.build_parser().parse_args(["segment", "--source", "a", "--source-mask", "b",
                                                   "--target", "c", "--out", "d"]).command == "segment"
    leaked = sorted(m for m in sys.modules if m.startswith(BLOCKED))
    assert not leaked, leaked
    print("ok")
    """
)


def test_core_imports_and_segments_without_ros():
    core = [m for m in modules(REPO, "vggts_ros") if not (m.startswith("vggts_ros.ros") or m == "vggts_ros.demo")]
    assert {"vggts_ros.config", "vggts_ros.schema", "vggts_ros.errors", "vggts_ros.image_io", "vggts_ros.replay",
            "vggts_ros.training.cli", "vggts_ros.training.arguments", "vggts_ros.parameter_docs"} <= set(core)
    proc = subprocess.run([sys.executable, "-c", CHILD, *core], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok")
