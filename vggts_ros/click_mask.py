"""Source masks from clicks: points and/or a box on one image -> an object mask, without
weights (OpenCV's GrabCut).

What a click-to-mask service or an RViz/Foxglove "publish point" tool needs: the user
clicks on the object (and optionally on background to exclude, or drags a box), the
mask comes back and is used as a ``set_source_mask`` mask.

* With a box: GrabCut inside it (outside is background), positive points are sure
  object, negative points sure background.
* Points only: GrabCut with a square window around the positive points as its
  rectangle (a margin around it teaches the background colours), grown through a few
  sizes; the object is the first closed region (holding the positive points, holes
  filled, not touching the window's edges inside the image). On a busy texture one
  point may close around a blob of the texture: add points or give a box.

A point on background is refused: at a background point (a floor, a wall) nothing
separates from the surroundings, or the region does not close inside any window, or it
takes a large part of the image; the error says so and suggests a box.
Results are deterministic (OpenCV's RNG is seeded).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np


class ClickMaskError(ValueError):
    """The clicks cannot give a mask; the message says why and what to do."""


@dataclass
class ClickMaskConfig:
    window_scales: Tuple[float, ...] = (0.12, 0.2, 0.32, 0.5)  # window side / larger image side
    max_fraction: float = 0.3  # a mask larger than this share of the image is background
    seed_radius: float = 0.04  # background disk around a negative point, of the window side
    margin: float = 0.25  # background margin around the window, of the window side
    min_area: float = 0.001  # of the image: smaller regions are marks on a surface, not objects
    min_window_share: float = 0.01  # of the window: less is only the clicked pixels (background)
    iterations: int = 5
    border: int = 2  # px: a mask this close to a window edge (inside the image) is open


def _check_inputs(image, points, labels, box):
    img = np.asarray(image)
    if img.ndim == 2:
        img = cv2.cvtColor(img.astype(np.uint8), cv2.COLOR_GRAY2RGB)
    if img.ndim != 3 or img.shape[2] not in (3, 4) or img.dtype != np.uint8:
        raise ClickMaskError(f"image must be HxWx3 uint8, got shape {img.shape} and dtype {img.dtype}")
    img = np.ascontiguousarray(img[..., :3])
    h, w = img.shape[:2]
    pts = np.zeros((0, 2), np.float64) if points is None else np.asarray(points, np.float64).reshape(-1, 2)
    if labels is None:
        lab = np.ones(len(pts), np.int64)
    else:
        lab = np.asarray(labels).reshape(-1).astype(np.int64)
        if len(lab) != len(pts):
            raise ClickMaskError(f"{len(pts)} points but {len(lab)} labels")
        if not np.isin(lab, (0, 1)).all():
            raise ClickMaskError("point labels must be 1 (object) or 0 (background)")
    if not np.isfinite(pts).all():
        raise ClickMaskError("points must be finite pixel coordinates")
    outside = [(float(x), float(y)) for x, y in pts if not (0 <= x <= w - 1 and 0 <= y <= h - 1)]
    if outside:
        raise ClickMaskError(f"point(s) {outside} are outside the {w}x{h} image")
    rect = None
    if box is not None:
        b = np.asarray(box, np.float64).reshape(-1)
        if b.size != 4 or not np.isfinite(b).all():
            raise ClickMaskError("box must be (x0, y0, x1, y1) in pixels")
        x0, x1 = sorted((b[0], b[2]))
        y0, y1 = sorted((b[1], b[3]))
        x0, y0 = max(0, int(math.floor(x0))), max(0, int(math.floor(y0)))
        x1, y1 = min(w, int(math.ceil(x1)) + 1), min(h, int(math.ceil(y1)) + 1)
        if x1 - x0 < 4 or y1 - y0 < 4:
            raise ClickMaskError(f"box {tuple(b.tolist())} is smaller than 4x4 px inside the {w}x{h} image")
        rect = (x0, y0, x1, y1)
    if rect is None and not (lab == 1).any():
        raise ClickMaskError("give at least one point on the object (label 1) or a box")
    return img, pts, lab, rect


def _grabcut(crop: np.ndarray, trimap: np.ndarray, iterations: int) -> np.ndarray:
    if not ((trimap == cv2.GC_BGD) | (trimap == cv2.GC_PR_BGD)).any():
        return (trimap == cv2.GC_FGD) | (trimap == cv2.GC_PR_FGD)
    bgd = np.zeros((1, 65), np.float64)
    fgd = np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)
    cv2.grabCut(crop, trimap, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    return (trimap == cv2.GC_FGD) | (trimap == cv2.GC_PR_FGD)


def _keep_clicked(fg: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """The connected components holding positive points (all of fg without points), holes
    filled except those holding a negative point."""
    n, lab = cv2.connectedComponents(fg.astype(np.uint8), connectivity=8)
    if len(pos):
        ids = {int(lab[int(round(y)), int(round(x))]) for x, y in pos} - {0}
        keep = np.isin(lab, list(ids)) if ids else np.zeros_like(fg)
    else:
        keep = fg.copy()
    # fill holes: what the border cannot reach
    inv = (~keep).astype(np.uint8)
    n2, lab2 = cv2.connectedComponents(inv, connectivity=4)
    border = set(np.unique(np.concatenate([lab2[0], lab2[-1], lab2[:, 0], lab2[:, -1]]).tolist()))
    kept_out = {int(lab2[int(round(y)), int(round(x))]) for x, y in neg
                if 0 <= int(round(y)) < lab2.shape[0] and 0 <= int(round(x)) < lab2.shape[1]}
    holes = (lab2 > 0) & ~np.isin(lab2, list(border | kept_out))
    return keep | holes


def _disk(trimap, x, y, r, value):
    cv2.circle(trimap, (int(round(x)), int(round(y))), int(max(1, r)), int(value), -1)


def mask_from_clicks(image: np.ndarray, points: Optional[Sequence[Sequence[float]]] = None,
                     labels: Optional[Sequence[int]] = None, box: Optional[Sequence[float]] = None,
                     config: Optional[ClickMaskConfig] = None) -> np.ndarray:
    """``HxW`` bool mask of the object marked by ``points`` (``(x, y)`` pixels, ``labels``
    1 = object, 0 = background; default all object) and/or ``box`` ``(x0, y0, x1, y1)``.

    Raises :class:`ClickMaskError` naming the problem (bad input, a click on background,
    nothing separable in the box).
    """
    cfg = config or ClickMaskConfig()
    img, pts, lab, rect = _check_inputs(image, points, labels, box)
    h, w = img.shape[:2]
    pos, neg = pts[lab == 1], pts[lab == 0]
    limit = cfg.max_fraction * h * w

    if rect is not None:
        x0, y0, x1, y1 = rect
        m = 8  # some background outside the box for the colour models
        cx0, cy0, cx1, cy1 = max(0, x0 - m), max(0, y0 - m), min(w, x1 + m), min(h, y1 + m)
        trimap = np.full((cy1 - cy0, cx1 - cx0), cv2.GC_BGD, np.uint8)
        trimap[y0 - cy0 : y1 - cy0, x0 - cx0 : x1 - cx0] = cv2.GC_PR_FGD
        r = max(2, int(round(0.02 * max(x1 - x0, y1 - y0))))
        for x, y in pos:
            _disk(trimap, x - cx0, y - cy0, r, cv2.GC_FGD)
        for x, y in neg:
            _disk(trimap, x - cx0, y - cy0, r, cv2.GC_BGD)
        fg = _grabcut(np.ascontiguousarray(img[cy0:cy1, cx0:cx1]), trimap, cfg.iterations)
        out = np.zeros((h, w), bool)
        out[cy0:cy1, cx0:cx1] = _keep_clicked(fg, pos - [cx0, cy0], neg - [cx0, cy0])
        if not out.any():
            raise ClickMaskError(f"nothing inside the box {rect} separates from its surroundings; "
                                 "draw the box tighter around the object or add a point on it")
        return out

    side_max = max(h, w)
    centre = pos.mean(axis=0)
    spread = float(np.ptp(pos, axis=0).max()) if len(pos) > 1 else 0.0

    def at(scale: float):
        """(mask or None, why) for the window of this scale."""
        side = max(24.0, scale * side_max, 1.6 * spread + 16)
        wx0 = int(max(0, math.floor(centre[0] - side / 2)))
        wy0 = int(max(0, math.floor(centre[1] - side / 2)))
        wx1 = int(min(w, math.ceil(centre[0] + side / 2)))
        wy1 = int(min(h, math.ceil(centre[1] + side / 2)))
        # GrabCut as with a rectangle: the window is probably object, a margin around it
        # is background (it teaches the background colours).
        m = int(round(cfg.margin * side))
        x0, y0, x1, y1 = max(0, wx0 - m), max(0, wy0 - m), min(w, wx1 + m), min(h, wy1 + m)
        trimap = np.full((y1 - y0, x1 - x0), cv2.GC_BGD, np.uint8)
        trimap[wy0 - y0 : wy1 - y0, wx0 - x0 : wx1 - x0] = cv2.GC_PR_FGD
        r = max(2, cfg.seed_radius * side)
        for x, y in pos:
            _disk(trimap, x - x0, y - y0, 2, cv2.GC_FGD)
        for x, y in neg:
            _disk(trimap, x - x0, y - y0, r, cv2.GC_BGD)
        fg = _grabcut(np.ascontiguousarray(img[y0:y1, x0:x1]), trimap, cfg.iterations)
        keep = _keep_clicked(fg, pos - [x0, y0], neg - [x0, y0])
        area = int(keep.sum())
        if area > limit:
            return None, "large"
        if area < max(cfg.min_area * h * w, cfg.min_window_share * (wx1 - wx0) * (wy1 - wy0)):
            return None, "tiny"  # only the clicked pixels: what is there looks like the surroundings
        b = cfg.border
        win = keep[wy0 - y0 : wy1 - y0, wx0 - x0 : wx1 - x0]
        if ((win[:, : b + 1].any() and wx0 > 0) or (win[: b + 1, :].any() and wy0 > 0)
                or (win[:, -(b + 1):].any() and wx1 < w) or (win[-(b + 1):, :].any() and wy1 < h)):
            return None, "open"
        out = np.zeros((h, w), bool)
        out[y0:y1, x0:x1] = keep
        return out, "closed"

    # The object is the first closed region: the window grows until what holds the
    # point no longer touches its edges.
    whys = []
    for scale in cfg.window_scales:
        mask, why = at(scale)
        whys.append(why)
        if mask is not None:
            return mask
        if why == "large":
            break
    where = ", ".join(f"({x:.0f}, {y:.0f})" for x, y in pos)
    side = max(24.0, cfg.window_scales[len(whys) - 1] * side_max)
    if whys[-1] == "large":
        why = f"the region there covers more than {cfg.max_fraction:.0%} of the image"
    elif whys.count("tiny") >= max(whys.count("open"), whys.count("closed")):
        why = "nothing there separates from its surroundings"
    elif whys.count("open") >= whys.count("closed"):
        why = (f"the region there does not close inside a {int(side)}x{int(side)} px window "
               f"({cfg.window_scales[len(whys) - 1]:.0%} of the image side)")
    else:
        why = "no closed region holds it"
    raise ClickMaskError(f"the point(s) {where} look like background: {why}; click on an object, "
                         "or give a box around it")
