"""Stream reuse: skip the first backbone pass for targets whose last mask can stand in for it.

Off by default (``PipelineConfig.stream_reuse``). Its accuracy with the published
weights has not been measured in this project; only its speed has (bench/bench_stream_reuse.py).

In a stream of synchronised sets the first pass (backbone over ``[source, targets]`` and
the tracker) only serves to find *where* the object is in each cropped target. When the
previous set's mask of every object in that target was confident, the crop is taken
around that mask instead (the same crop rule, :func:`transforms.crop_target`, on the
mask's pixels) and the prompts come from tracking in the features pass (the
pipeline's second-pass machinery, :meth:`VGGTSegmentor.second_pass`, one tracker call
per object for all its reused targets). A target runs the
full pass again when

* it was not segmented in the previous set (new target, new object count, other size),
* any object's last score is below ``reuse_min_score``, or fell more than
  ``reuse_max_drop`` below its score at the target's last full pass,
* ``reuse_full_every`` sets have passed since its last full pass (1: never reuse).

The state belongs to the caller's :class:`vggts_ros.stream.StreamState` (``init_stream()``):
targets are told apart by name (else by position), objects by their stream ids; removing an
object (a new or cleared source mask) forgets its masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Hashable, List, Optional, Sequence, Tuple

import numpy as np

from vggts_ros import prompts, transforms


@dataclass
class _TargetState:
    masks: Dict[Hashable, np.ndarray]  # each object's last mask (frame pixels), by object id
    scores: Dict[Hashable, float]  # each object's last score
    full_scores: Dict[Hashable, float]  # each object's score at the target's last full pass
    sets_since_full: int  # 0 right after a full pass


class StreamReuse:
    """Decides per target whether a set may skip the first pass, and remembers results.

    Part of a caller's :class:`vggts_ros.stream.StreamState`; objects are told apart by their
    stream ids, targets by name (else by position)."""

    def __init__(self, full_every: int = 5, min_score: float = 0.6, max_drop: float = 0.1) -> None:
        if int(full_every) < 1:
            raise ValueError(f"reuse_full_every must be >= 1, got {full_every}")
        if not 0.0 <= float(min_score) <= 1.0:
            raise ValueError(f"reuse_min_score must be in [0, 1], got {min_score}")
        if float(max_drop) < 0:
            raise ValueError(f"reuse_max_drop must be >= 0, got {max_drop}")
        self.full_every = int(full_every)
        self.min_score = float(min_score)
        self.max_drop = float(max_drop)
        self._state: Dict[str, _TargetState] = {}
        self.last_reused: List[bool] = []  # per target of the last set: True = first pass skipped

    @classmethod
    def from_config(cls, cfg) -> "StreamReuse":
        return cls(cfg.reuse_full_every, cfg.reuse_min_score, cfg.reuse_max_drop)

    @staticmethod
    def key(view, index: int) -> str:
        return f"name:{view.name}" if getattr(view, "name", "") else f"index:{index}"

    def reset(self) -> None:
        self._state.clear()
        self.last_reused = []

    def remove_object(self, object_id: Hashable) -> None:
        """Forget one object's last masks: every target runs the full pass for the next set."""
        for k in [k for k, st in self._state.items() if object_id in st.masks]:
            del self._state[k]

    def retain(self, object_ids) -> None:
        keep = set(object_ids)
        for k in [k for k, st in self._state.items() if set(st.masks) - keep]:
            del self._state[k]

    def plan(self, object_ids: Sequence[Hashable], targets: Sequence,
             cropped: Sequence[bool]) -> List[Optional[List[np.ndarray]]]:
        """Per target: each object's previous mask (in ``object_ids`` order) when the target
        may skip the first pass, else None."""
        out: List[Optional[List[np.ndarray]]] = []
        for t, view in enumerate(targets):
            st = self._state.get(self.key(view, t))
            ok = (
                cropped[t]
                and st is not None
                and set(st.masks) == set(object_ids)
                and st.sets_since_full + 1 < self.full_every
                and all(m.shape == view.image.shape[:2] and m.any() for m in st.masks.values())
                and all(st.scores[o] >= self.min_score and st.scores[o] >= st.full_scores[o] - self.max_drop
                        for o in object_ids)
            )
            out.append([st.masks[o] for o in object_ids] if ok else None)
        return out

    def record(self, object_ids: Sequence[Hashable], targets: Sequence, results: Sequence[Sequence],
               reused: Sequence[bool]) -> None:
        """Remember the set's results (``results[object][target]``); ``reused[t]``: whether
        target ``t`` skipped the first pass."""
        seen = set()
        for t, view in enumerate(targets):
            k = self.key(view, t)
            seen.add(k)
            masks = {o: np.asarray(per_object[t].mask, bool) for o, per_object in zip(object_ids, results)}
            scores = {o: float(per_object[t].score) for o, per_object in zip(object_ids, results)}
            prev = self._state.get(k)
            if reused[t] and prev is not None:
                self._state[k] = _TargetState(masks, scores, prev.full_scores, prev.sets_since_full + 1)
            else:
                self._state[k] = _TargetState(masks, scores, dict(scores), 0)
        for k in [k for k in self._state if k not in seen]:  # a target missing from a set is not recent
            del self._state[k]
        self.last_reused = list(reused)


def crop_from_mask(image_hw: Tuple[int, int], mask: np.ndarray, size: int, cfg) -> transforms.TargetCrop:
    """The target crop of the pipeline's rule around a previous mask: its pixels (on a
    strided grid, at most ~2000) stand in for the first pass's projected points (no
    K-means: over a whole-frame mask it would cost more than the pass it replaces)."""
    mask = np.asarray(mask, bool)
    stride = max(1, int(np.ceil(np.sqrt(mask.sum() / 2048.0))))
    ys, xs = np.nonzero(mask[::stride, ::stride])
    if len(xs) == 0:
        ys, xs = np.nonzero(mask)
        stride = 1
    points = np.stack([xs, ys], axis=1).astype(np.float64) * stride
    return transforms.crop_target(image_hw, points, size, cfg.crop_schedule, cfg.outlier_k)
