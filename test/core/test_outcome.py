"""Every published target says which path made its mask and, when empty, why."""

import numpy as np

from vggts_ros.outcome import annotate, empty_mask_reason
from vggts_ros.replay import compose_labels
from vggts_ros.types import SegmentationResult


def result(mask, score=0.5, path="", reason=""):
    n = 2
    return SegmentationResult(mask=np.asarray(mask, bool), source_points=np.zeros((n, 2), np.float32),
                              target_points=np.zeros((n, 2), np.float32), visibility=np.ones(n, np.float32),
                              confidence=np.ones(n, np.float32), score=score, path=path, reason=reason)


def box(y0, y1, x0, x1, shape=(20, 30)):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def test_found_not_found_and_covered_targets():
    found = result(box(2, 8, 2, 8), score=0.9, path="object_features")
    learned = result(box(10, 15, 10, 20), score=0.8)  # a backend that names no path
    told = result(np.zeros((20, 30)), score=0.0, reason="3 feature matches on the object (need 8)")
    silent = result(np.zeros((20, 30)), score=0.0)  # empty, and the backend says nothing
    covered = result(box(3, 6, 3, 6), score=0.2, path="scene_homography+colour")  # inside `found`, lower score
    pairs = [(1, found), (2, learned), (3, told), (4, silent), (5, covered)]
    labels = compose_labels((20, 30), pairs)
    out = annotate(labels, pairs, "vggts")
    got = [(r.path, r.reason) for r in out]
    assert got[0] == ("object_features", "")
    assert got[1] == ("vggts", "")
    assert got[2] == ("vggts", "3 feature matches on the object (need 8)")
    assert got[3] == ("vggts", empty_mask_reason("vggts")) and "not found" in got[3][1]
    assert got[4] == ("scene_homography+colour", "not visible: its mask is covered by object 1 with a higher score")
    # every object without pixels in the label image has a reason, every other none
    for (oid, _), r in zip(pairs, out):
        assert bool(r.reason) == (not (labels == oid).any())
    # the inputs are left as they were
    assert (silent.path, silent.reason, learned.path) == ("", "", "")
