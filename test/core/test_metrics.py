"""Ego-Exo4D correspondence metrics on hand-made masks with known answers."""

import math

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from vggts_ros.metrics import (
    CorrespondenceMetrics,
    balanced_accuracy,
    bbox_center,
    boundary_map,
    contour_accuracy,
    evaluate_pair,
    iou,
    location_error,
)


def square(h, w, x0, y0, side):
    m = np.zeros((h, w), bool)
    m[y0 : y0 + side, x0 : x0 + side] = True
    return m


def test_iou_known_overlaps():
    a = square(50, 50, 10, 10, 10)
    assert iou(a, a) == 1.0
    # shifted by 5 px: 50 shared of 150 pixels
    assert iou(a, square(50, 50, 15, 10, 10)) == pytest.approx(1 / 3)
    # 10x10 inside 20x20
    assert iou(square(50, 50, 10, 10, 20), a) == pytest.approx(100 / 400)
    assert iou(a, np.zeros_like(a)) == 0.0
    assert iou(np.zeros_like(a), np.zeros_like(a)) == 1.0
    assert iou(a.astype(np.uint8) * 255, a) == 1.0  # any nonzero is foreground
    with pytest.raises(ValueError):
        iou(a, a[:-1])


def test_location_error_shifted_masks():
    gt = square(100, 100, 10, 10, 10)  # bbox 10..19 -> centre (14, 14)
    assert bbox_center(gt) == (14, 14)
    pred = square(100, 100, 40, 50, 10)  # shifted by (30, 40): distance 50
    assert location_error(gt, pred) == pytest.approx(50 / math.hypot(100, 100))
    assert location_error(gt, pred, norm="diagonal") == pytest.approx(50 / math.hypot(100, 100))
    # Non-square frame 60x80: the benchmark divides by long side * sqrt(2).
    gt = square(60, 80, 0, 0, 10)
    pred = square(60, 80, 30, 40, 10)
    assert location_error(gt, pred, norm="diagonal") == pytest.approx(50 / 100)
    assert location_error(gt, pred) == pytest.approx(50 / (80 * math.sqrt(2)))
    # Same box, different shape inside: bbox centres coincide, mass centres do not.
    ring = square(60, 80, 20, 20, 11) & ~square(60, 80, 21, 21, 9)
    dot = square(60, 80, 20, 20, 11)
    dot[:, :] = False
    dot[20, 20] = dot[30, 30] = True
    assert location_error(ring, dot) == 0.0
    assert location_error(ring, square(60, 80, 20, 20, 6), center="mass") > 0.0
    # Empty prediction: the frame centre (40, 30); empty GT: undefined.
    gt = square(60, 80, 0, 0, 1)
    assert location_error(gt, np.zeros_like(gt), norm="diagonal") == pytest.approx(50 / 100)
    assert math.isnan(location_error(np.zeros_like(gt), gt))


def test_boundary_map_is_one_pixel_outline():
    m = square(10, 10, 2, 2, 4)  # rows/cols 2..5
    b = boundary_map(m)
    # Offset half a pixel towards the origin: the outline spans rows/cols 1..5.
    ys, xs = np.nonzero(b)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (1, 5, 1, 5)
    # ... and is exactly the 16-pixel ring of that 5x5 box.
    ring = square(10, 10, 1, 1, 5) & ~square(10, 10, 2, 2, 3)
    assert np.array_equal(b, ring)


