"""The managed node's lifecycle semantics over real DDS (``vggts_lifecycle_node``):

* unconfigured: every parameter may be set and is validated (a bad value is refused, not
  answered "successful" and dropped), and configure reads the current values;
* configured (inactive or active): the non-live parameters are refused with the way to
  change them; between cleanup and configure the backend can be switched;
* cleanup leaves the node as before configure: the backend and the objects are gone;
* diagnostics come in every state and say which (a monitoring stack sees "inactive", not
  silence)."""

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ros-kilted-rclpy) is not installed")
pytest.importorskip("lifecycle_msgs", reason="lifecycle_msgs (ros-kilted-lifecycle-msgs) is not installed")

from rclpy.parameter import Parameter  # noqa: E402

from helpers.node_graph import graph_factory, iou_on, labels, ros, scene  # noqa: E402,F401
from vggts_ros.ros.player import wait_until  # noqa: E402


def test_parameters_cleanup_and_diagnostics_follow_the_lifecycle(graph_factory, scene):
    from lifecycle_msgs.msg import State, Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    from vggts_ros.ros.lifecycle import VGGTSLifecycleNode

    # Built with the learned test backend; the test switches it while unconfigured.
    learned = [Parameter("model.backend", value="vggts"), Parameter("model.config", value="test-tiny")]
    g = graph_factory(scene, "vggts_lifesem", spin=False, diagnostics_period=0.2,
                      node_factory=lambda name, overrides: VGGTSLifecycleNode(name, parameter_overrides=overrides
                                                                              + learned))
    name, node, collector = g.name, g.node, g.collector
    change = collector.create_client(ChangeState, f"/{name}/change_state")
    get = collector.create_client(GetState, f"/{name}/get_state")
    g.spin()

    def transition(tid):
        assert collector._call(change, ChangeState.Request(transition=Transition(id=tid)), 60).success, tid
        return collector._call(get, GetState.Request(), 10).current_state.id

    def state_reported(state):
        return wait_until(lambda: (collector.pipeline_status() or {}).get("state") == state, 10)

    assert wait_until(lambda: change.service_is_ready() and collector._params.service_is_ready(), 20)
    # Unconfigured: diagnostics say so; every parameter is settable and validated.
    assert state_reported("unconfigured"), collector.pipeline_status()
    [bad] = collector.set_parameters(inference__source_mode="teleport")
    assert not bad.successful and "teleport" in bad.reason
    [bad] = collector.set_parameters(model__config="vggt-2b")
    assert not bad.successful and "model.config" in bad.reason
    [ok] = collector.set_parameters(inference__source_mode="track")
    assert ok.successful, ok.reason
    [ok] = collector.set_parameters(inference__refine_iterations=2)  # not live: settable only now
    assert ok.successful, ok.reason
    # Configure reads the values set meanwhile.
    assert transition(Transition.TRANSITION_CONFIGURE) == State.PRIMARY_STATE_INACTIVE
    assert node.cfg.inference.source_mode == "track" and node.cfg.inference.refine_iterations == 2
    assert node.segmentor.name == "vggts" and node.segmentor.cfg.refine_iterations == 2
    assert state_reported("inactive"), collector.pipeline_status()
    # Configured: the backend is fixed until cleanup.
    [ro] = collector.set_parameters(model__backend="geometric")
    assert not ro.successful and "read-only while the node is configured" in ro.reason
    assert "clean up" in ro.reason

    assert transition(Transition.TRANSITION_ACTIVATE) == State.PRIMARY_STATE_ACTIVE
    assert state_reported("active")
    assert wait_until(lambda: node.history.latest("ego") is not None, 20)
    assert collector.set_source_mask("ego", scene.mask("ego", 1), object_id=5).success
    assert wait_until(lambda: collector.count("masks", "exo1") >= 1, 90)

    # Cleanup: as before configure, objects included; the backend can be switched now.
    assert transition(Transition.TRANSITION_DEACTIVATE) == State.PRIMARY_STATE_INACTIVE
    assert transition(Transition.TRANSITION_CLEANUP) == State.PRIMARY_STATE_UNCONFIGURED
    assert node.segmentor is None and len(node.registry) == 0
    assert state_reported("unconfigured")
    results = collector.set_parameters(model__backend="geometric", inference__source_mode="keyframe")
    assert all(r.successful for r in results), [r.reason for r in results]
    assert transition(Transition.TRANSITION_CONFIGURE) == State.PRIMARY_STATE_INACTIVE
    assert node.segmentor.name == "geometric" and node.cfg.inference.source_mode == "keyframe"
    assert transition(Transition.TRANSITION_ACTIVATE) == State.PRIMARY_STATE_ACTIVE
    assert wait_until(lambda: node.history.latest("ego") is not None, 20)
    assert len(node.registry) == 0  # the object of the earlier configuration is gone
    resp = collector.set_source_mask("ego", scene.mask("ego", 1), object_id=1)
    assert resp.success, resp.message
    # the new configuration's object 1 (a mask of object 5 computed before the cleanup may
    # still be on its way through DDS on a loaded machine)
    assert wait_until(lambda: collector.latest("masks", "exo1") is not None
                      and (labels(collector.latest("masks", "exo1").msg) == 1).any(), 90)
    assert iou_on(collector.latest("masks", "exo1"), scene, "exo1") > 0.5
    assert transition(Transition.TRANSITION_DEACTIVATE) == State.PRIMARY_STATE_INACTIVE
