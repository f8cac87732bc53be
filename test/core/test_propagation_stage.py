"""Masks at camera rate on the set processor (vggts_ros.propagation_stage): every target
frame between cross-view results gets the masks moved to it, says it was propagated and
from how old a result, a late cross-view result replaces it, a lost or too old track is
not published as good, and the refresh schedule limits the cross-view work."""

import pytest

from helpers.oracle_backend import OracleSegmentor
from vggts_ros.metrics import iou
from vggts_ros.propagation import PropagationConfig
from vggts_ros.propagation_stage import PropagationStage
from vggts_ros.registry import ObjectRegistry
from vggts_ros.sequences import load_sequence
from vggts_ros.set_processor import CameraFrame, SetProcessor


@pytest.fixture(scope="module")
def seq():
    return load_sequence("moving:0/2s")


@pytest.fixture(scope="module")
def oracle(seq):
    return OracleSegmentor(seq)


class Rig:
    """A registry with the sequence's objects on frame 0 of ego, a set processor with the
    oracle backend, and a propagation stage beside it."""

    def __init__(self, seq, oracle, max_age=2.0, max_pairs=None):
        self.seq = seq
        self.roles = {c: seq.role(c) for c in seq.cameras}
        self.registry = ObjectRegistry()
        img, masks = seq.view(0, "ego")
        for oid in seq.object_ids:
            self.registry.put("ego", f"box {oid}", img, masks[oid], 0.0, oid)
        self.processor = SetProcessor(oracle, self.roles)
        self.stage = PropagationStage(self.roles, PropagationConfig(max_age=max_age), backend="oracle",
                                      max_pairs=max_pairs)

    def objects(self):
        return self.registry.snapshot()[1]

    def frames(self, i):
        return {c: CameraFrame(c, self.seq.stamp(i), self.seq.view(i, c)[0]) for c in self.seq.cameras}

    def cross_view(self, i, now=None):
        objects = self.objects()
        targets = self.stage.choose(self.seq.stamp(i) if now is None else now, objects)
        out = self.processor.process(self.seq.stamp(i), self.frames(i), objects, targets)
        return out

    def frame(self, i, cam):
        return self.stage.frame(CameraFrame(cam, self.seq.stamp(i), self.seq.view(i, cam)[0]), self.objects())


def test_masks_on_every_frame_between_cross_view_results(seq, oracle):
    rig = Rig(seq, oracle)
    assert rig.frame(0, "exo1") is None  # nothing tracked before the first cross-view result
    rig.stage.accept(rig.cross_view(0), {o.object_id: o for o in rig.objects()})
    for i in range(1, 11):
        for cam in ("exo1", "exo2"):
            out = rig.frame(i, cam)
            assert out.camera == cam and out.frame.stamp == seq.stamp(i)
            gt = seq.view(i, cam)[1]
            for o in out.objects:
                assert o.result.path == f"propagated(age={seq.stamp(i):.3f}s, from=oracle)"
                assert o.result.target_points.shape == (5, 2)
                if o.object.object_id in (1, 2):  # never hidden: found and published
                    assert o.area > 0 and o.result.reason == ""
                    assert iou(gt[o.object.object_id], out.labels == o.object.object_id) >= 0.85, (i, cam)
    # the source camera is no target in keyframe mode
    assert rig.frame(11, "ego") is None


def test_a_late_cross_view_result_replaces_the_propagated_one(seq, oracle):
    rig = Rig(seq, oracle)
    objs = {o.object_id: o for o in rig.objects()}
    rig.stage.accept(rig.cross_view(0), objs)
    for i in range(1, 10):
        rig.frame(i, "exo1")
    late = rig.cross_view(5)  # computed on frame 5, arriving while exo1 is at frame 9
    rig.stage.accept(late, objs)
    out = rig.frame(10, "exo1")
    ages = {o.object.object_id: o.result.path for o in out.objects}
    assert all(p == "propagated(age=0.500s, from=oracle)" for p in ages.values()), ages
    gt = seq.view(10, "exo1")[1]
    assert iou(gt[1], out.labels == 1) >= 0.9
    assert rig.stage.refresh_ages(seq.stamp(10))[(1, "exo1")] == pytest.approx(0.5)


def test_too_old_or_lost_is_not_published_as_good(seq, oracle):
    rig = Rig(seq, oracle, max_age=0.35)
    rig.stage.accept(rig.cross_view(0), {o.object_id: o for o in rig.objects()})
    for i in range(1, 6):
        out = rig.frame(i, "exo1")
        for o in out.objects:
            if seq.stamp(i) <= 0.35:
                assert o.area > 0 and o.result.reason == ""
            else:
                assert o.area == 0 and o.result.score == 0.0
                assert o.result.reason.startswith("propagation: age 0.") and "over the deadline 0.35 s" in o.result.reason
                assert not (out.labels == o.object.object_id).any()
    # box 3 goes behind box 1 in exo2: its track loses its points and says so
    rig = Rig(seq, oracle, max_age=None)
    rig.stage.accept(rig.cross_view(6), {o.object_id: o for o in rig.objects()})
    reasons = []
    for i in range(7, 18):
        out = rig.frame(i, "exo2")
        reasons += [o.result.reason for o in out.objects if o.object.object_id == 3]
    assert any(r.startswith("propagation: too few points kept") for r in reasons), reasons


def test_cleared_or_replaced_objects_lose_their_tracks(seq, oracle):
    rig = Rig(seq, oracle)
    rig.stage.accept(rig.cross_view(0), {o.object_id: o for o in rig.objects()})
    assert {o.object.object_id for o in rig.frame(1, "exo1").objects} == {1, 2, 3}
    rig.registry.clear(2)
    img, masks = seq.view(1, "ego")
    rig.registry.put("ego", "box 3 again", img, masks[3], seq.stamp(1), 3)  # replaced: a new generation
    rig.stage.sync_objects(rig.objects(), seq.stamp(2))
    assert {o.object.object_id for o in rig.frame(2, "exo1").objects} == {1}
    assert sorted(rig.stage.scheduler.pairs) == [(1, "exo1"), (1, "exo2"), (3, "exo1"), (3, "exo2")]


def test_the_schedule_limits_each_cross_view_step(seq):
    oracle = OracleSegmentor(seq)
    rig = Rig(seq, oracle, max_pairs=3)
    rig.stage.sync_objects(rig.objects(), 0.0)
    seen = []
    for step, i in enumerate((0, 3, 6, 9)):
        out = rig.cross_view(i)
        cams = [c.camera for c in out.cameras]
        assert len(cams) == 1 and len(out.cameras[0].objects) == 3  # one target, its three objects
        seen.append(cams[0])
        rig.stage.accept(out, {o.object_id: o for o in rig.objects()})
    assert seen == ["exo1", "exo2", "exo1", "exo2"]  # oldest first: the targets take turns
    ages = rig.stage.refresh_ages(seq.stamp(10))
    assert ages[(1, "exo1")] == pytest.approx(0.4) and ages[(1, "exo2")] == pytest.approx(0.1)
    # the processor computed only what was asked: one backend call per step
    assert oracle.calls == 4


def test_process_limits_targets_per_object(seq, oracle):
    rig = Rig(seq, oracle)
    out = rig.processor.process(0.0, rig.frames(0), rig.objects(), {1: {"exo2"}, 3: {"exo2"}})
    assert [c.camera for c in out.cameras] == ["exo2"]
    assert [o.object.object_id for o in out.cameras[0].objects] == [1, 3]
    everything = rig.processor.process(0.0, rig.frames(0), rig.objects())
    assert [c.camera for c in everything.cameras] == ["exo1", "exo2"]
