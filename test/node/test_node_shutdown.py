"""Stopping the node process the ways a robot stops it (SIGTERM from systemd or launch,
SIGINT from a terminal) right after it published: it exits 0 without a native crash, and
it leaves the ROS graph at once (a clean DDS teardown; a crashed participant would stay
listed until its lease runs out).

The node runs as its own process (test-tiny networks, deterministic weights); cameras and
the client are rclpy nodes in this process."""

import os
import signal

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ros-kilted-rclpy) is not installed")

from vggts_ros.config import CameraConfig, InferenceConfig, ModelConfig, NodeConfig, PublishConfig, SyncConfig  # noqa: E402
from vggts_ros.ros.player import NodeProcess, PlayedCamera, wait_until  # noqa: E402

SIZES = {"ego": (120, 160), "exo": (135, 240)}


def image(height, width, seed):
    rng = np.random.default_rng(seed)
    img = np.kron(rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3)), np.ones((8, 8, 1)))
    return img[:height, :width].astype(np.uint8)


def in_graph(peer, name: str) -> bool:
    return any(n == name for n, _ in peer.get_node_names_and_namespaces())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_right_after_output_exits_0_and_leaves_the_graph(sig):
    from helpers.node_graph import serving_node_process

    name = f"vggts_stop_{sig.name.lower()}_{os.getpid()}"
    topics = f"/stop_{sig.name.lower()}_{os.getpid()}"
    cfg = NodeConfig(
        cameras=[CameraConfig(n, f"{topics}/{n}/image_raw", n) for n in SIZES],
        sync=SyncConfig(slop=0.02, queue_size=5, stale_after=30.0),
        model=ModelConfig(backend="vggts", config="test-tiny", device="cpu"),
        inference=InferenceConfig(refine_iterations=1),
        publish=PublishConfig(overlay=False, diagnostics_period=0.2),
    )
    node = NodeProcess(cfg, node_name=name)
    cameras = [PlayedCamera(n, f"{topics}/{n}/image_raw", image(*SIZES[n], seed=i)) for i, n in enumerate(SIZES)]
    with serving_node_process(node, cameras, name, player_name=f"{name}_player",
                              collector_name=f"{name}_collector") as (_, collector):
        mask = np.zeros(SIZES["ego"], np.uint8)
        mask[40:80, 50:110] = 255
        assert collector.set_source_mask("ego", mask, label="box").success
        assert wait_until(lambda: collector.count("masks", "exo") >= 2, 90), node.log()[-3000:]
        # a reliable output just sent (the cleared object's empty result), then the signal
        assert collector.clear_objects(0).success
        assert in_graph(collector, name)
        node.proc.send_signal(sig)
        node.proc.wait(timeout=60)
        log = node.log()
        assert node.proc.returncode == 0, log[-3000:]
        assert "Fatal Python error" not in log and "Traceback" not in log, log[-3000:]
        # gone from the graph well before a lease (Fast DDS: 20 s) could expire
        assert wait_until(lambda: not in_graph(collector, name), 5), "the stopped node is still in the graph"
