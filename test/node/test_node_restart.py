"""Objects survive a restart (``objects.state_dir``): the node process is killed with SIGKILL
while it infers (an OOM kill, a crash), started again on the same state directory, and the
same objects' masks come back with the same ids without any service call. A truncated state
file, and a state file of a camera set that no longer exists, are moved aside with a message
and never stop the start.

The node runs as its own process (the weight-free backend); cameras and the client are
rclpy nodes in this process, over real DDS."""

import os
import signal
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ros-kilted-rclpy) is not installed")

from helpers.node_graph import labels  # noqa: E402
from vggts_ros import metrics  # noqa: E402
from vggts_ros.config import (CameraConfig, ModelConfig, NodeConfig, ObjectsConfig, PublishConfig,  # noqa: E402
                              SyncConfig)
from vggts_ros.ros import transport  # noqa: E402
from vggts_ros.ros.player import (CameraPlayer, NodeProcess, OutputCollector, PlayedCamera, Spinner,  # noqa: E402
                                  wait_until)
from vggts_ros.scenes import synthetic_scene  # noqa: E402

IDS = {3: 1, 7: 2}  # object id -> the scene object it marks


def config(scene, name, state_dir, names=None) -> NodeConfig:
    rename = names or {c: c for c in scene.views}
    return NodeConfig(
        cameras=[CameraConfig(rename[c], f"/{name}_cams/{c}/image_raw", scene.role(c)) for c in scene.views],
        sync=SyncConfig(slop=0.02, queue_size=5, stale_after=1.0),
        model=ModelConfig(backend="geometric", device="cpu"),
        publish=PublishConfig(overlay=False, diagnostics_period=0.3),
        objects=ObjectsConfig(state_dir=str(state_dir)),
    )


def ids_in(received) -> set:
    return set(np.unique(labels(received.msg)).tolist()) - {0} if received is not None else set()


def test_objects_come_back_after_a_kill_and_bad_state_files_are_set_aside(tmp_path):
    scene = synthetic_scene(seed=0)
    name = f"vggts_restart_{os.getpid()}"
    state = tmp_path / "state"
    cfg = config(scene, name, state)
    transport.configure()
    rclpy.init()
    player = CameraPlayer([PlayedCamera(c.name, c.topic, scene.image(c.name)) for c in cfg.cameras],
                          rate_hz=5.0, name=f"{name}_player")
    collector = OutputCollector(name, list(scene.views), name=f"{name}_collector")
    spinner = Spinner(player, collector)
    nodes = []

    def start(node_cfg):
        node = NodeProcess(node_cfg, node_name=name).start()
        nodes.append(node)
        assert wait_until(lambda: collector.pipeline_status() is not None or not node.alive(), 120), node.log()[-3000:]
        assert node.alive(), f"the node did not start:\n{node.log()[-3000:]}"
        return node

    try:
        node = start(cfg)
        assert collector.wait_for_frames(list(scene.views), 30), node.log()[-3000:]
        for oid, truth in IDS.items():
            resp = collector.set_source_mask("ego", scene.mask("ego", truth), object_id=oid, label=f"box{truth}")
            assert resp.success, resp.message
        assert wait_until(lambda: ids_in(collector.latest("masks", "exo1")) == set(IDS), 90), node.log()[-3000:]
        assert sorted(p.name for p in state.glob("*.npz")) == ["object_3.npz", "object_7.npz"]
        # SIGKILL while it infers (two objects keep the inference thread busy): nothing runs at exit
        os.kill(node.proc.pid, signal.SIGKILL)
        node.proc.wait(timeout=30)
        assert node.proc.returncode == -signal.SIGKILL

        # Start again: the same objects' masks come back, same ids, no service call.
        collector.clear_received()
        t0 = time.monotonic()
        node = start(cfg)
        assert wait_until(lambda: ids_in(collector.latest("masks", "exo1")) == set(IDS), 90), node.log()[-3000:]
        restored_after = time.monotonic() - t0
        got = labels(collector.latest("masks", "exo1").msg)
        for oid, truth in IDS.items():
            assert metrics.iou(scene.mask("exo1", truth), got == oid) > 0.5, (oid, truth)
        assert "restored 2 object(s)" in node.log()
        print(f"start to the first restored mask: {restored_after:.1f} s")
        assert node.stop() == 0, node.log()[-3000:]

        # A truncated state file (a write cut short by the crash of the disk, not ours): moved aside.
        broken = state / "object_3.npz"
        broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])
        collector.clear_received()
        node = start(cfg)
        assert wait_until(lambda: ids_in(collector.latest("masks", "exo1")) == {7}, 90), node.log()[-3000:]
        log = node.log()
        assert "object_3.npz" in log and "moved to" in log, log[-3000:]
        assert not broken.exists() and len(list((state / "rejected").glob("object_3.npz.*"))) == 1
        assert node.stop() == 0, node.log()[-3000:]

        # The camera set changed (ego renamed): its object is set aside, the node serves.
        other = config(scene, name, state, names={"ego": "head", "exo1": "exo1", "exo2": "exo2"})
        node = start(other)
        assert wait_until(lambda: (collector.pipeline_status() or {}).get("objects") == "0", 30)
        log = node.log()
        assert "object_7.npz" in log and "'ego' is not one of this node's cameras" in log, log[-3000:]
        assert not list(state.glob("*.npz"))
        assert node.stop() == 0, node.log()[-3000:]
    finally:
        spinner.close()
        for node in nodes:
            if node.alive():
                node.proc.kill()
                node.proc.wait()
        player.destroy_node()
        collector.destroy_node()
        rclpy.shutdown()
