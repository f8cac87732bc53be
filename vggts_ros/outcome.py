"""What each published target says about how its mask came about: ``path`` and ``reason``.

Every target mask the node, the replay and the demo publish carries the method that
produced it and, when it is empty, why. Backends fill ``SegmentationResult.path`` and
``reason`` where they know them (the geometric backend does); this module completes the
rest with one rule, so that no output is an empty mask without a "not found" reason:

- ``path``: the result's own, else the backend's name (also when nothing was found).
- ``reason``: empty when the object has pixels in the published label image; else the
  result's reason; else, when the backend's mask was not empty, the objects that cover
  it (a higher score wins overlapping pixels); else a generic "not found" sentence.
"""

from __future__ import annotations

import dataclasses
from typing import List, Sequence, Tuple

import numpy as np

from .types import SegmentationResult


def empty_mask_reason(backend: str) -> str:
    """The reason given when a backend returns an empty mask and does not say why."""
    return (f"not found: the {backend or 'segmentation'} backend scored no target pixel as the object "
            "(foreground probability <= 0.5 everywhere)")


def describe(result: SegmentationResult, area: int, backend: str, covered_by: Sequence[int] = ()) -> Tuple[str, str]:
    """``(path, reason)`` of one object's published target mask with ``area`` pixels."""
    path = result.path or backend
    if area > 0:
        return path, ""
    if np.asarray(result.mask, bool).any():
        ids = ", ".join(str(i) for i in sorted(set(covered_by)))
        who = f"object {ids}" if len(set(covered_by)) == 1 else f"objects {ids}" if ids else "other objects"
        return path, f"not visible: its mask is covered by {who} with a higher score"
    return path, result.reason or empty_mask_reason(backend)


def annotate(labels: np.ndarray, pairs: Sequence[Tuple[int, SegmentationResult]], backend: str) -> List[SegmentationResult]:
    """The results of ``pairs`` ((object id, result), composed into ``labels``) with
    ``path`` and ``reason`` completed as above (copies; the inputs are left as they are)."""
    out = []
    for object_id, result in pairs:
        area = int((labels == object_id).sum())
        covered: List[int] = []
        if area == 0:
            under = labels[np.asarray(result.mask, bool)]
            covered = [int(v) for v in np.unique(under) if v and v != object_id]
        path, reason = describe(result, area, backend, covered)
        out.append(dataclasses.replace(result, path=path, reason=reason))
    return out
