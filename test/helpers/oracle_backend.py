"""A test backend that knows the answer: the exact masks of a moving sequence.

:class:`OracleSegmentor` implements the segmentor protocol (``init_stream``, ``segment``,
``segment_objects``) for the frames of one :class:`vggts_ros.sequences.SceneSequence`: it
recognises each image it is given (by its bytes) as a (frame, camera) of the sequence,
the object by its source mask (the ground-truth object it overlaps most), and returns that
object's exact mask in each target frame, with the target points at the mask's K-means
points. ``delay`` seconds of sleep per call make it as slow as a real backend on purpose
(the cross-view step of a node test), ``calls`` counts its calls. Images it does not know
raise ValueError (a test fed the wrong frames fails loudly).
"""

from __future__ import annotations

import hashlib
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from vggts_ros.metrics import iou
from vggts_ros.prompts import kmeans_sample_points
from vggts_ros.stream import StreamState
from vggts_ros.types import SegmentationResult, TargetView


def _key(image: np.ndarray) -> bytes:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).digest()


class OracleSegmentor:
    name = "oracle"

    def __init__(self, seq, delay: float = 0.0, n_points: int = 5) -> None:
        self.seq = seq
        self.delay = float(delay)
        self.n_points = n_points
        self.calls = 0
        self._index: Dict[bytes, Tuple[int, str]] = {}
        for i in range(len(seq)):
            for cam in seq.cameras:
                self._index[_key(seq.view(i, cam)[0])] = (i, cam)

    def where(self, image: np.ndarray) -> Tuple[int, str]:
        try:
            return self._index[_key(image)]
        except KeyError:
            raise ValueError("the oracle backend does not know this image (not a frame of its sequence)") from None

    def init_stream(self) -> StreamState:
        return StreamState()

    def _object(self, source_image: np.ndarray, mask: np.ndarray) -> int:
        i, cam = self.where(source_image)
        masks = self.seq.view(i, cam)[1]
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
            src = np.asarray(kmeans_sample_points((np.asarray(mask) > 0).astype(np.uint8), self.n_points),
                             np.float32).reshape(-1, 2)
            per_target = []
            for view in targets:
                i, cam = self.where(view.image)
                m = self.seq.view(i, cam)[1].get(oid)
                h, w = view.image.shape[:2]
                if m is None or not m.any():
                    per_target.append(SegmentationResult(np.zeros((h, w), bool), src, np.full_like(src, -1.0),
                                                         np.zeros(len(src), np.float32),
                                                         np.zeros(len(src), np.float32), 0.0, path="oracle",
                                                         reason="not in this view"))
                    continue
                pts = np.asarray(kmeans_sample_points(m.astype(np.uint8), self.n_points), np.float32).reshape(-1, 2)
                per_target.append(SegmentationResult(m.copy(), src, pts, np.ones(len(pts), np.float32),
                                                     np.ones(len(pts), np.float32), 1.0, path="oracle"))
            out.append(per_target)
        return out

    def segment(self, source_image: np.ndarray, source_mask: np.ndarray,
                targets: Sequence[TargetView]) -> List[SegmentationResult]:
        return self.segment_objects(source_image, [source_mask], targets)[0]
