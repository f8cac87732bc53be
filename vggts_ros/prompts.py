"""Point prompts: sampling points inside a mask, dropping stray projections, and
condensing projected points into a few prompt points.

All functions are NumPy in, NumPy out, and work on any image size. Points are ``(x, y)``.
"""

from __future__ import annotations

import warnings
from typing import Tuple

import numpy as np

KMEANS_SAMPLING_SEED = 42
CLUSTER_SEED = 0


def _kmeans(n_clusters: int, seed: int, n_init):
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=n_clusters, random_state=seed, n_init=n_init)


def kmeans_sample_points(mask: np.ndarray, n_samples: int, seed: int = KMEANS_SAMPLING_SEED) -> np.ndarray:
    """``n_samples`` well-spread points of a binary mask, each lying on the mask.

    The foreground pixels are clustered with K-means; each centre is rounded to a pixel
    and, when that pixel is off the mask or already taken, replaced by the nearest free
    foreground pixel. With fewer foreground pixels (or distinct picks) than requested,
    the list is padded by repeating its first point; an empty mask gives zeros.
    Returns ``[n_samples, 2]`` float32.
    """
    mask = np.asarray(mask)
    h, w = mask.shape[:2]
    fg = np.argwhere(mask > 0).astype(np.float32)[:, ::-1].copy()  # (x, y)
    if len(fg) == 0:
        return np.zeros((n_samples, 2), dtype=np.float32)
    if len(fg) < n_samples:
        return _pad_with_first(fg, n_samples)

    model = _kmeans(n_samples, seed, n_init=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate pixels can leave empty clusters
        model.fit(fg)

    picked: dict = {}
    for centre in model.cluster_centers_:
        px, py = int(round(centre[0])), int(round(centre[1]))
        if 0 <= px < w and 0 <= py < h and mask[py, px] > 0:
            picked[(px, py)] = None
            continue
        order = np.argsort(np.linalg.norm(fg - centre, axis=1))
        for i in order:
            cand = (int(fg[i, 0]), int(fg[i, 1]))
            if cand not in picked:
                picked[cand] = None
                break
    pts = np.array(list(picked), dtype=np.float32).reshape(-1, 2)
    return _pad_with_first(pts, n_samples)


def _pad_with_first(points: np.ndarray, n: int) -> np.ndarray:
    points = np.asarray(points, dtype=np.float32)
    if len(points) >= n:
        return points[:n]
    return np.concatenate([points, np.repeat(points[:1], n - len(points), axis=0)], axis=0)


def median_outlier_split(points: np.ndarray, k: int = 10) -> Tuple[np.ndarray, np.ndarray]:
    """Indices (kept, removed) of ``points``: the ``k`` points farthest from the
    coordinate-wise median are removed (at least one is kept). Both farthest first."""
    points = np.asarray(points)
    centre = np.median(points, axis=0)
    order = np.argsort(-np.linalg.norm(points - centre, axis=1))
    k = max(0, min(int(k), len(points) - 1))
    return order[k:], order[:k]


def remove_outliers_median(points: np.ndarray, k: int = 10) -> Tuple[np.ndarray, np.ndarray]:
    """Split ``points`` into (kept, removed) with :func:`median_outlier_split`."""
    points = np.asarray(points)
    kept, removed = median_outlier_split(points, k)
    return points[kept], points[removed]


def cluster_points(points: np.ndarray, k: int = 5, seed: int = CLUSTER_SEED) -> Tuple[np.ndarray, np.ndarray]:
    """K-means (k-means++ init, seeded) of 2D points: returns (labels ``[N]``, centres ``[k, 2]``).

    With fewer than ``k`` points the points themselves are the centres (padded by
    repeating the first) so that exactly ``k`` prompts come out.
    """
    points = np.asarray(points)
    n = len(points)
    if n == 0:
        raise ValueError("cluster_points needs at least one point")
    if n < k:
        centres = np.concatenate([points, np.repeat(points[:1], k - n, axis=0)], axis=0)
        return np.arange(n), centres.astype(np.float64)
    model = _kmeans(k, seed, n_init="auto")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(points)
    return model.labels_, model.cluster_centers_


def points_box_size(points: np.ndarray) -> float:
    """Longer side of the axis-aligned box of ``points``."""
    points = np.asarray(points)
    span = points.max(axis=0) - points.min(axis=0)
    return float(max(span[1], span[0]))
