"""The node with Temporal VGGT-S on (``inference.temporal``), over real DDS: masks are
published, each (object, camera) memory bank grows set after set, and /diagnostics shows
it restart when the object's source mask is replaced and vanish on clear_objects; with
the untrained memory (zero gate) the node publishes exactly what it publishes with
temporal off (points, scores, areas and mask bytes of the first sets).

The node runs as its own process (test-tiny networks, deterministic weights, untrained
memory: a zero gate, so its masks are the per-frame ones); cameras and the client are
rclpy nodes in this process."""

import os
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ros-kilted-rclpy) is not installed")

from vggts_ros.config import CameraConfig, InferenceConfig, ModelConfig, NodeConfig, PublishConfig, SyncConfig  # noqa: E402
from vggts_ros.ros.player import NodeProcess, PlayedCamera, wait_until  # noqa: E402

SIZES = {"ego": (240, 320), "exo": (270, 480)}
NODE = f"vggts_temporal_{os.getpid()}"
CAMS = f"/temporal_cams_{os.getpid()}"
MEMORY_FRAMES = 3


def textured(height, width, seed):
    rng = np.random.default_rng(seed)
    import cv2

    coarse = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3)).astype(np.float32)
    image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)
    image[height // 3:height // 3 + height // 4, width // 3:width // 3 + width // 4] = (240, 60, 40)
    return image.clip(0, 255).astype(np.uint8)


def box(y0, y1, x0, x1):
    h, w = SIZES["ego"]
    mask = np.zeros((h, w), np.uint8)
    mask[y0:y1, x0:x1] = 255
    return mask


def temporal_rig(name: str, topics: str, temporal: bool):
    """The node process (test-tiny, temporal on or off, untrained memory) and its two
    static cameras publishing under ``topics``."""
    cfg = NodeConfig(
        cameras=[CameraConfig(n, f"{topics}/{n}/image_raw", n) for n in SIZES],
        # a set processed more than stale_after after the previous one restarts the memory:
        # generous, so that a loaded test machine does not reset it between sets
        sync=SyncConfig(slop=0.02, queue_size=5, stale_after=30.0),
        model=ModelConfig(backend="vggts", config="test-tiny", device="cpu"),
        inference=InferenceConfig(refine_iterations=1, temporal=temporal, memory_frames=MEMORY_FRAMES),
        publish=PublishConfig(overlay=False, diagnostics_period=0.3),
    )
    cameras = [PlayedCamera(n, f"{topics}/{n}/image_raw", textured(*SIZES[n], seed=i)) for i, n in enumerate(SIZES)]
    return NodeProcess(cfg, node_name=name), cameras


def test_memory_banks_grow_and_reset_on_a_replaced_mask_and_on_clear():
    from helpers.node_graph import serving_node_process

    node, cameras = temporal_rig(NODE, CAMS, temporal=True)
    with serving_node_process(node, cameras, NODE, player_name=f"{NODE}_player",
                              collector_name=f"{NODE}_collector") as (_, collector):
        assert wait_until(lambda: (collector.pipeline_status() or {}).get("temporal") == "true", 20)

        resp = collector.set_source_mask("ego", box(80, 140, 107, 187), label="box")
        assert resp.success, resp.message
        oid = resp.object_id
        size_key, writes_key = f"memory_bank_{oid}/exo", f"memory_writes_{oid}/exo"

        def writes():
            return int((collector.pipeline_status() or {}).get(writes_key, -1))

        # masks are published and the bank fills set after set (K recent + the first at most)
        assert wait_until(lambda: collector.count("masks", "exo") >= 1 and writes() >= MEMORY_FRAMES + 1, 120), \
            (collector.pipeline_status(), node.log()[-3000:])
        status = collector.pipeline_status()
        assert 1 <= int(status[size_key]) <= MEMORY_FRAMES + 1
        assert set(k for k in status if k.startswith("memory_bank_")) == {size_key}  # only the target camera

        # the same object with a replaced source mask: its memory restarts (writes fall)
        before = writes()
        replaced = collector.set_source_mask("ego", box(70, 150, 100, 200), object_id=oid, label="box")
        assert replaced.success and "replaced" in replaced.message, replaced.message
        assert wait_until(lambda: 1 <= writes() < before, 60), (before, collector.pipeline_status())
        assert wait_until(lambda: writes() >= 2, 60)  # and grows again

        # clear: the stream is gone from the diagnostics
        assert collector.clear_objects(0).success
        assert wait_until(lambda: not any(k.startswith("memory_") for k in (collector.pipeline_status() or {"x": 0})
                                          ) and collector.pipeline_status().get("objects") == "0", 30), \
            collector.pipeline_status()
        time.sleep(1.0)  # a set in flight during the clear must not bring the stream back
        assert not any(k.startswith("memory_") for k in collector.pipeline_status())
        assert node.alive()


def _first_outputs(temporal: bool, n: int = 3):
    """The node (temporal on or off, untrained memory) on a static rig: the first ``n``
    outputs for the exo camera after one object is set, as (objects repr, mask bytes)."""
    from helpers.node_graph import serving_node_process

    name = f"vggts_identity_{'on' if temporal else 'off'}_{os.getpid()}"
    topics = f"/identity_{'on' if temporal else 'off'}_{os.getpid()}"
    node, cameras = temporal_rig(name, topics, temporal)
    with serving_node_process(node, cameras, name, player_name=f"{name}_player",
                              collector_name=f"{name}_collector") as (_, collector):
        assert collector.set_source_mask("ego", box(80, 140, 107, 187), label="box").success

        def outputs():
            with collector._lock:
                points = [r for r in collector.points["exo"] if r.msg.objects]
            pairs = [(p, collector.at_stamp("masks", "exo", p.stamp)) for p in points]
            return [(repr(list(p.msg.objects)), bytes(m.msg.data)) for p, m in pairs if m is not None][:n]

        assert wait_until(lambda: len(outputs()) >= n, 120), node.log()[-3000:]
        if temporal:  # the memory was really written and read: the bank holds more than one entry
            assert wait_until(lambda: int((collector.pipeline_status() or {}).get("memory_writes_1/exo", 0)) >= n, 60)
        return outputs()


def test_temporal_on_with_untrained_memory_publishes_exactly_what_off_publishes():
    off, on = _first_outputs(False), _first_outputs(True)
    assert any(np.frombuffer(mask, np.uint8).any() for _, mask in off), "the object was not found at all"
    for i, ((objects_off, mask_off), (objects_on, mask_on)) in enumerate(zip(off, on)):
        assert objects_on == objects_off, f"output {i}: points, scores or areas differ"
        assert mask_on == mask_off, f"output {i}: mask differs"
