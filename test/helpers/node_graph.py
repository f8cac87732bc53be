"""Node test harnesses over real DDS.

``NodeGraph``: the vggts node (or its managed variant) in this process with a camera
player and an output collector, on the weight-free geometric backend and a bundled scene
with exact ground truth. ``serving_node_process``: the node executable as a child process,
with player and collector in this process.

Import only after ``pytest.importorskip("rclpy", ...)``. Test modules take the fixtures
(``ros``, ``scene``, ``graph_factory``) by importing them.
"""

import contextlib
import os
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
import pytest
import rclpy
from rclpy.parameter import Parameter

from vggts_ros import metrics
from vggts_ros.config import CameraConfig, InferenceConfig, ModelConfig, NodeConfig, PublishConfig, SyncConfig
from vggts_ros.geometric import GeometricSegmentor
from vggts_ros.ros import transport
from vggts_ros.ros.node import VGGTSNode
from vggts_ros.ros.player import CameraPlayer, NodeProcess, OutputCollector, PlayedCamera, Spinner, wait_until


@pytest.fixture(scope="module")
def scene():
    from vggts_ros.scenes import synthetic_scene

    return synthetic_scene(seed=0)


@pytest.fixture()
def ros():
    transport.configure()  # this process publishes camera images
    rclpy.init()
    yield
    rclpy.shutdown()


def node_config(scene, name: str, inference: Optional[InferenceConfig] = None,
                diagnostics_period: float = 0.3) -> NodeConfig:
    """One camera per scene view on topics private to ``name``, geometric backend on CPU."""
    return NodeConfig(
        cameras=[CameraConfig(c, f"/{name}_cams/{c}/image_raw", scene.role(c)) for c in scene.views],
        sync=SyncConfig(slop=0.02, queue_size=5, stale_after=1.0),
        model=ModelConfig(backend="geometric", device="cpu"),
        inference=inference or InferenceConfig(),
        publish=PublishConfig(overlay=False, diagnostics_period=diagnostics_period),
    )


class NodeGraph:
    """Node, player (``rate_hz``, the scene's images) and collector, spinning unless ``spin=False``
    (then add nodes of the test's own and call ``spin(*those)``).

    ``name`` gets this process's id appended: another run on the same ROS domain must not
    cross-talk. ``node_factory(name, overrides)`` builds another kind of node.
    """

    def __init__(self, scene, name: str, segmentor=None, inference: Optional[InferenceConfig] = None,
                 extra: Iterable[Parameter] = (), diagnostics_period: float = 0.3,
                 node_factory: Optional[Callable] = None, spin: bool = True, rate_hz: float = 5.0) -> None:
        name = f"{name}_{os.getpid()}"
        self.name = name
        self.scene = scene
        self.cfg = node_config(scene, name, inference, diagnostics_period)
        overrides = [Parameter(k, value=v) for k, v in self.cfg.to_parameters().items()] + list(extra)
        if node_factory is not None:
            self.node = node_factory(name, overrides)
        else:
            self.node = VGGTSNode(name, segmentor=segmentor or GeometricSegmentor(), parameter_overrides=overrides)
        self.player = CameraPlayer([PlayedCamera(c.name, c.topic, scene.image(c.name)) for c in self.cfg.cameras],
                                   rate_hz=rate_hz, name=f"{name}_player")
        self.collector = OutputCollector(name, list(scene.views), name=f"{name}_collector")
        self.extra_nodes = []
        self.spinner = None
        if spin:
            self.spin()

    def spin(self, *extra_nodes) -> "NodeGraph":
        self.extra_nodes = list(extra_nodes)
        self.spinner = Spinner(self.node, self.player, self.collector, *extra_nodes)
        return self

    def status(self, camera=None):
        return (self.collector.camera_status(camera) if camera else self.collector.pipeline_status()) or {}

    def set_object(self, oid=1):
        assert wait_until(lambda: len(self.player.stamps) >= 2, 20)
        assert wait_until(lambda: self.node.history.latest("ego") is not None, 20)
        resp = self.collector.set_source_mask("ego", self.scene.mask("ego", oid), object_id=oid)
        assert resp.success, resp.message

    def masks_since(self, camera, t):
        with self.collector._lock:
            return [r for r in self.collector.masks[camera] if r.arrival > t]

    def close(self) -> None:
        if self.spinner is not None:
            self.spinner.close()
        for n in [self.node, self.player, self.collector] + self.extra_nodes:
            n.destroy_node()


@pytest.fixture()
def graph_factory(ros):
    """``make(scene, name, **NodeGraph options)``; every graph made is closed afterwards."""
    made = []

    def make(*args, **kwargs):
        made.append(NodeGraph(*args, **kwargs))
        return made[-1]

    yield make
    for g in made:
        g.close()


def labels(msg) -> np.ndarray:
    """A published mono8 label image as a (height, width) array."""
    return np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width)


def iou_on(received, scene, camera, oid=1, truth_oid=None):
    """IoU of object ``oid`` in a received mask with the scene's ground truth of
    ``truth_oid`` (default: the same id) in ``camera``."""
    return metrics.iou(scene.mask(camera, oid if truth_oid is None else truth_oid), labels(received.msg) == oid)


@contextlib.contextmanager
def serving_node_process(node: NodeProcess, cameras: Sequence[PlayedCamera], outputs_of: str,
                         player_name: str = "vggts_player", collector_name: str = "vggts_collector"):
    """Start ``node`` (rclpy is initialised here), play ``cameras`` at 5 Hz and collect the
    outputs of the node named ``outputs_of``; yields ``(player, collector)`` once the node
    serves and reports frames from every camera. Afterwards everything stops and the
    node must have exited with 0 (its log tail is in every failure message)."""
    transport.configure()  # this process publishes camera images
    rclpy.init()
    node.start()
    names = [c.name for c in cameras]
    player = CameraPlayer(list(cameras), rate_hz=5.0, name=player_name)
    collector = OutputCollector(outputs_of, names, name=collector_name)
    spinner = Spinner(player, collector)
    try:
        ok = wait_until(lambda: collector._set.service_is_ready() or not node.alive(), 120)
        assert ok and node.alive(), f"node did not come up:\n{node.log()[-4000:]}"
        assert collector.wait_for_frames(names, 30), (
            # None: no diagnostics reached this process; else the node's own per-camera counts
            f"node received no frames: {({n: collector.camera_status(n) for n in names})}, player sent "
            f"{len(player.stamps)} ticks, {player.count_subscribers(cameras[0].topic)} subscriber(s) on {cameras[0].topic}:\n{node.log()[-4000:]}")
        yield player, collector
    finally:
        spinner.close()
        code = node.stop()
        player.destroy_node()
        collector.destroy_node()
        rclpy.shutdown()
    assert code == 0, f"node exited with {code}:\n{node.log()[-4000:]}"
