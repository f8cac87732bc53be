"""Streaming Temporal VGGT-S in the pipeline (``test-tiny``, deterministic weights).

``PipelineConfig.temporal`` gives ``VGGTSegmentor`` a memory per (object, target camera)
that streaming calls (``segment_objects(..., state=seg.init_stream(), step=StreamStep(...))``) use. Off, or on
with the untrained zero gate, every output is bit-identical to today's per-frame
pipeline; banks fill up to ``memory_frames`` and empty on clear, a new source mask, a
target size change and a stamp going back; trained weights do change the outputs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vggts_ros.config import PipelineConfig
from vggts_ros.models.temporal import save_temporal
from vggts_ros.pipeline import VGGTSegmentor
from vggts_ros.stream import StreamStep
from vggts_ros.types import TargetView


def noise(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.kron(base, np.ones((8, 8, 1), np.uint8))[:h, :w])


SOURCE = noise(120, 160, 0)
MASKS = [np.zeros((120, 160), np.uint8), np.zeros((120, 160), np.uint8)]
MASKS[0][30:70, 40:90] = 1
MASKS[1][60:110, 100:150] = 1


def video(n: int, size=(120, 160)):
    """``n`` sets of two targets (an exo camera that is cropped, an ego one resized)."""
    return [[TargetView(noise(*size, 10 + 2 * k), "exo", "cam_a"), TargetView(noise(126, 126, 11 + 2 * k), "ego", "cam_b")]
            for k in range(n)]


def logits(results):
    return [[r.logits for r in per_object] for per_object in results]


def assert_identical(a, b):
    for ra, rb in zip(a, b):
        for x, y in zip(ra, rb):
            assert x.shape == y.shape and np.array_equal(x, y)


@pytest.fixture(scope="module")
def plain():
    seg = VGGTSegmentor.deterministic("test-tiny", PipelineConfig())
    assert seg.memory is None and seg.init_stream().temporal is None
    return seg


@pytest.fixture(scope="module")
def expected(plain):
    return [logits(plain.segment_objects(SOURCE, MASKS, targets)) for targets in video(4)]


def test_off_ignores_the_stream_and_is_bit_identical(plain, expected):
    state = plain.init_stream()
    assert state.empty
    for k, targets in enumerate(video(4)):
        got = logits(plain.segment_objects(SOURCE, MASKS, targets, state=state, step=StreamStep(0.1 * k, ["a", "b"])))
        assert_identical(got, expected[k])


def test_on_with_zero_gates_is_bit_identical_and_fills_the_banks(expected):
    seg = VGGTSegmentor.deterministic("test-tiny", PipelineConfig(temporal=True, memory_frames=2))
    stream = seg.init_stream()
    state = stream.temporal
    assert state is not None and float(state.module.gate.abs().sum()) == 0.0
    sizes = []
    for k, targets in enumerate(video(4)):
        got = logits(seg.segment_objects(SOURCE, MASKS, targets, state=stream, step=StreamStep(0.1 * k, ["a", "b"])))
        assert_identical(got, expected[k])
        sizes.append({key: s.bank.added for key, s in state.streams.items()})
        assert set(state.bank_sizes()) == {"a/cam_a", "a/cam_b", "b/cam_a", "b/cam_b"}
        # K recent entries at most (plus the first confident one)
        assert all(1 <= n <= 3 for n in state.bank_sizes().values())
    assert [min(s.values()) for s in sizes] == [1, 2, 3, 4]  # every stream was written every set
    # a call without a stream stays stateless
    before = dict(state.bank_sizes())
    assert_identical(logits(seg.segment_objects(SOURCE, MASKS, video(1)[0])), expected[0])
    assert state.bank_sizes() == before
    # a second stream of the same segmentor is independent (its banks start empty)
    other = seg.init_stream()
    assert other.temporal.bank_sizes() == {}
    seg.segment_objects(SOURCE, MASKS, video(1)[0], state=other, step=StreamStep(0.0, ["a", "b"]))
    assert set(other.temporal.bank_sizes().values()) == {1} and state.bank_sizes() == before
    # remove_object / reset drop what the state holds
    stream.remove_object("a")
    assert set(state.bank_sizes()) == {"b/cam_a", "b/cam_b"}
    stream.reset()
    assert state.bank_sizes() == {}


def test_banks_reset_on_clear_new_source_mask_size_change_and_time_going_back():
    seg = VGGTSegmentor.deterministic("test-tiny", PipelineConfig(temporal=True, memory_frames=3))
    stream = seg.init_stream()
    state = stream.temporal
    sets = video(3)

    def step(k, targets, versions=("v1", "v1"), stamp=None):
        seg.segment_objects(SOURCE, MASKS, targets, state=stream,
                            step=StreamStep(0.1 * k if stamp is None else stamp, [1, 2], list(versions)))
        return {key: s.bank.added for key, s in state.streams.items()}

    step(0, sets[0])
    assert set(step(1, sets[1]).values()) == {2}
    # object 2's source mask replaced: its two streams restart, object 1 goes on
    added = step(2, sets[2], versions=("v1", "v2"))
    assert added == {(1, "cam_a"): 3, (1, "cam_b"): 3, (2, "cam_a"): 1, (2, "cam_b"): 1}
    assert state.streams[(2, "cam_a")].resets["source"] == 1
    # cam_a's image changes size: its streams restart, cam_b's go on
    bigger = [TargetView(noise(140, 180, 50), "exo", "cam_a"), sets[0][1]]
    added = step(3, bigger, versions=("v1", "v2"))
    assert added == {(1, "cam_a"): 1, (1, "cam_b"): 4, (2, "cam_a"): 1, (2, "cam_b"): 2}
    assert state.streams[(1, "cam_a")].resets["size"] == 1
    # a stamp going back (a replayed bag, a time jump): everything restarts
    added = step(0, bigger, versions=("v1", "v2"), stamp=0.05)
    assert set(added.values()) == {1}
    # clear one object, then all
    assert state.clear(2) == 2 and set(state.bank_sizes()) == {"1/cam_a", "1/cam_b"}
    assert state.clear() == 2 and state.bank_sizes() == {}


def test_trained_memory_changes_outputs_after_the_first_set_only(tmp_path, expected):
    seg = VGGTSegmentor.deterministic("test-tiny", PipelineConfig(temporal=True, memory_frames=2))
    with torch.no_grad():
        seg.memory.gate.fill_(1.0)
    path = tmp_path / "temporal.pth"
    save_temporal(seg.memory, path)
    loaded = VGGTSegmentor.deterministic("test-tiny", PipelineConfig(temporal=True, memory_frames=2,
                                                                     temporal_weights=str(path)))
    assert float(loaded.memory.gate.min()) == 1.0
    stream = loaded.init_stream()
    outs = [logits(loaded.segment_objects(SOURCE, MASKS, targets, state=stream, step=StreamStep(0.1 * k, ["a", "b"])))
            for k, targets in enumerate(video(2))]
    assert_identical(outs[0], expected[0])  # empty banks: the plain decode
    changed = [not np.array_equal(x, y) for ra, rb in zip(outs[1], expected[1]) for x, y in zip(ra, rb)]
    assert all(changed), "an open gate with a filled bank must change the decode"
    with pytest.raises(ValueError, match="memory_frames 2"):
        VGGTSegmentor.deterministic("test-tiny", PipelineConfig(temporal=True, memory_frames=4,
                                                                temporal_weights=str(path)))


def test_stream_errors_name_the_problem(plain):
    seg = VGGTSegmentor.deterministic("test-tiny", PipelineConfig(temporal=True))
    targets = video(1)[0]
    with pytest.raises(ValueError, match="pass state=segmentor.init_stream"):
        seg.segment_objects(SOURCE, MASKS, targets, step=StreamStep(0.0, ["a", "b"]))
    with pytest.raises(ValueError, match="pass step=StreamStep"):
        seg.segment_objects(SOURCE, MASKS, targets, state=seg.init_stream())
    with pytest.raises(ValueError, match="2 object ids for 1 source masks"):
        seg.segment_objects(SOURCE, MASKS[:1], targets, state=seg.init_stream(), step=StreamStep(0.0, ["a", "b"]))
    with pytest.raises(ValueError, match="distinct"):
        seg.segment_objects(SOURCE, MASKS, targets, state=seg.init_stream(), step=StreamStep(0.0, ["a", "a"]))
    with pytest.raises(ValueError, match="1 source versions for 2"):
        seg.segment_objects(SOURCE, MASKS, targets, state=seg.init_stream(), step=StreamStep(0.0, ["a", "b"], ["v"]))
    same_camera = [TargetView(noise(120, 160, 3), "exo", "cam"), TargetView(noise(120, 160, 4), "exo", "cam")]
    with pytest.raises(ValueError, match="same \\(object, camera\\) stream"):
        seg.segment_objects(SOURCE, MASKS, same_camera, state=seg.init_stream(), step=StreamStep(0.0, ["a", "b"]))
