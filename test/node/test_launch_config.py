"""The launch file, the shipped parameter files and the node's parameters agree."""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vggts_ros.config import (DEPRECATED_PARAMETERS, PARAMETERS, NodeConfig, flatten_parameters, load_node_config,
                              load_params_file)

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch" / "multicam.launch.py"
CONFIGS = sorted((REPO / "config").glob("*.yaml"))


def _calls(tree, name):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", None)) == name]


def _kw(call, key):
    for kw in call.keywords:
        if kw.arg == key:
            return ast.literal_eval(kw.value) if isinstance(kw.value, ast.Constant) else kw.value
    return None


def test_launch_file_starts_the_packaged_executable_with_a_params_file():
    tree = ast.parse(LAUNCH.read_text())
    nodes = _calls(tree, "Node")
    assert len(nodes) == 1
    assert _kw(nodes[0], "package") == "vggts_ros"
    assert _kw(nodes[0], "executable") == "vggts_node"
    declared = {ast.literal_eval(c.args[0]) for c in _calls(tree, "DeclareLaunchArgument") if isinstance(c.args[0], ast.Constant)}
    assert {"params_file", "namespace", "node_name", "topic_remaps"} <= declared
    # The default parameters file is the shipped multicam.yaml, installed to share/.
    assert "/config/multicam.yaml" in LAUNCH.read_text()
    assert (REPO / "config" / "multicam.yaml").is_file()
    cmake = (REPO / "CMakeLists.txt").read_text()
    programs = re.search(r"install\(PROGRAMS ([^)]*) DESTINATION lib/\$\{PROJECT_NAME\}\)", cmake)
    assert programs, "CMakeLists.txt installs no programs to lib/${PROJECT_NAME} (ros2 run / launch need them)"
    assert "scripts/vggts_node" in programs.group(1).split()
    assert "install(DIRECTORY launch config DESTINATION share/${PROJECT_NAME})" in cmake
    assert "vggts_node = vggts_ros.ros.node:main" in (REPO / "setup.py").read_text()


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_yaml_is_complete_and_valid(path):
    cfg = load_node_config(str(path))
    assert len(cfg.cameras) >= 3
    documented = set(load_params_file(str(path)))
    expected = set(cfg.to_parameters()) - set(DEPRECATED_PARAMETERS)  # old spellings: accepted, not shipped
    assert documented == expected, f"missing: {sorted(expected - documented)}; unknown: {sorted(documented - expected)}"


def test_unknown_or_invalid_parameters_are_refused_by_name(tmp_path):
    tree = yaml.safe_load((REPO / "config" / "multicam.yaml").read_text())
    tree["/**"]["ros__parameters"]["sync"]["slopp"] = 0.1
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(tree))
    with pytest.raises(ValueError, match="sync.slopp"):
        load_node_config(str(bad))
    tree["/**"]["ros__parameters"]["sync"].pop("slopp")
    tree["/**"]["ros__parameters"]["camera"]["exo1"]["role"] = "satellite"
    bad.write_text(yaml.safe_dump(tree))
    with pytest.raises(ValueError, match="camera.exo1.role"):
        load_node_config(str(bad))


rclpy = pytest.importorskip("rclpy", reason="rclpy (ros-kilted-rclpy) is not installed")
from vggts_ros.ros.node import VGGTSNode  # noqa: E402


