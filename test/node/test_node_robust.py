"""The node in deployments (real rclpy over DDS, node in this process, weight-free
geometric backend on a bundled scene with exact ground truth): clocks that loop, drift
or lie, live parameters, clear/replace racing inference, stalls, sim time without
/clock."""

import threading
import time

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ros-kilted-rclpy) is not installed")

from rclpy.parameter import Parameter  # noqa: E402

from helpers.node_graph import graph_factory, iou_on, labels, ros, scene  # noqa: E402,F401
from vggts_ros.config import InferenceConfig  # noqa: E402
from vggts_ros.geometric import GeometricSegmentor  # noqa: E402
from vggts_ros.ros.player import wait_until  # noqa: E402
from vggts_ros.stream import StatelessSegmentor  # noqa: E402


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


def test_the_stale_limit_follows_the_camera_rate_once_switched_on_live(graph_factory, scene):
    g = graph_factory(scene, "vggts_stalerate")
    assert wait_until(lambda: g.status("exo1").get("stale_after_s") == "1.000", 20), g.status("exo1")
    [bad] = g.collector.set_parameters(sync__stale_periods=-1.0)
    assert not bad.successful and "sync.stale_periods" in bad.reason
    [on] = g.collector.set_parameters(sync__stale_periods=2.0)
    assert on.successful, on.reason
    assert g.node.sync.stale_periods == 2.0
    # 2 frame periods of the 5 Hz cameras (above the 0.25 s floor) replace the fixed 1 s.
    assert wait_until(lambda: g.status("exo1").get("stale_after_s") not in ("", "1.000"), 10), g.status("exo1")
    assert 0.25 <= float(g.status("exo1")["stale_after_s"]) < 1.0, g.status("exo1")
    [off] = g.collector.set_parameters(sync__stale_periods=0.0)
    assert off.successful, off.reason
    assert wait_until(lambda: g.status("exo1").get("stale_after_s") == "1.000", 10), g.status("exo1")


class Gate(StatelessSegmentor):
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
    assert len(masks) == 1 and not labels(masks[0]).any()
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
        assert iou_on(received, scene, "exo1", oid=1, truth_oid=2) > 0.5


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
    g = graph_factory(scene, "vggts_maxrate", inference=InferenceConfig(max_rate=0.25))
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
