"""The node in deployments (real rclpy over DDS, node in this process, weight-free
geometric backend on a bundled scene with exact ground truth): clocks that loop, drift
or lie, live parameters, clear/replace racing inference, stalls, sim time without
/clock."""

import os
import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ros-kilted-rclpy) is not installed")

from rclpy.parameter import Parameter  # noqa: E402

from vggts_ros import metrics  # noqa: E402
from vggts_ros.config import CameraConfig, InferenceConfig, ModelConfig, NodeConfig, PublishConfig, SyncConfig  # noqa: E402
from vggts_ros.geometric import GeometricSegmentor  # noqa: E402
from vggts_ros.ros import transport  # noqa: E402
from vggts_ros.ros.node import VGGTSNode  # noqa: E402
from vggts_ros.ros.player import CameraPlayer, OutputCollector, PlayedCamera, Spinner, wait_until  # noqa: E402
from vggts_ros.scenes import synthetic_scene  # noqa: E402


@pytest.fixture(scope="module")
def scene():
    return synthetic_scene(seed=0)


@pytest.fixture()
def ros():
    transport.configure()  # this process publishes camera images
    rclpy.init()
    yield
    rclpy.shutdown()


class Graph:
    def __init__(self, scene, name, segmentor=None, extra=(), inference_max_rate=0.0):
        name = f"{name}_{os.getpid()}"  # another run on the same domain must not cross-talk
        cfg = NodeConfig(
            cameras=[CameraConfig(c, f"/{name}_cams/{c}", scene.role(c)) for c in scene.views],
            sync=SyncConfig(slop=0.02, queue_size=5, stale_after=1.0),
            model=ModelConfig(backend="geometric", device="cpu"),
            inference=InferenceConfig(max_rate=inference_max_rate),
            publish=PublishConfig(overlay=False, diagnostics_period=0.3),
        )
        overrides = [Parameter(k, value=v) for k, v in cfg.to_parameters().items()] + list(extra)
        self.scene = scene
        self.node = VGGTSNode(name, segmentor=segmentor or GeometricSegmentor(), parameter_overrides=overrides)
        self.player = CameraPlayer([PlayedCamera(c.name, c.topic, scene.image(c.name)) for c in cfg.cameras],
                                   rate_hz=5.0, name=f"{name}_player")
        self.collector = OutputCollector(name, list(scene.views), name=f"{name}_collector")
        self.spinner = Spinner(self.node, self.player, self.collector)

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

    def close(self):
        self.spinner.close()
        for n in (self.node, self.player, self.collector):
            n.destroy_node()


@pytest.fixture()
def graph_factory(ros):
    made = []

    def make(*args, **kwargs):
        made.append(Graph(*args, **kwargs))
        return made[-1]

    yield make
    for g in made:
        g.close()


def iou_on(received, scene, camera, oid=1):
    msg = received.msg
    pred = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width) == oid
    return metrics.iou(scene.mask(camera, oid), pred)


def test_a_looped_recording_keeps_producing_after_time_jumps_back(graph_factory, scene):
    g = graph_factory(scene, "vggts_loop")
    g.set_object()
    assert wait_until(lambda: g.collector.count("masks", "exo1") >= 2, 60)
    before = g.collector.latest("masks", "exo1").stamp
    g.player.shift_time(-30.0)  # the bag starts again: stamps 30 s earlier
    t_jump = time.monotonic()
    assert wait_until(lambda: len([r for r in g.masks_since("exo1", t_jump) if r.stamp < before - 20]) >= 3, 60), \
        g.status()
    assert int(g.status().get("sync_resets", 0)) >= 1
    looped = [r for r in g.masks_since("exo1", t_jump) if r.stamp < before - 20]
    assert iou_on(looped[-1], scene, "exo1") > 0.5


def test_a_camera_with_an_offset_clock_still_syncs_and_its_offset_is_reported(graph_factory, scene):
    g = graph_factory(scene, "vggts_offset")
    g.player.set_clock_offset("exo2", -0.5)  # exo2 stamps with a clock 0.5 s behind
    g.set_object()
    t0 = time.monotonic()
    assert wait_until(lambda: len(g.masks_since("exo2", t0)) >= 3 and len(g.masks_since("exo1", t0)) >= 3, 60), \
        g.status("exo2")
    # Outputs carry the camera's own stamps, 0.5 s behind exo1's for the same tick.
    assert g.masks_since("exo2", t0)[-1].stamp < g.masks_since("exo1", t0)[-1].stamp - 0.3
    assert wait_until(lambda: g.status("exo2").get("clock_offset_ms", "") != "", 10)
    offset = float(g.status("exo2")["clock_offset_ms"])
    assert 400 < offset < 600, g.status("exo2")
    assert abs(float(g.status("exo1")["clock_offset_ms"])) < 100
    assert float(g.status("exo2")["clock_offset_applied_ms"]) == pytest.approx(offset, abs=60)
    assert iou_on(g.masks_since("exo2", t0)[-1], scene, "exo2") > 0.5


