"""A test backend that knows the answer: the exact masks of a moving sequence.

:class:`OracleSegmentor` implements the segmentor protocol (``init_stream``, ``segment``,
``segment_objects``) for the frames of one :class:`vggts_ros.sequences.SceneSequence`: it
recognises each image it is given (by its bytes) as a (frame, camera) of the sequence,
the object by its source mask (the ground-truth object it overlaps most), and returns that
object's exact mask in each target frame, with five target points in the mask (the pixel
nearest its centroid and the centroids of its four quadrants; cheap, so that ``delay``
is all the time a call takes). ``delay`` seconds of sleep per call make it as slow as a real backend on purpose
(the cross-view step of a node test), ``calls`` counts its calls. Images it does not know
raise ValueError (a test fed the wrong frames fails loudly).
"""

from __future__ import annotations

import hashlib
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from vggts_ros.metrics import iou
from vggts_ros.stream import StreamState
from vggts_ros.types import SegmentationResult, TargetView


def _key(image: np.ndarray) -> bytes:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).digest()


def mask_points(mask: np.ndarray) -> np.ndarray:
    """Five points of a mask: the pixel nearest its centroid, then the pixel nearest the
    centroid of each quadrant around it (5x2 float32; a point repeats for a tiny mask)."""
    ys, xs = np.nonzero(mask)
    pts = np.stack([xs, ys], 1).astype(np.float32)
    c = pts.mean(0)
    out = [pts[np.argmin(((pts - c) ** 2).sum(1))]]
    for sx in (-1, 1):
        for sy in (-1, 1):
            sel = pts[((pts[:, 0] - c[0]) * sx >= 0) & ((pts[:, 1] - c[1]) * sy >= 0)]
            sel = sel if len(sel) else pts
            q = sel.mean(0)
            out.append(sel[np.argmin(((sel - q) ** 2).sum(1))])
    return np.asarray(out, np.float32)


class OracleSegmentor:
    name = "oracle"

    def __init__(self, seq, delay: float = 0.0) -> None:
        self.seq = seq
        self.delay = float(delay)
        self.calls = 0
        self._index: Dict[bytes, Tuple[int, str]] = {}
        self._masks: Dict[Tuple[int, str], Dict[int, np.ndarray]] = {}  # rendered once
        for i in range(len(seq)):
            for cam in seq.cameras:
                image, masks = seq.view(i, cam)
                self._index[_key(image)] = (i, cam)
                self._masks[(i, cam)] = masks

    def where(self, image: np.ndarray) -> Tuple[int, str]:
        try:
            return self._index[_key(image)]
        except KeyError:
            raise ValueError("the oracle backend does not know this image (not a frame of its sequence)") from None

    def init_stream(self) -> StreamState:
        return StreamState()

    def _object(self, source_image: np.ndarray, mask: np.ndarray) -> int:
        masks = self._masks[self.where(source_image)]
        scores = {oid: iou(m, np.asarray(mask) > 0) for oid, m in masks.items()}
        best = max(scores, key=scores.get)
        if scores[best] < 0.5:
            raise ValueError(f"the source mask matches no object of {cam} frame {i} (best IoU {scores[best]:.2f})")
        return best

    def segment_objects(self, source_image: np.ndarray, masks: Sequence[np.ndarray], targets: Sequence[TargetView],
                        *, state: Optional[StreamState] = None, step=None) -> List[List[SegmentationResult]]:
        self.calls += 1
        if self.delay > 0:
            time.sleep(self.delay)
        out = []
        for mask in masks:
            oid = self._object(source_image, mask)
            src = mask_points(np.asarray(mask) > 0)
            per_target = []
            for view in targets:
                m = self._masks[self.where(view.image)].get(oid)
                h, w = view.image.shape[:2]
                if m is None or not m.any():
                    per_target.append(SegmentationResult(np.zeros((h, w), bool), src, np.full_like(src, -1.0),
                                                         np.zeros(len(src), np.float32),
                                                         np.zeros(len(src), np.float32), 0.0, path="oracle",
                                                         reason="not in this view"))
                    continue
                pts = mask_points(m)
                per_target.append(SegmentationResult(m.copy(), src, pts, np.ones(len(pts), np.float32),
                                                     np.ones(len(pts), np.float32), 1.0, path="oracle"))
            out.append(per_target)
        return out

    def segment(self, source_image: np.ndarray, source_mask: np.ndarray,
                targets: Sequence[TargetView]) -> List[SegmentationResult]:
        return self.segment_objects(source_image, [source_mask], targets)[0]
