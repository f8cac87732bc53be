"""Ego-Exo4D correspondence metrics on NumPy masks.

Definitions follow the benchmark's evaluation scripts (EGO4D/ego-exo4d-relation,
``correspondence/evaluation``), which reuse the DAVIS 2017 region and boundary measures:

* **IoU** (DAVIS J): |P & G| / |P | G|; 1 when both masks are empty.
* **Location error**: distance between the bounding-box centres of the predicted and
  ground-truth masks (integer midpoints, as in the benchmark), normalised. The
  benchmark resizes masks to a long side of 480 and divides by ``480 * sqrt(2)``, i.e.
  by ``long_side * sqrt(2)`` in frame pixels (``norm="benchmark"``, the frame diagonal
  for square frames); ``norm="diagonal"`` divides by the frame's own diagonal. An empty
  prediction is placed at the frame centre (the benchmark puts it at ``(H/2, W/2)``
  with x and y swapped, which only differs for non-square frames).
* **Contour accuracy** (DAVIS F): boundary precision/recall with a tolerance of
  ``ceil(bound_th * diagonal)`` pixels (``bound_th=0.008``), F = 2PR / (P + R).
* **Visibility balanced accuracy**: mean of the true-positive and true-negative rates
  of "object visible" (prediction non-empty, or its confidence above 0.5) against the
  ground truth; classes absent from the ground truth are left out of the mean (as in
  scikit-learn's ``balanced_accuracy_score``).

IoU, location error and contour accuracy are only accumulated where the object is
visible in the ground truth, like the benchmark. Unlike it, masks are scored at their
own resolution (no resize to 480).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import cv2
import numpy as np

BOUND_TH = 0.008


def _pair(gt: np.ndarray, pred: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.ndim != 2 or pred.shape != gt.shape:
        raise ValueError(f"masks must be 2-D and of one shape, got {gt.shape} and {pred.shape}")
    return gt.astype(bool), pred.astype(bool)


def iou(gt: np.ndarray, pred: np.ndarray) -> float:
    """Jaccard index of two masks (1.0 when both are empty)."""
    gt, pred = _pair(gt, pred)
    union = np.count_nonzero(gt | pred)
    if union == 0:
        return 1.0
    return float(np.count_nonzero(gt & pred) / union)


def bbox_center(mask: np.ndarray) -> Optional[Tuple[int, int]]:
    """Integer midpoint ``(x, y)`` of the mask's bounding box, None when empty."""
    ys, xs = np.nonzero(np.asarray(mask))
    if xs.size == 0:
        return None
    return (int(xs.min() + xs.max()) // 2, int(ys.min() + ys.max()) // 2)


def mass_center(mask: np.ndarray) -> Optional[Tuple[float, float]]:
    """Mean ``(x, y)`` of the foreground pixels, None when empty."""
    ys, xs = np.nonzero(np.asarray(mask))
    if xs.size == 0:
        return None
    return (float(xs.mean()), float(ys.mean()))


def location_error(gt: np.ndarray, pred: np.ndarray, norm: str = "benchmark", center: str = "bbox") -> float:
    """Normalised distance between mask centres; NaN when the ground truth is empty."""
    gt, pred = _pair(gt, pred)
    h, w = gt.shape
    find = {"bbox": bbox_center, "mass": mass_center}.get(center)
    if find is None:
        raise ValueError(f"center must be 'bbox' or 'mass', got {center!r}")
    cg = find(gt)
    if cg is None:
        return float("nan")
    cp = find(pred)
    if cp is None:
        cp = (w // 2, h // 2) if center == "bbox" else ((w - 1) / 2.0, (h - 1) / 2.0)
    dist = math.hypot(cg[0] - cp[0], cg[1] - cp[1])
    if norm == "benchmark":
        scale = max(h, w) * math.sqrt(2.0)
    elif norm == "diagonal":
        scale = math.hypot(h, w)
    else:
        raise ValueError(f"norm must be 'benchmark' or 'diagonal', got {norm!r}")
    return float(dist / scale)


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel boundary: a pixel whose right, lower or lower-right neighbour differs.

    The last row compares only with its right neighbour, the last column only with the
    pixel below, and the bottom-right corner is never a boundary (DAVIS convention).
    """
    m = np.asarray(mask).astype(bool)
    right = np.zeros_like(m)
    down = np.zeros_like(m)
    diag = np.zeros_like(m)
    right[:, :-1] = m[:, 1:]
    down[:-1, :] = m[1:, :]
    diag[:-1, :-1] = m[1:, 1:]
    b = (m ^ right) | (m ^ down) | (m ^ diag)
    b[-1, :] = m[-1, :] ^ right[-1, :]
    b[:, -1] = m[:, -1] ^ down[:, -1]
    b[-1, -1] = False
    return b


def _disk(radius: int) -> np.ndarray:
    r = int(radius)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (xx * xx + yy * yy <= r * r).astype(np.uint8)


def contour_accuracy(gt: np.ndarray, pred: np.ndarray, bound_th: float = BOUND_TH) -> float:
    """DAVIS boundary F-measure; ``bound_th`` < 1 is a fraction of the diagonal, else pixels."""
    gt, pred = _pair(gt, pred)
    radius = bound_th if bound_th >= 1 else math.ceil(bound_th * math.hypot(*gt.shape))
    bg = boundary_map(gt)
    bp = boundary_map(pred)
    n_gt = int(np.count_nonzero(bg))
    n_pred = int(np.count_nonzero(bp))
    if n_gt == 0 and n_pred == 0:
        return 1.0
    if n_gt == 0 or n_pred == 0:
        return 0.0
    kernel = _disk(int(radius))
    near_gt = cv2.dilate(bg.astype(np.uint8), kernel).astype(bool)
    near_pred = cv2.dilate(bp.astype(np.uint8), kernel).astype(bool)
    precision = np.count_nonzero(bp & near_gt) / n_pred
    recall = np.count_nonzero(bg & near_pred) / n_gt
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def balanced_accuracy(gt_visible: Sequence[bool], pred_visible: Sequence[bool]) -> float:
    """Mean of TPR and TNR (only the classes present in the ground truth); NaN if none."""
    g = np.asarray(gt_visible, dtype=bool).ravel()
    p = np.asarray(pred_visible, dtype=bool).ravel()
    if g.shape != p.shape:
        raise ValueError(f"visibility lists differ in length: {g.size} and {p.size}")
    rates = []
    if g.any():
        rates.append(np.count_nonzero(p & g) / np.count_nonzero(g))
    if (~g).any():
        rates.append(np.count_nonzero(~p & ~g) / np.count_nonzero(~g))
    return float(np.mean(rates)) if rates else float("nan")


def evaluate_pair(
    gt: np.ndarray,
    pred: np.ndarray,
    confidence: Optional[float] = None,
    conf_thresh: float = 0.5,
    bound_th: float = BOUND_TH,
    norm: str = "benchmark",
) -> Dict[str, float]:
    """All four quantities for one (ground truth, prediction) pair.

    ``pred_visible`` is ``confidence > conf_thresh`` when a confidence is given, else
    "the predicted mask is not empty". Region measures are NaN when the GT is empty.
    """
    gt, pred = _pair(gt, pred)
    gt_visible = bool(gt.any())
    pred_visible = bool(pred.any()) if confidence is None else bool(confidence > conf_thresh)
    out = {"gt_visible": gt_visible, "pred_visible": pred_visible}
    if gt_visible:
        out["iou"] = iou(gt, pred)
        out["location_error"] = location_error(gt, pred, norm=norm)
        out["contour_accuracy"] = contour_accuracy(gt, pred, bound_th=bound_th)
    else:
        out["iou"] = out["location_error"] = out["contour_accuracy"] = float("nan")
    return out


class CorrespondenceMetrics:
    """Accumulates per-pair results by direction (e.g. ``"ego->exo"``) and averages them."""

    KEYS = ("iou", "location_error", "contour_accuracy")

    def __init__(self, bound_th: float = BOUND_TH, norm: str = "benchmark", conf_thresh: float = 0.5) -> None:
        self.bound_th = bound_th
        self.norm = norm
        self.conf_thresh = conf_thresh
        self.records: List[Dict] = []

    def add(
        self,
        gt: np.ndarray,
        pred: np.ndarray,
        direction: str = "all",
        confidence: Optional[float] = None,
        key: Optional[str] = None,
    ) -> Dict[str, float]:
        rec = evaluate_pair(gt, pred, confidence, self.conf_thresh, self.bound_th, self.norm)
        rec["direction"] = direction
        rec["key"] = key
        self.records.append(rec)
        return rec

    def reset(self) -> None:
        self.records.clear()

    @staticmethod
    def _summarise(recs: Iterable[Dict]) -> Dict[str, float]:
        recs = list(recs)
        vis = [r for r in recs if r["gt_visible"]]
        out: Dict[str, float] = {"pairs": len(recs), "visible_pairs": len(vis)}
        for k in CorrespondenceMetrics.KEYS:
            out[k] = float(np.mean([r[k] for r in vis])) if vis else float("nan")
        out["visibility_balanced_accuracy"] = balanced_accuracy(
            [r["gt_visible"] for r in recs], [r["pred_visible"] for r in recs]
        ) if recs else float("nan")
        return out

    def summary(self) -> Dict[str, Dict[str, float]]:
        """``{direction: {iou, location_error, contour_accuracy, visibility_balanced_accuracy,
        pairs, visible_pairs}}`` plus ``"overall"`` over every record."""
        groups: "OrderedDict[str, List[Dict]]" = OrderedDict()
        for r in self.records:
            groups.setdefault(r["direction"], []).append(r)
        out = {d: self._summarise(rs) for d, rs in groups.items()}
        out["overall"] = self._summarise(self.records)
        return out

    def table(self, percent: bool = True) -> str:
        """Markdown table of :meth:`summary` (IoU, contour and accuracy in percent)."""
        s = self.summary()
        lines = [
            "| direction | pairs | IoU | location error | contour acc. | visibility bal. acc. |",
            "|---|---|---|---|---|---|",
        ]
        f = 100.0 if percent else 1.0

        def fmt(v, scale):
            return "n/a" if v != v else f"{v * scale:.{1 if scale == 100 else 3}f}"

        for d, m in s.items():
            lines.append(
                f"| {d} | {m['pairs']} | {fmt(m['iou'], f)} | {fmt(m['location_error'], 1.0)} | "
                f"{fmt(m['contour_accuracy'], f)} | {fmt(m['visibility_balanced_accuracy'], f)} |"
            )
        return "\n".join(lines)