def test_a_future_stamped_message_is_dropped_and_does_not_reduce_the_set_rate(graph_factory, scene):
    g = graph_factory(scene, "vggts_future")
    assert wait_until(lambda: int(g.status().get("sets_received", 0)) >= 5, 30)
    g.player.inject("exo1", time.time() + 1000.0)
    assert wait_until(lambda: g.status("exo1").get("sync_dropped_future") == "1", 10), g.status("exo1")
    ticks0, sets0 = len(g.player.stamps), int(g.status()["sets_received"])
    assert wait_until(lambda: len(g.player.stamps) >= ticks0 + 20, 60)
    time.sleep(1.0)  # the last ticks' sets reach the diagnostics
    ticks, sets = len(g.player.stamps) - ticks0, int(g.status()["sets_received"]) - sets0
    # Every tick still makes a set (a message or two may be lost on a loaded machine).
    assert sets >= ticks - 3, (ticks, sets)


def test_live_parameters_apply_and_read_only_ones_are_refused(graph_factory, scene):
    g = graph_factory(scene, "vggts_params")
    assert wait_until(lambda: g.collector._params.service_is_ready(), 20)
    [ok] = g.collector.set_parameters(inference__max_objects=1)
    assert ok.successful, ok.reason
    g.set_object(1)
    second = g.collector.set_source_mask("ego", scene.mask("ego", 2), object_id=2)
    assert not second.success and "inference.max_objects = 1" in second.message
    [ok] = g.collector.set_parameters(inference__max_objects=8)
    assert ok.successful
    assert g.collector.set_source_mask("ego", scene.mask("ego", 2), object_id=2).success
    [slop] = g.collector.set_parameters(sync__slop=0.05)
    assert slop.successful and g.node.sync.slop == 0.05
    [ro] = g.collector.set_parameters(model__backend="vggts")
    assert not ro.successful and "read-only" in ro.reason.lower()
    [bad_type] = g.collector.set_parameters(sync__slop="wide")
    assert not bad_type.successful and "sync.slop" in bad_type.reason
    [bad_value] = g.collector.set_parameters(inference__source_mode="teleport")
    assert not bad_value.successful and "teleport" in bad_value.reason
    assert g.node.sync.slop == 0.05 and g.node.cfg.inference.source_mode == "keyframe"


class Gate:
    """The geometric backend, held inside ``segment`` until released."""

    name = "geometric"

    def __init__(self):
        self.inner = GeometricSegmentor()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def segment(self, *args, **kwargs):
        self.entered.set()
        self.release.wait(60)
        return self.inner.segment(*args, **kwargs)


def test_clear_or_replace_during_inference_publishes_nothing_stale(graph_factory, scene):
    gate = Gate()
    g = graph_factory(scene, "vggts_race", segmentor=gate)
    g.set_object(1)
    assert wait_until(lambda: g.collector.count("points", "exo1") >= 1, 60)
    # Hold a set in inference, clear everything, then let it finish.
    gate.release.clear()
    gate.entered.clear()
    assert gate.entered.wait(30)
    time.sleep(1.0)  # outputs of the sets before the held one finish arriving
    t_clear = time.monotonic()  # nothing else can be published while the gate holds the worker
    assert g.collector.clear_objects(0).success
    gate.release.set()
    time.sleep(2.0)
    with g.collector._lock:
        after = [r.msg for r in g.collector.points["exo1"] if r.arrival > t_clear]
        masks = [r.msg for r in g.collector.masks["exo1"] if r.arrival > t_clear]
    # Exactly the explicit "cleared" output: no objects, an all-zero mask.
    assert [len(p.objects) for p in after] == [0], [len(p.objects) for p in after]
    assert len(masks) == 1 and not np.frombuffer(bytes(masks[0].data), np.uint8).any()
    assert int(g.status().get("sets_discarded_stale", 0)) >= 1 or wait_until(
        lambda: int(g.status().get("sets_discarded_stale", 0)) >= 1, 5)

    # Replace object 1 while a set for the old one is in inference: its result is dropped.
    g.set_object(1)
    assert wait_until(lambda: g.collector.count("points", "exo1") >= 2, 60)
    gate.release.clear()
    gate.entered.clear()
    assert gate.entered.wait(30)
    time.sleep(1.0)
    discarded = g.node.health.stale_discarded
    other = scene.mask("ego", 2)
    t_replace = time.monotonic()
    assert g.collector.set_source_mask("ego", other, object_id=1).success
    gate.release.set()
    assert wait_until(lambda: len(g.masks_since("exo1", t_replace)) >= 1, 60)
    assert g.node.health.stale_discarded == discarded + 1
    # Every mask published after the replace shows the new object (ground truth id 2).
    for received in g.masks_since("exo1", t_replace):
        assert iou_on(received, scene, "exo1", oid=1) < 0.2
        msg = received.msg
        pred = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width) == 1
        assert metrics.iou(scene.mask("exo1", 2), pred) > 0.5


