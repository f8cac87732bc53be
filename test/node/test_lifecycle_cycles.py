"""The managed node survives many deactivate/activate cycles while cameras stream (real
rclpy over DDS, node in this process on a multi-threaded executor, as ``vggts_lifecycle_node``
runs it).

Regression: deactivate used to destroy the camera subscriptions and the publishers. Their QoS
event handlers are waitables; destroying one while the executor's thread was building its
wait set raised ``InvalidHandle`` in that thread, spinning stopped for good and the next
``change_state`` was never answered (found as a rare 30 s timeout in the lifecycle test)."""

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ros-kilted-rclpy) is not installed")
pytest.importorskip("lifecycle_msgs", reason="lifecycle_msgs (ros-kilted-lifecycle-msgs) is not installed")

from helpers.node_graph import NodeGraph, ros  # noqa: E402,F401
from vggts_ros.ros.player import wait_until  # noqa: E402
from vggts_ros.scenes import synthetic_scene  # noqa: E402

CYCLES = 12


def test_deactivate_activate_cycles_under_streaming_keep_the_executor_spinning(ros):
    from lifecycle_msgs.msg import State, Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    from vggts_ros.ros.lifecycle import VGGTSLifecycleNode

    scene = synthetic_scene(seed=0)
    # Fast timers: more entities for the executor to rebuild its wait set around.
    g = NodeGraph(scene, "vggts_cycles", diagnostics_period=0.05, rate_hz=20.0, spin=False,
                  node_factory=lambda name, overrides: VGGTSLifecycleNode(name, parameter_overrides=overrides))
    name, node, collector = g.name, g.node, g.collector
    change = collector.create_client(ChangeState, f"/{name}/change_state")
    get = collector.create_client(GetState, f"/{name}/get_state")
    spinner = g.spin().spinner

    def transition(tid):
        ok = collector._call(change, ChangeState.Request(transition=Transition(id=tid)), 30).success
        assert ok, f"transition {tid} refused"
        assert spinner._thread.is_alive(), "the executor stopped spinning"
        return collector._call(get, GetState.Request(), 10).current_state.id

    try:
        assert wait_until(lambda: change.service_is_ready() and get.service_is_ready(), 20)
        assert transition(Transition.TRANSITION_CONFIGURE) == State.PRIMARY_STATE_INACTIVE
        for cycle in range(CYCLES):
            assert transition(Transition.TRANSITION_ACTIVATE) == State.PRIMARY_STATE_ACTIVE, f"cycle {cycle}"
            if cycle == 0:
                assert wait_until(lambda: node.history.latest("ego") is not None, 30), "no camera frame"
                resp = collector.set_source_mask("ego", scene.mask("ego", 1), object_id=1)
                assert resp.success, resp.message
            before = sum(collector.count("masks", c) for c in ("exo1", "exo2"))
            # Active for real: frames arrive and outputs come out in every cycle.
            assert wait_until(lambda: sum(collector.count("masks", c) for c in ("exo1", "exo2")) > before, 60), \
                f"no output in cycle {cycle}"
            assert transition(Transition.TRANSITION_DEACTIVATE) == State.PRIMARY_STATE_INACTIVE, f"cycle {cycle}"
        # Images that arrive while inactive are ignored, not queued for the next activate.
        latest = node.history.latest("ego")
        wait_until(lambda: False, 0.5)
        assert node.history.latest("ego") is latest
        assert spinner._thread.is_alive()
    finally:
        g.close()