def test_node_declares_exactly_the_config_parameters():
    from rclpy.parameter import Parameter

    params = load_params_file(str(REPO / "config" / "multicam.yaml"))
    params["model.backend"] = "geometric"
    rclpy.init()
    try:
        node = VGGTSNode(parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        try:
            names = {n for n in node.list_parameters([], 10).names
                     if n not in ("use_sim_time", "start_type_description_service") and not n.startswith("qos_overrides.")}
            assert names == set(params) | set(DEPRECATED_PARAMETERS)  # old spellings are still accepted
            for key, value in params.items():
                assert node.get_parameter(key).value == value, key
            assert [c.name for c in node.cfg.cameras] == ["ego", "exo1", "exo2"]
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown()


def test_node_descriptors_deprecated_precision_and_geometric_settings(caplog):
    """The node's descriptors are the declarations' (text, live or not, range); model.dtype is
    folded into inference.precision with a warning; model.geometric.* (arrays included)
    reach the geometric backend the node builds."""
    import logging

    from rclpy.parameter import Parameter

    params = load_params_file(str(REPO / "config" / "multicam.yaml"))
    params.update({"model.backend": "geometric", "model.dtype": "bfloat16", "model.geometric.ratio": 0.7,
                   "model.geometric.tilts": [1.0, 3.0], "model.geometric.colour_bins": [2, 8, 8]})
    rclpy.init()
    try:
        with caplog.at_level(logging.WARNING, logger="vggts_ros.config"):
            node = VGGTSNode(parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        try:
            assert "model.dtype is deprecated: use inference.precision" in caplog.text
            assert node.cfg.inference.precision == "bf16" and node.cfg.model.dtype == ""
            seg = node.segmentor.config
            assert (seg.ratio, seg.tilts, seg.colour_bins) == (0.7, (1.0, 3.0), (2, 8, 8))
            slop, ratio, backend, role = node.describe_parameters(
                ["sync.slop", "model.geometric.ratio", "model.backend", "camera.exo1.role"])
            assert slop.description == PARAMETERS["sync.slop"][0]  # live: no read-only note
            assert (slop.floating_point_range[0].from_value, slop.floating_point_range[0].to_value) == (1e-6, 10.0)
            assert ratio.description.startswith("Lowe's ratio test threshold (read-only")
            assert ratio.floating_point_range[0].to_value == 1.0
            assert backend.description.startswith(PARAMETERS["model.backend"][0] + " (read-only")
            assert role.description.startswith("exo/aerial/ground targets are cropped")
            [bad] = node.set_parameters([Parameter("sync.slop", value=20.0)])
            assert not bad.successful and node.cfg.sync.slop == 0.05
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown()


def _run_node_with(tmp_path, section, key, value):
    """Start the node executable on multicam.yaml with one parameter changed."""
    tree = yaml.safe_load((REPO / "config" / "multicam.yaml").read_text())
    tree["/**"]["ros__parameters"][section][key] = value
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tree))
    return subprocess.run([sys.executable, "-m", "vggts_ros.ros.node", "--ros-args", "--params-file", str(params)],
                          capture_output=True, text=True, timeout=120)


def test_console_script_reads_a_params_file_and_refuses_bad_ones(tmp_path):
    proc = _run_node_with(tmp_path, "inference", "source_mode", "teleport")
    assert proc.returncode == 2
    assert "inference.source_mode" in proc.stderr and "teleport" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_checkpoints_stop_the_node_with_a_clear_message(tmp_path):
    proc = _run_node_with(tmp_path, "model", "vggt_checkpoint", str(tmp_path / "nowhere" / "model.pt"))
    assert proc.returncode == 2
    assert "checkpoint file not found" in proc.stderr and "nowhere" in proc.stderr
    # a first-time user without weights learns the option that needs none
    assert "model.backend: geometric" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_launch_description_builds_where_launch_ros_exists():
    try:
        import launch  # noqa: F401
        import launch_ros  # noqa: F401
    except ImportError:
        pytest.skip("launch/launch_ros are not installed (not on PyPI); the launch file was checked statically")
    import importlib.util

    spec = importlib.util.spec_from_file_location("multicam_launch", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    names = {a.name for a in description.entities if hasattr(a, "name") and hasattr(a, "default_value")}
    assert "params_file" in names


def test_node_under_a_namespace_and_another_name_loads_the_shipped_yaml():
    """multicam.yaml is keyed '/**' with relative topics: namespace:=robot1 node_name:=arm
    gets its parameters and subscribes to /robot1/<camera>/image_raw."""
    import numpy as np

    from helpers.node_graph import serving_node_process
    from vggts_ros.ros.player import NodeProcess, PlayedCamera

    ns = f"robot{os.getpid()}"  # another run on the same domain must not cross-talk
    node = NodeProcess(NodeConfig(), node_name=f"{ns}/arm", params_file=str(REPO / "config" / "multicam.yaml"),
                       extra_args=["-p", "model.backend:=geometric", "-p", "model.device:=cpu"])
    rng = np.random.default_rng(0)
    cams = [PlayedCamera(n, f"/{ns}/{n}/image_raw", rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))
            for n in ("ego", "exo1", "exo2")]
    with serving_node_process(node, cams, f"{ns}/arm", player_name=f"{ns}_player",
                              collector_name=f"{ns}_collector") as (player, collector):
        status = collector.camera_status("exo2")
        assert status["topic"] == f"/{ns}/exo2/image_raw"
        assert collector.pipeline_status()["backend"] == "geometric"


def test_device_may_name_a_cuda_index():
    cfg = load_node_config(str(REPO / "config" / "multicam.yaml"))
    cfg.model.device = "cuda:1"
    assert cfg.validate().model.device == "cuda:1"
    for bad in ("cuda:x", "gpu", "cuda:"):
        cfg.model.device = bad
        with pytest.raises(ValueError, match="model.device"):
            cfg.validate()