def test_a_stall_turns_diagnostics_to_error_and_recovery_back(graph_factory, scene):
    g = graph_factory(scene, "vggts_stall")
    g.set_object()
    assert wait_until(lambda: g.collector.count("masks", "exo1") >= 2, 60)
    assert wait_until(lambda: g.collector.pipeline_level() == 0, 10), g.status()
    for cam in scene.views:
        g.player.pause(cam)
    assert wait_until(lambda: g.collector.pipeline_level() == 2, 10), g.status()
    assert wait_until(lambda: "no output for" in g.collector.pipeline_diagnostic().message, 10), \
        g.collector.pipeline_diagnostic().message
    assert float(g.status()["time_since_output_s"]) > 0
    # The rate is over a window: it falls to zero instead of keeping its last value.
    assert wait_until(lambda: g.status()["rate_hz"] == "0.00", 10)
    for cam in scene.views:
        g.player.pause(cam, False)
    assert wait_until(lambda: g.collector.pipeline_level() == 0, 30), g.status()


def test_diagnostics_keep_coming_with_sim_time_and_no_clock(graph_factory, scene):
    g = graph_factory(scene, "vggts_simtime", extra=[Parameter("use_sim_time", value=True)])
    assert g.node.get_clock().now().nanoseconds == 0  # nobody publishes /clock
    assert wait_until(lambda: len(g.collector.diagnostics) >= 3, 10)
    g.set_object()
    assert wait_until(lambda: g.collector.count("masks", "exo1") >= 2, 60)
    # Diagnostics (steady-clock timer) report the outputs.
    assert wait_until(lambda: int(g.status().get("sets_processed", 0)) >= 1, 10), g.status()


def test_max_rate_processes_the_newest_set_when_its_period_has_passed(graph_factory, scene):
    g = graph_factory(scene, "vggts_maxrate", inference_max_rate=0.25)
    g.set_object()
    assert wait_until(lambda: g.collector.count("points", "exo1") >= 2, 60), g.status()
    with g.collector._lock:
        first, second = [r.stamp for r in g.collector.points["exo1"][:2]]
    # One set per 4 s, and that set is the newest at the time, not the one that was
    # waiting since the previous set (which would be ~0.2-0.5 s later).
    assert second - first > 3.0, (first, second)


def test_a_ros_time_jump_back_restarts_the_synchroniser(graph_factory, scene):
    from rosgraph_msgs.msg import Clock

    g = graph_factory(scene, "vggts_clockjump", extra=[Parameter("use_sim_time", value=True)])
    clock_pub = g.collector.create_publisher(Clock, "/clock", 10)
    assert wait_until(lambda: int(g.status().get("sets_received", 0)) >= 2, 30)
    assert wait_until(lambda: clock_pub.get_subscription_count() >= 1, 10)
    clock_pub.publish(Clock(clock=rclpy.time.Time(seconds=1000).to_msg()))
    assert wait_until(lambda: g.node.get_clock().now().nanoseconds == 1000 * 10**9, 10)
    resets = g.node.sync.resets
    clock_pub.publish(Clock(clock=rclpy.time.Time(seconds=10).to_msg()))  # a looped bag's clock
    assert wait_until(lambda: g.node.sync.resets > resets, 10)
    assert wait_until(lambda: int(g.status().get("sync_resets", 0)) > resets, 10)
