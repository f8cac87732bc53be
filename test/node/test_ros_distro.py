"""The ROS 2 distribution under test is the one the environment was built for, and what
differs between rclpy releases (vggts_ros.ros.compat) behaves the same on each.

Run on both CI environments: Kilted (``bash run.sh test``) and Jazzy
(``VGGTS_ROS_DISTRO=jazzy bash run.sh ...``, see .ci/run)."""

import importlib.metadata
import os
import re
import sys
import threading
import time
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (the ROS 2 wheels of requirements-ros*.txt) is not installed")

from helpers.node_graph import graph_factory, ros, scene  # noqa: E402,F401
from vggts_ros.ros import compat  # noqa: E402
from vggts_ros.ros.node import VGGTSNode  # noqa: E402
from vggts_ros.ros.player import Spinner, wait_until  # noqa: E402


def expected_distro() -> str:
    """What run.sh built this environment for: VGGTS_ROS_DISTRO (run.sh exports it), else
    the marker run.sh writes into the environment, else Kilted (environments built before
    the marker existed are Kilted ones, as run.sh assumes too)."""
    marker = Path(sys.prefix) / ".vggts-distro"
    built = marker.read_text().strip() if marker.is_file() else None
    requested = os.environ.get("VGGTS_ROS_DISTRO")
    if requested and built:
        assert requested == built, f"VGGTS_ROS_DISTRO={requested} but {sys.prefix} was built for {built}"
    return requested or built or "kilted"


def installed_rclpy_wheels():
    """{distro: version} of the ``ros-<distro>-rclpy`` wheels installed here."""
    found = {}
    for dist in importlib.metadata.distributions():
        match = re.fullmatch(r"ros-([a-z]+)-rclpy", (dist.metadata["Name"] or "").lower())
        if match:
            found[match.group(1)] = dist.version
    return found


def test_rclpy_is_the_distribution_this_environment_was_built_for():
    want = expected_distro()
    version = compat.rclpy_version()
    assert compat.ros_distro() == want, f"rclpy {version} is not ROS 2 {want}'s (expected major " \
        f"{[m for m, d in compat.DISTRIBUTIONS.items() if d == want]})"
    wheels = installed_rclpy_wheels()
    if not wheels:  # a colcon/apt installation: its setup script names the distribution
        assert os.environ.get("ROS_DISTRO") == want, (os.environ.get("ROS_DISTRO"), want)
        return
    assert set(wheels) == {want}, f"rclpy wheels installed: {wheels}; expected only ros-{want}-rclpy"
    assert int(wheels[want].split(".")[0]) == version[0], (wheels, version)
    # Everything imported comes from this environment: its rclpy, and interfaces generated
    # with this distribution's rosidl (run.sh installs them into the environment).
    import vggts_ros.msg._object_points as generated

    prefix = Path(sys.prefix).resolve()
    for module in (rclpy, generated):
        where = Path(module.__file__).resolve()
        assert prefix in where.parents, f"{module.__name__} from {where}, not from {prefix}"


@pytest.fixture()
def humble_parameters(monkeypatch):
    """Parameters handled as on Humble's rclpy, which has no post-set callbacks: compat is
    told so, and the node class refuses the call outright."""
    def refuse(self, callback):
        raise AssertionError("Humble's rclpy has no add_post_set_parameters_callback")

    monkeypatch.setattr(compat, "has_post_set_parameters_callbacks", lambda: False)
    monkeypatch.setattr(VGGTSNode, "add_post_set_parameters_callback", refuse, raising=False)


def test_live_parameters_apply_and_are_checked_on_the_humble_path(graph_factory, scene, humble_parameters):
    g = graph_factory(scene, "vggts_humble_params")
    assert wait_until(lambda: g.collector._params.service_is_ready(), 20)
    results = g.collector.set_parameters(sync__slop=0.05, inference__max_objects=3)
    assert [r.successful for r in results] == [True, True], [r.reason for r in results]
    assert g.node.sync.slop == 0.05 and g.node.cfg.sync.slop == 0.05
    assert g.node.registry.max_objects == 3
    [bad] = g.collector.set_parameters(inference__source_mode="teleport")
    assert not bad.successful and "teleport" in bad.reason
    [ro] = g.collector.set_parameters(model__backend="vggts")
    assert not ro.successful and "read-only" in ro.reason.lower()
    # Nothing refused was applied, nor stored.
    assert g.node.cfg.inference.source_mode == "keyframe" and g.node.cfg.model.backend == "geometric"
    assert g.node.get_parameter("inference.source_mode").value == "keyframe"


def test_lifecycle_semantics_hold_on_the_humble_path(graph_factory, scene, humble_parameters):
    """test_lifecycle_semantics (parameters set and validated while unconfigured and read
    at configure, refused once configured, backend switched after cleanup) on that path."""
    import test_lifecycle_semantics as semantics

    semantics.test_parameters_cleanup_and_diagnostics_follow_the_lifecycle(graph_factory, scene)


def test_a_closed_spinner_leaves_no_executor_thread_behind(ros):
    """rclpy 7 (Jazzy) and 3 (Humble) do not join a MultiThreadedExecutor's threads in
    shutdown(); compat.shutdown_executor does, as rclpy 9 (Kilted) does itself."""
    before = set(threading.enumerate())
    node = rclpy.create_node(f"vggts_threads_{os.getpid()}")
    ticks = []
    node.create_timer(0.01, lambda: (ticks.append(1), time.sleep(0.02)))
    spinner = Spinner(node)
    assert wait_until(lambda: len(ticks) >= 10, 10), len(ticks)
    spinner.close()
    node.destroy_node()
    left = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert not left, f"threads still running after close: {[t.name for t in left]}"
