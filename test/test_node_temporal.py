"""The node with Temporal VGGT-S on (``inference.temporal``), over real DDS: masks are
published, each (object, camera) memory bank grows set after set, and /diagnostics shows
it restart when the object's source mask is replaced and vanish on clear_objects.

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


def test_memory_banks_grow_and_reset_on_a_replaced_mask_and_on_clear():
    cfg = NodeConfig(
        cameras=[CameraConfig(n, f"{CAMS}/{n}/image_raw", n) for n in SIZES],
        # a set processed more than stale_after after the previous one restarts the memory:
        # generous, so that a loaded test machine does not reset it between sets
        sync=SyncConfig(slop=0.02, queue_size=5, stale_after=30.0),
        model=ModelConfig(backend="vggts", config="test-tiny", device="cpu"),
        inference=InferenceConfig(refine_iterations=1, temporal=True, memory_frames=MEMORY_FRAMES),
        publish=PublishConfig(overlay=False, diagnostics_period=0.3),
    )
    from helpers.node_graph import serving_node_process

    node = NodeProcess(cfg, node_name=NODE)
    cameras = [PlayedCamera(n, f"{CAMS}/{n}/image_raw", textured(*SIZES[n], seed=i)) for i, n in enumerate(SIZES)]
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
