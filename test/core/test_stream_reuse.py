"""Stream reuse (``PipelineConfig.stream_reuse``): which sets skip the first backbone pass,
and the fall-backs to a full pass (every N sets, low or dropping score), with the
``test-tiny`` preset. Backbone passes are counted with forward hooks on the real model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from vggts_ros.config import PipelineConfig
from vggts_ros.pipeline import VGGTSegmentor
from vggts_ros.stream import StreamStep
from vggts_ros.stream_reuse import StreamReuse
from vggts_ros.types import TargetView


def noise(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.kron(base, np.ones((8, 8, 1), np.uint8))[:h, :w])


SOURCE = noise(120, 160, 0)
MASK = np.zeros((120, 160), np.uint8)
MASK[30:70, 40:90] = 1
EXO = TargetView(noise(150, 200, 1), role="exo", name="exo1")


@pytest.fixture(scope="module")
def base() -> VGGTSegmentor:
    return VGGTSegmentor.deterministic("test-tiny", PipelineConfig(), device="cpu")


class Reusing:
    """A segmentor with stream reuse on and the stream state of one video."""

    def __init__(self, base: VGGTSegmentor, **cfg) -> None:
        options = dict(stream_reuse=True, reuse_full_every=3, reuse_min_score=0.0, reuse_max_drop=1.0)
        options.update(cfg)
        self.seg = VGGTSegmentor(base.backbone, base.head, PipelineConfig(**options))
        self.state = self.seg.init_stream()
        self.sets = 0

    @property
    def reuse(self) -> StreamReuse:
        return self.state.reuse

    def segment(self, masks=(MASK,), targets=(EXO,), ids=None):
        self.sets += 1
        ids = list(ids or range(1, len(masks) + 1))
        return self.seg.segment_objects(SOURCE, list(masks), list(targets), state=self.state,
                                        step=StreamStep(0.1 * self.sets, ids))


def reusing(base: VGGTSegmentor, **cfg) -> Reusing:
    return Reusing(base, **cfg)


def backbone_passes(seg: Reusing, targets, masks=(MASK,), ids=None):
    """(results, number of backbone passes) of one set."""
    calls = []
    handle = seg.seg.backbone.register_forward_hook(lambda *_: calls.append(1))
    try:
        res = seg.segment(masks, targets, ids)
    finally:
        handle.remove()
    return res, len(calls)


def test_confident_target_skips_the_first_pass_and_a_full_pass_comes_every_n_sets(base):
    seg = reusing(base, reuse_full_every=3)
    passes, reused = [], []
    for _ in range(5):
        res, n = backbone_passes(seg, [EXO])
        assert res[0][0].mask.any()  # reuse needs a previous mask
        assert res[0][0].mask.shape == EXO.image.shape[:2] and 0 <= res[0][0].score <= 1
        passes.append(n)
        reused.append(seg.reuse.last_reused[0])
    # full (first pass + features), reuse, reuse, full (3 sets since the last), reuse
    assert reused == [False, True, True, False, True]
    assert passes == [2, 1, 1, 2, 1]


def test_reused_set_differs_from_full_and_the_option_is_off_by_default(base):
    assert PipelineConfig().stream_reuse is False
    full = base.segment(SOURCE, MASK, [EXO])[0]
    seg = reusing(base)
    first = seg.segment()[0][0]
    assert np.array_equal(first.logits, full.logits)  # a full pass is the plain pipeline
    second = seg.segment()[0][0]
    assert seg.reuse.last_reused == [True]
    assert np.isfinite(second.logits).all() and second.target_points.shape == (5, 2)
    assert (second.target_points >= 0).all()
    assert (second.target_points[:, 0] <= 199).all() and (second.target_points[:, 1] <= 149).all()


def test_falls_back_to_a_full_pass_when_the_score_drops(base):
    seg = reusing(base, reuse_full_every=10, reuse_max_drop=0.05)
    res, n = backbone_passes(seg, [EXO])
    assert n == 2
    res, n = backbone_passes(seg, [EXO])
    assert n == 1 and seg.reuse.last_reused == [True]
    # the reused set's result scored 0.2 below the last full pass: the next set is full
    state = seg.reuse
    full_score = state._state["name:exo1"].full_scores[1]
    dropped = [[dataclasses.replace(res[0][0], score=full_score - 0.2)]]
    state.record([1], [EXO], dropped, [True])
    _, n = backbone_passes(seg, [EXO])
    assert n == 2 and state.last_reused == [False]
    # ... and a drop within the margin keeps reusing
    _, n = backbone_passes(seg, [EXO])
    assert n == 1


def test_falls_back_below_the_minimum_score(base):
    seg = reusing(base)
    res, _ = backbone_passes(seg, [EXO])
    score = res[0][0].score
    low = reusing(base, reuse_min_score=min(1.0, score + 0.01))
    backbone_passes(low, [EXO])
    _, n = backbone_passes(low, [EXO])
    assert n == 2 and low.reuse.last_reused == [False]


def test_whole_frame_targets_and_new_targets_run_the_first_pass(base):
    seg = reusing(base)
    ego = TargetView(noise(100, 100, 8), role="ego", name="ego")
    backbone_passes(seg, [EXO, ego])
    _, n = backbone_passes(seg, [EXO, ego])
    assert seg.reuse.last_reused == [True, False] and n == 2  # first pass over the ego target only
    other = TargetView(noise(150, 200, 2), role="exo", name="exo2")
    _, n = backbone_passes(seg, [other])
    assert seg.reuse.last_reused == [False] and n == 2
    # another object count: full pass
    mask_b = np.zeros_like(MASK)
    mask_b[60:110, 100:150] = 1
    _, n = backbone_passes(seg, [other], masks=(MASK, mask_b))
    assert seg.reuse.last_reused == [False]
    _, n = backbone_passes(seg, [other], masks=(MASK, mask_b))
    assert seg.reuse.last_reused == [True] and n == 1  # both objects' features passes batched, no first pass
    # an object removed from the stream state (cleared, or its mask replaced): full pass
    seg.state.remove_object(2)
    _, n = backbone_passes(seg, [other], masks=(MASK, mask_b))
    assert seg.reuse.last_reused == [False] and n == 3  # first passes again (two source squares) + batched features
    # the same masks under other ids are other objects: full pass
    _, n = backbone_passes(seg, [other], masks=(MASK, mask_b), ids=[5, 6])
    assert seg.reuse.last_reused == [False]


def test_a_plain_call_is_stateless_even_with_reuse_on(base):
    seg = reusing(base)
    seg.segment()
    calls = []
    handle = seg.seg.backbone.register_forward_hook(lambda *_: calls.append(1))
    try:
        seg.seg.segment_objects(SOURCE, [MASK], [EXO])
    finally:
        handle.remove()
    assert len(calls) == 2  # no state given: the full pipeline


@pytest.mark.parametrize("field,value",
                         [("reuse_full_every", 0), ("reuse_min_score", 1.5), ("reuse_max_drop", -0.1)])
def test_bad_settings_are_named(field, value):
    args = dict(full_every=5, min_score=0.6, max_drop=0.1)
    args[{"reuse_full_every": "full_every", "reuse_min_score": "min_score", "reuse_max_drop": "max_drop"}[field]] = value
    with pytest.raises(ValueError, match=field):
        StreamReuse(**args)
