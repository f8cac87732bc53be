"""Augmentations that turn one image into a pseudo second view.

Two families (VGGT-S supplement):

* **VGGT-adaptive** — crops, scale, small rotation, mild perspective and photometric
  changes. A real second camera looks like this, so VGGT's track head still projects
  source points correctly and its projections are valid prompts.
* **Non-adaptive** — strong perspective, elastic and piecewise-affine warps, flips. VGGT's
  geometry is not valid any more, so the target prompts are built from the warped ground
  truth instead.

Every geometric warp is a backward map (``map_x``, ``map_y``: for each output pixel, where
to read in the input), so image and mask are warped by the same ``cv2.remap``. Adaptive
warps are pure homographies, which also move points forward exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import cv2
import numpy as np

GREY = 114


@dataclass
class Warp:
    """A geometric warp of an ``(h, w)`` image to an output of the same size."""

    map_x: np.ndarray
    map_y: np.ndarray
    homography: Optional[np.ndarray] = None  # forward 3x3 when the warp is a homography
    ops: List[str] = field(default_factory=list)

    def apply(self, image: np.ndarray, mask: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        img = cv2.remap(image, self.map_x, self.map_y, cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=(GREY, GREY, GREY))
        msk = cv2.remap(mask.astype(np.uint8), self.map_x, self.map_y, cv2.INTER_NEAREST,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return img, msk

    def forward_points(self, points: np.ndarray) -> np.ndarray:
        """Move input pixels to output pixels (homographies only)."""
        if self.homography is None:
            raise ValueError("forward_points needs a homography warp")
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 1, 2)
        return cv2.perspectiveTransform(pts, self.homography).reshape(-1, 2).astype(np.float32)


def _grid(h: int, w: int) -> Tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return xs, ys


def _homography_maps(H: np.ndarray, h: int, w: int) -> Tuple[np.ndarray, np.ndarray]:
    inv = np.linalg.inv(H)
    xs, ys = _grid(h, w)
    den = inv[2, 0] * xs + inv[2, 1] * ys + inv[2, 2]
    mx = (inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]) / den
    my = (inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]) / den
    return mx.astype(np.float32), my.astype(np.float32)


def similarity_perspective(
    rng: np.random.Generator, h: int, w: int, center: Tuple[float, float],
    scale: Tuple[float, float], rotate_deg: float, corner_jitter: float,
) -> np.ndarray:
    """Forward homography: scale and rotate about ``center`` then jitter the four image
    corners by up to ``corner_jitter`` of the image size (perspective)."""
    s = float(rng.uniform(*scale))
    a = np.deg2rad(float(rng.uniform(-rotate_deg, rotate_deg)))
    cx, cy = center
    T1 = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]], dtype=np.float64)
    RS = np.array([[s * np.cos(a), -s * np.sin(a), 0], [s * np.sin(a), s * np.cos(a), 0], [0, 0, 1]])
    T2 = np.array([[1, 0, cx], [0, 1, cy], [0, 0, 1]], dtype=np.float64)
    A = T2 @ RS @ T1
    if corner_jitter <= 0:
        return A
    src = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], dtype=np.float32)
    jitter = rng.uniform(-corner_jitter, corner_jitter, size=(4, 2)) * np.array([w, h])
    dst = (src + jitter).astype(np.float32)
    P = cv2.getPerspectiveTransform(src, dst).astype(np.float64)
    return A @ P


def adaptive_warp(rng: np.random.Generator, h: int, w: int, center: Tuple[float, float]) -> Warp:
    """Scale 0.8-1.25, rotation up to 10 degrees, corner jitter up to 4%: the kind of
    change another camera of the same scene produces, which VGGT handles."""
    H = similarity_perspective(rng, h, w, center, (0.8, 1.25), 10.0, 0.04)
    mx, my = _homography_maps(H, h, w)
    return Warp(mx, my, homography=H, ops=["similarity", "mild_perspective"])


def _smooth_field(rng: np.random.Generator, h: int, w: int, cells: int, amplitude: float) -> np.ndarray:
    """Random displacement on a coarse ``cells x cells`` lattice, bicubically upsampled."""
    coarse = rng.uniform(-amplitude, amplitude, size=(cells + 1, cells + 1)).astype(np.float32)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)


def non_adaptive_warp(rng: np.random.Generator, h: int, w: int, center: Tuple[float, float]) -> Warp:
    """One strong deformation (perspective, elastic or piecewise) and a flip half of the
    time (always a flip when the draw would otherwise leave the geometry plain)."""
    xs, ys = _grid(h, w)
    mx, my = xs.copy(), ys.copy()
    ops: List[str] = []
    size = float(min(h, w))
    kind = int(rng.integers(0, 3))
    if kind == 0:
        H = similarity_perspective(rng, h, w, center, (0.75, 1.3), 25.0, float(rng.uniform(0.12, 0.22)))
        mx, my = _homography_maps(H, h, w)
        ops.append("strong_perspective")
    elif kind == 1:
        # Elastic: a dense random field smoothed with a wide Gaussian.
        sigma = size * float(rng.uniform(0.05, 0.09))
        alpha = size * float(rng.uniform(0.05, 0.1))
        k = int(2 * round(3 * sigma) + 1)
        for grid in (mx, my):
            noise = rng.uniform(-1, 1, size=(h, w)).astype(np.float32)
            field_ = cv2.GaussianBlur(noise, (k, k), sigma)
            field_ *= alpha / max(1e-6, float(np.abs(field_).max()))
            grid += field_
        ops.append("elastic")
    else:
        # Piecewise: every cell of a 3x3..5x5 lattice moves on its own.
        cells = int(rng.integers(3, 6))
        amp = size * float(rng.uniform(0.05, 0.1))
        mx += _smooth_field(rng, h, w, cells, amp)
        my += _smooth_field(rng, h, w, cells, amp)
        ops.append("piecewise")
    if rng.random() < 0.5:
        if rng.random() < 0.75:
            mx = (w - 1) - mx
            ops.append("hflip")
        else:
            my = (h - 1) - my
            ops.append("vflip")
    return Warp(mx.astype(np.float32), my.astype(np.float32), homography=None, ops=ops)


def photometric(rng: np.random.Generator, image: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """Brightness, contrast, saturation, hue, gamma, blur and noise (RGB uint8 in/out)."""
    img = image.astype(np.float32)
    s = float(strength)
    img = img * float(rng.uniform(1 - 0.25 * s, 1 + 0.25 * s)) + float(rng.uniform(-20, 20)) * s
    mean = img.mean(axis=(0, 1), keepdims=True)
    img = (img - mean) * float(rng.uniform(1 - 0.25 * s, 1 + 0.25 * s)) + mean
    grey = img.mean(axis=2, keepdims=True)
    img = grey + (img - grey) * float(rng.uniform(1 - 0.3 * s, 1 + 0.3 * s))
    img = np.clip(img, 0, 255)
    if rng.random() < 0.5 * s:
        hsv = cv2.cvtColor(img.astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.int32)
        hsv[..., 0] = (hsv[..., 0] + int(rng.integers(-8, 9))) % 180
        img = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    gamma = float(rng.uniform(1 - 0.2 * s, 1 + 0.2 * s))
    img = 255.0 * (img / 255.0) ** gamma
    if rng.random() < 0.3 * s:
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.3, 1.2)))
    if rng.random() < 0.3 * s:
        img = img + rng.normal(0, float(rng.uniform(1, 5)), size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def disk_offsets(rng: np.random.Generator, n: int, radius: float) -> np.ndarray:
    """``n`` offsets uniformly distributed over a disk of ``radius``."""
    r = radius * np.sqrt(rng.uniform(0, 1, size=n))
    t = rng.uniform(0, 2 * np.pi, size=n)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1).astype(np.float32)
