"""Overlays and mosaics for people: RViz/Foxglove overlay images, demo and CLI output."""

from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np

# A fixed palette so that object ids keep their colour across cameras and frames.
_PALETTE = np.array(
    [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
     (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255)],
    dtype=np.uint8,
)


def color_of(object_id: int) -> np.ndarray:
    return _PALETTE[(int(object_id) - 1) % len(_PALETTE)]


def overlay_masks(
    image: np.ndarray,
    labels: np.ndarray,
    points: Optional[Sequence[np.ndarray]] = None,
    alpha: float = 0.5,
) -> np.ndarray:
    """Blend each object id of ``labels`` (0 = background) over ``image`` with its outline
    and, optionally, draw point sets (one ``Nx2`` array per object)."""
    out = image.astype(np.float32).copy()
    labels = np.asarray(labels)
    for object_id in np.unique(labels):
        if object_id == 0:
            continue
        region = labels == object_id
        out[region] = (1 - alpha) * out[region] + alpha * color_of(object_id)
    out = out.clip(0, 255).astype(np.uint8)
    for object_id in np.unique(labels):
        if object_id == 0:
            continue
        contours, _ = cv2.findContours((labels == object_id).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, tuple(int(c) for c in color_of(object_id)), 2)
    radius = max(2, int(round(min(image.shape[:2]) / 150)))
    for pts in points or []:
        for x, y in np.asarray(pts, dtype=np.float32).reshape(-1, 2):
            if np.isfinite(x) and np.isfinite(y):
                cv2.circle(out, (int(round(x)), int(round(y))), radius + 1, (0, 0, 0), -1)
                cv2.circle(out, (int(round(x)), int(round(y))), radius, (255, 255, 255), -1)
    return out


def mosaic(tiles: Sequence[np.ndarray], titles: Sequence[str] = (), height: int = 360) -> np.ndarray:
    """Side-by-side tiles resized to a common height, each with a caption bar."""
    row = []
    for i, tile in enumerate(tiles):
        scale = height / tile.shape[0]
        resized = cv2.resize(tile, (max(1, int(round(tile.shape[1] * scale))), height), interpolation=cv2.INTER_AREA)
        bar = np.full((28, resized.shape[1], 3), 32, dtype=np.uint8)
        if i < len(titles):
            cv2.putText(bar, titles[i], (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
        row.append(np.vstack([bar, resized]))
        row.append(np.full((height + 28, 4, 3), 255, dtype=np.uint8))
    return np.hstack(row[:-1]) if row else np.zeros((height, 1, 3), np.uint8)
