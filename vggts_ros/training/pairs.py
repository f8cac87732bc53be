"""What a training/evaluation sample is, how samples are batched, and the geometry shared
by both data sets.

A sample is a dict of NumPy arrays describing one (source, target) pair at the network
size ``S`` (``img_size`` of the head):

``src_img`` ``[S,S,3] uint8``, ``src_mask`` ``[S,S] uint8``, ``src_points`` ``[P,2]`` head
prompts (K-means of the source mask), ``track_points`` ``[N,2]`` source points to project
with the backbone when ``track`` is set, ``tar_img``/``tar_mask`` the target input and its
ground truth, ``tar_points`` ``[P,2]`` target prompts (NaN when ``track``), and for scoring
in the target *frame*: ``tar_frame_mask`` (ground truth at frame resolution) and ``meta``
(where the target input was cut from the frame: ``x1, y1, x2, y2, ori_h, ori_w``).
``key`` names the pair and ``direction`` groups results (``ego2exo``, ``exo2ego``,
``adaptive``, ``non-adaptive``).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..prompts import cluster_points, remove_outliers_median

STACKED = ("src_img", "src_mask", "src_points", "track_points", "tar_img", "tar_mask", "tar_points", "track")


def collate(samples: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Stack the fixed-size arrays, keep everything else as lists."""
    batch: Dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        batch[key] = np.stack(values) if key in STACKED else values
    return batch


def square_box(center: Tuple[float, float], side: int, h: int, w: int) -> Tuple[int, int, int, int]:
    """A ``side`` square centred on ``center`` and slid inside an ``h x w`` frame
    (``side`` is first limited to the frame's short side)."""
    side = int(max(1, min(int(side), h, w)))
    x1 = int(np.clip(round(center[0] - side / 2.0), 0, w - side))
    y1 = int(np.clip(round(center[1] - side / 2.0), 0, h - side))
    return x1, y1, x1 + side, y1 + side


def cut(image: np.ndarray, mask: np.ndarray, box: Tuple[int, int, int, int], size: int) -> Tuple[np.ndarray, np.ndarray]:
    x1, y1, x2, y2 = box
    img = cv2.resize(image[y1:y2, x1:x2], (size, size), interpolation=cv2.INTER_AREA)
    msk = cv2.resize(mask[y1:y2, x1:x2].astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
    return img, msk


def box_to_crop(points: np.ndarray, box: Tuple[int, int, int, int], size: int) -> np.ndarray:
    """Frame pixels -> pixels of the ``box`` cut resized to ``size`` (pixel-centre aligned)."""
    x1, y1, x2, y2 = box
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2).copy()
    pts[:, 0] = (pts[:, 0] - x1 + 0.5) * (size / float(x2 - x1)) - 0.5
    pts[:, 1] = (pts[:, 1] - y1 + 0.5) * (size / float(y2 - y1)) - 0.5
    return pts.astype(np.float32)


def crop_to_box(points: np.ndarray, box: Tuple[int, int, int, int], size: int) -> np.ndarray:
    """Inverse of :func:`box_to_crop`."""
    x1, y1, x2, y2 = box
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2).copy()
    pts[:, 0] = (pts[:, 0] + 0.5) * ((x2 - x1) / float(size)) - 0.5 + x1
    pts[:, 1] = (pts[:, 1] + 0.5) * ((y2 - y1) / float(size)) - 0.5 + y1
    return pts.astype(np.float32)


def condense_projections(points: np.ndarray, size: int, n_prompts: int, outlier_k: int) -> np.ndarray:
    """Projected points -> ``n_prompts`` target prompts, as the pipeline does: clip to the
    input, drop the ``outlier_k`` farthest from the median, K-means (seed 0)."""
    pts = np.clip(np.asarray(points, dtype=np.float64).reshape(-1, 2), 0, size - 1)
    k = max(0, min(int(outlier_k), len(pts) - n_prompts))
    if k > 0:
        pts, _ = remove_outliers_median(pts, k)
    _, centres = cluster_points(pts, n_prompts)
    return np.asarray(centres, dtype=np.float32)


def frame_meta(x1: int, y1: int, x2: int, y2: int, ori_h: int, ori_w: int) -> Dict[str, int]:
    return {"x1": int(x1), "y1": int(y1), "x2": int(x2), "y2": int(y2), "ori_h": int(ori_h), "ori_w": int(ori_w)}


def recover_to_frame(logits: torch.Tensor, meta: Dict[str, int], fill: float = -32.0) -> torch.Tensor:
    """Crop-space logits ``[H, W]`` (any leading singleton dims) pasted back into the target
    frame: resized bilinearly to the box, ``fill`` elsewhere. Returns ``[ori_h, ori_w]``."""
    x = logits
    while x.dim() > 2:
        x = x[0]
    x1, y1, x2, y2 = (int(meta[k]) for k in ("x1", "y1", "x2", "y2"))
    box = F.interpolate(x[None, None].float(), size=(y2 - y1, x2 - x1), mode="bilinear", align_corners=False)[0, 0]
    out = torch.full((int(meta["ori_h"]), int(meta["ori_w"])), float(fill), dtype=box.dtype, device=box.device)
    out[y1:y2, x1:x2] = box
    return out


def images_to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """``[B, H, W, 3] uint8`` -> ``[B, 3, H, W]`` float in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    return t.permute(0, 3, 1, 2).float().div_(255.0)


def pair_images(batch: Dict[str, Any], device: torch.device) -> torch.Tensor:
    """``[B, 2, 3, S, S]`` with the source first (VGGT's reference frame)."""
    return torch.stack([images_to_tensor(batch["src_img"], device), images_to_tensor(batch["tar_img"], device)], dim=1)


def empty_like_points(n: int) -> np.ndarray:
    return np.full((n, 2), np.nan, dtype=np.float32)


def ensure_points(points: Optional[np.ndarray], n: int) -> np.ndarray:
    if points is None:
        return empty_like_points(n)
    return np.asarray(points, dtype=np.float32).reshape(n, 2)


class EpochTaggedSampler(torch.utils.data.Sampler):
    """Wraps a sampler (with ``set_epoch``) and yields ``(epoch, index)``: data sets draw
    their per-epoch randomness from it, which also reaches persistent loader workers
    (a ``set_epoch`` on the main process's copy of the data set would not)."""

    def __init__(self, sampler) -> None:
        self.sampler = sampler
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self):
        return ((self.epoch, int(i)) for i in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


def single_threaded():
    """Run scikit-learn's K-means on one OpenMP thread. Per-sample K-means on a few
    thousand pixels is tiny; with the default thread pool on a busy machine its threads
    spin and wait, which costs 10x more than the work (measured: 170 ms vs 16 ms)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn depends on threadpoolctl
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="openmp")


def describe_batch(batch: Dict[str, Any]) -> List[str]:
    return [f"{k}:{d}" for k, d in zip(batch["key"], batch["direction"])]