def test_contour_accuracy_known_cases():
    gt = square(100, 100, 20, 20, 20)
    assert contour_accuracy(gt, gt) == 1.0
    # tolerance ceil(0.008 * 141.4) = 2 px: a 2-px shift is still a perfect contour ...
    assert contour_accuracy(gt, np.roll(gt, 2, axis=1)) == 1.0
    # ... a far away copy shares no boundary.
    assert contour_accuracy(gt, square(100, 100, 60, 60, 20)) == 0.0
    # Prediction = GT + an equally large extra square far away: precision 1/2, recall 1.
    pred = gt | square(100, 100, 60, 60, 20)
    assert contour_accuracy(gt, pred) == pytest.approx(2 * 0.5 * 1.0 / 1.5)
    # Swapping roles swaps precision and recall: same F.
    assert contour_accuracy(pred, gt) == pytest.approx(2 / 3)
    # A pixel tolerance given directly.
    assert contour_accuracy(gt, np.roll(gt, 3, axis=1), bound_th=3) == 1.0
    assert contour_accuracy(gt, np.roll(gt, 3, axis=1)) < 1.0
    assert contour_accuracy(gt, np.zeros_like(gt)) == 0.0
    assert contour_accuracy(np.zeros_like(gt), np.zeros_like(gt)) == 1.0


def test_visibility_balanced_accuracy():
    g = [1, 1, 0, 0]
    p = [1, 0, 0, 1]
    assert balanced_accuracy(g, p) == 0.5
    # all visible in GT: only the true-positive rate counts
    assert balanced_accuracy([1, 1, 1, 1], [1, 1, 0, 1]) == 0.75
    assert balanced_accuracy([1, 1, 1, 0, 0], [1, 1, 1, 0, 0]) == 1.0
    assert balanced_accuracy([1, 1, 1, 0, 0], [0, 0, 0, 1, 1]) == 0.0
    rng = np.random.default_rng(0)
    g = rng.random(200) < 0.7
    p = rng.random(200) < 0.6
    assert balanced_accuracy(g, p) == pytest.approx(balanced_accuracy_score(g, p))


def test_evaluate_pair_empty_prediction_and_invisible_gt():
    gt = square(64, 64, 8, 8, 16)
    r = evaluate_pair(gt, np.zeros_like(gt))
    assert (r["iou"], r["contour_accuracy"], r["gt_visible"], r["pred_visible"]) == (0.0, 0.0, True, False)
    r = evaluate_pair(np.zeros_like(gt), gt)
    assert math.isnan(r["iou"]) and r["pred_visible"] and not r["gt_visible"]
    # a confidence overrides "mask non-empty"
    assert evaluate_pair(gt, gt, confidence=0.2)["pred_visible"] is False
    assert evaluate_pair(gt, np.zeros_like(gt), confidence=0.9)["pred_visible"] is True


def test_accumulator_per_direction():
    acc = CorrespondenceMetrics()
    a = square(100, 100, 10, 10, 10)
    empty = np.zeros_like(a)
    acc.add(a, a, "ego->exo")  # perfect
    acc.add(a, square(100, 100, 15, 10, 10), "ego->exo")  # IoU 1/3, centre off by 5
    acc.add(empty, empty, "ego->exo")  # correctly invisible
    acc.add(a, empty, "exo->ego")  # missed
    acc.add(empty, a, "exo->ego")  # hallucinated
    s = acc.summary()
    assert list(s) == ["ego->exo", "exo->ego", "overall"]
    e = s["ego->exo"]
    assert e["pairs"] == 3 and e["visible_pairs"] == 2
    assert e["iou"] == pytest.approx((1 + 1 / 3) / 2)
    assert e["location_error"] == pytest.approx(5 / math.hypot(100, 100) / 2)
    assert e["visibility_balanced_accuracy"] == 1.0
    x = s["exo->ego"]
    assert x["iou"] == 0.0 and x["contour_accuracy"] == 0.0
    assert x["visibility_balanced_accuracy"] == 0.0
    o = s["overall"]
    assert o["iou"] == pytest.approx((1 + 1 / 3 + 0) / 3)
    # GT visible 3 (2 detected), invisible 2 (1 rejected)
    assert o["visibility_balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    table = acc.table()
    assert "| ego->exo | 3 | 66.7 |" in table and "| exo->ego | 2 | 0.0 |" in table
    acc.reset()
    assert acc.summary()["overall"]["pairs"] == 0
