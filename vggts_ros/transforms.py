"""View transforms: how a camera frame becomes a network view, and how predictions come back.

Every image the networks see is one of two transforms of a frame (SPEC steps 2-4 and 8):

* :class:`Window` -- a rectangle of the frame resized to the view size. Built by
  :func:`resize` (the whole frame), :func:`square_around_mask_mean` (the short-side square
  of a non-square source, reference ``clip_exo_mean``), :func:`square_around_points` (the
  crop of a cropped target around its projected points, ``clip_exo_box_center_wp``) and
  :func:`window_around_mask` (the R=2 zoom on the source mask, ``crop_and_resize_by_mask_safe``).
* :class:`Letterbox` -- the long side resized to the view size, the short side to a
  multiple of 14, grey padding bottom/right (the first pass's non-square targets).

:class:`Chain` composes them (the source crop is a window of the source square, itself a
window of the frame). Each transform maps images (area interpolation), masks (nearest) and
points forward (frame -> view) and points and logits back (view -> frame), so a role or a
direction is decided once (:func:`prepare_source`, :func:`crop_target`) and used alike by
inference, training and evaluation.

Points are ``(x, y)`` pixel indices scaled as the reference scales them,
``x' = (x - x1) * s`` (not pixel centres, ``(x + 0.5) * s - 0.5``): the two differ by at most
``|s - 1| / 2`` px and the reference's numbers are kept. Logits are resized bilinearly with
``align_corners=False`` (pixel-centre aligned, as the reference does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from vggts_ros import prompts

PATCH = 14
LETTERBOX_PAD_VALUE = 114
# Logit painted where the view does not cover the frame (the reference's value).
OUTSIDE_LOGIT = -32.0

Box = Tuple[int, int, int, int]  # (x1, y1, x2, y2), x2/y2 exclusive


def _as_points(points) -> np.ndarray:
    return np.asarray(points, dtype=np.float64).reshape(-1, 2)


def _clip_points(pts: np.ndarray, h: int, w: int) -> np.ndarray:
    pts = pts.copy()
    pts[:, 0] = np.clip(pts[:, 0], 0, w - 1)
    pts[:, 1] = np.clip(pts[:, 1], 0, h - 1)
    return pts


def _logits_2d(logits: torch.Tensor) -> torch.Tensor:
    x = logits
    while x.dim() > 2:
        if x.shape[0] != 1:
            raise ValueError(f"expected a single map of logits, got shape {tuple(logits.shape)}")
        x = x[0]
    return x


def _bilinear(x: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape) == tuple(hw):
        return x
    return F.interpolate(x[None, None].float(), size=hw, mode="bilinear", align_corners=False)[0, 0].to(x.dtype)


class ViewTransform:
    """Frame (``frame_hw``) -> view (``view_hw``) and back."""

    frame_hw: Tuple[int, int]
    view_hw: Tuple[int, int]

    def image(self, image: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def mask(self, mask: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def points(self, points, clip: bool = True) -> np.ndarray:
        """Frame pixels -> view pixels (float64), clipped to the view with ``clip``."""
        raise NotImplementedError

    def points_to_frame(self, points, clip: bool = False) -> np.ndarray:
        """View pixels -> frame pixels (float64), clipped to the frame with ``clip``."""
        raise NotImplementedError

    def logits_to_frame(self, logits: torch.Tensor, fill: float = OUTSIDE_LOGIT) -> torch.Tensor:
        """View logits (``[h, w]``, ``[1, h, w]`` or ``[1, 1, h, w]``, any device) -> frame
        logits ``[H, W]`` on the same device; frame pixels the view does not show get ``fill``."""
        raise NotImplementedError


@dataclass(frozen=True)
class Window(ViewTransform):
    """The frame rectangle ``box`` resized to ``view_hw`` (per-axis scale; square boxes and
    views keep proportions)."""

    frame_hw: Tuple[int, int]
    box: Box
    view_hw: Tuple[int, int]

    def __post_init__(self) -> None:
        x1, y1, x2, y2 = self.box
        h, w = self.frame_hw
        if not (0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h):
            raise ValueError(f"window {self.box} is not inside a {w}x{h} frame")

    @property
    def scale(self) -> Tuple[float, float]:
        """View pixels per frame pixel along (x, y)."""
        x1, y1, x2, y2 = self.box
        return self.view_hw[1] / (x2 - x1), self.view_hw[0] / (y2 - y1)

    @property
    def whole_frame(self) -> bool:
        return tuple(self.box) == (0, 0, self.frame_hw[1], self.frame_hw[0])

    def _cut(self, array: np.ndarray) -> np.ndarray:
        x1, y1, x2, y2 = self.box
        return array[y1:y2, x1:x2]

    def image(self, image: np.ndarray) -> np.ndarray:
        h, w = self.view_hw
        return cv2.resize(np.ascontiguousarray(self._cut(image)), (w, h), interpolation=cv2.INTER_AREA)

    def mask(self, mask: np.ndarray, keep_tiny: bool = False) -> np.ndarray:
        """Nearest-resized ``{0, 1}`` uint8 mask. ``keep_tiny``: when resizing drops every
        foreground pixel of the window, mark those pixels at their scaled positions."""
        h, w = self.view_hw
        cut = (np.asarray(self._cut(mask)) > 0).astype(np.uint8)
        out = cv2.resize(cut, (w, h), interpolation=cv2.INTER_NEAREST)
        if keep_tiny and not out.any() and cut.any():
            ys, xs = np.nonzero(cut)
            sx, sy = self.scale
            out[np.clip((ys * sy).astype(int), 0, h - 1), np.clip((xs * sx).astype(int), 0, w - 1)] = 1
        return out

    def points(self, points, clip: bool = True) -> np.ndarray:
        pts = _as_points(points).copy()
        sx, sy = self.scale
        pts[:, 0] = (pts[:, 0] - self.box[0]) * sx
        pts[:, 1] = (pts[:, 1] - self.box[1]) * sy
        return _clip_points(pts, *self.view_hw) if clip else pts

    def points_to_frame(self, points, clip: bool = False) -> np.ndarray:
        pts = _as_points(points).copy()
        x1, y1, x2, y2 = self.box
        pts[:, 0] = pts[:, 0] * ((x2 - x1) / float(self.view_hw[1])) + x1
        pts[:, 1] = pts[:, 1] * ((y2 - y1) / float(self.view_hw[0])) + y1
        return _clip_points(pts, *self.frame_hw) if clip else pts

    def logits_to_frame(self, logits: torch.Tensor, fill: float = OUTSIDE_LOGIT) -> torch.Tensor:
        x = _logits_2d(logits)
        x1, y1, x2, y2 = self.box
        inside = _bilinear(x, (y2 - y1, x2 - x1))
        if self.whole_frame:
            return inside
        out = torch.full(self.frame_hw, float(fill), device=x.device, dtype=x.dtype)
        out[y1:y2, x1:x2] = inside
        return out


@dataclass(frozen=True)
class Letterbox(ViewTransform):
    """Long side to ``size``, short side to the nearest multiple of 14 (at least 14), the
    content at the top left and grey (images) or 0 (masks) padding bottom/right."""

    frame_hw: Tuple[int, int]
    size: int

    @property
    def view_hw(self) -> Tuple[int, int]:
        return (self.size, self.size)

    @property
    def content_hw(self) -> Tuple[int, int]:
        h, w = self.frame_hw
        if h == w:
            return (self.size, self.size)
        short = max(PATCH, int(round(min(h, w) * (self.size / max(h, w)) / PATCH) * PATCH))
        return (short, self.size) if w > h else (self.size, short)

    @property
    def scale(self) -> Tuple[float, float]:
        """View pixels per frame pixel of the content along (x, y)."""
        ch, cw = self.content_hw
        return cw / self.frame_hw[1], ch / self.frame_hw[0]

    def _pad(self, content: np.ndarray, value: int) -> np.ndarray:
        ph, pw = self.size - content.shape[0], self.size - content.shape[1]
        if ph == 0 and pw == 0:
            return content
        pad = ((0, ph), (0, pw)) + ((0, 0),) * (content.ndim - 2)
        return np.pad(content, pad, mode="constant", constant_values=value)

    def image(self, image: np.ndarray) -> np.ndarray:
        ch, cw = self.content_hw
        return self._pad(cv2.resize(image, (cw, ch), interpolation=cv2.INTER_AREA), LETTERBOX_PAD_VALUE)

    def mask(self, mask: np.ndarray) -> np.ndarray:
        ch, cw = self.content_hw
        m = (np.asarray(mask) > 0).astype(np.uint8)
        return self._pad(cv2.resize(m, (cw, ch), interpolation=cv2.INTER_NEAREST), 0)

    def points(self, points, clip: bool = True) -> np.ndarray:
        """Frame -> view at the content's per-axis scale (clipped to the content)."""
        pts = _as_points(points).copy()
        sx, sy = self.scale
        pts[:, 0] *= sx
        pts[:, 1] *= sy
        return _clip_points(pts, *self.content_hw) if clip else pts

    def points_to_frame(self, points, clip: bool = False) -> np.ndarray:
        """Exact inverse of :meth:`points` (per-axis content scale)."""
        pts = _as_points(points).copy()
        sx, sy = self.scale
        pts[:, 0] /= sx
        pts[:, 1] /= sy
        return _clip_points(pts, *self.frame_hw) if clip else pts

    def reference_points_to_frame(self, points) -> np.ndarray:
        """The reference's mapping of first-pass tracks into an exo frame (kept for
        fidelity of the ego->exo recipe): clip to ``[0, size-1]``, scale both axes by the
        long-side ratio (960/518), clip to the frame. On the short axis this differs from
        :meth:`points_to_frame` by the rounding of the content to a multiple of 14."""
        pts = np.clip(_as_points(points), 0, self.size - 1)
        pts = pts * (max(self.frame_hw) / self.size)
        return _clip_points(pts, *self.frame_hw)

    def logits_to_frame(self, logits: torch.Tensor, fill: float = OUTSIDE_LOGIT) -> torch.Tensor:
        x = _logits_2d(logits)
        ch, cw = self.content_hw
        return _bilinear(x[:ch, :cw], self.frame_hw)


@dataclass(frozen=True)
class Chain(ViewTransform):
    """``outer`` (frame -> intermediate view) then ``inner`` (intermediate -> view)."""

    outer: ViewTransform
    inner: ViewTransform

    @property
    def frame_hw(self) -> Tuple[int, int]:
        return self.outer.frame_hw

    @property
    def view_hw(self) -> Tuple[int, int]:
        return self.inner.view_hw

    def image(self, image: np.ndarray) -> np.ndarray:
        return self.inner.image(self.outer.image(image))

    def mask(self, mask: np.ndarray) -> np.ndarray:
        return self.inner.mask(self.outer.mask(mask))

    def points(self, points, clip: bool = True) -> np.ndarray:
        return self.inner.points(self.outer.points(points, clip), clip)

    def points_to_frame(self, points, clip: bool = False) -> np.ndarray:
        return self.outer.points_to_frame(self.inner.points_to_frame(points, clip), clip)

    def logits_to_frame(self, logits: torch.Tensor, fill: float = OUTSIDE_LOGIT) -> torch.Tensor:
        return self.outer.logits_to_frame(self.inner.logits_to_frame(logits, fill), fill)


# =======================================================================================
# Constructors (the reference's view geometry)
# =======================================================================================
def resize(frame_hw: Tuple[int, int], size: int) -> Window:
    """The whole frame resized to ``size x size`` (reference: square ego frames)."""
    h, w = frame_hw
    return Window((int(h), int(w)), (0, 0, int(w), int(h)), (int(size), int(size)))


def letterbox(frame_hw: Tuple[int, int], size: int) -> Letterbox:
    return Letterbox((int(frame_hw[0]), int(frame_hw[1])), int(size))


def square_around_mask_mean(mask: np.ndarray, size: int) -> Window:
    """Short-side square of the frame centred along the long side on the integer mean
    position of the mask, clamped inside the frame (reference ``clip_exo_mean``, which
    hard-codes the 540-of-960 case); a square frame gives the whole frame. An empty mask
    centres the square."""
    mask = np.asarray(mask)
    h, w = mask.shape[:2]
    side = min(h, w)
    ys, xs = np.nonzero(mask > 0)
    if w >= h:
        mid = int(xs.mean()) if xs.size else w // 2
        x1 = min(max(mid - side // 2, 0), w - side)
        box = (x1, 0, x1 + side, h)
    else:
        mid = int(ys.mean()) if ys.size else h // 2
        y1 = min(max(mid - side // 2, 0), h - side)
        box = (0, y1, w, y1 + side)
    return Window((h, w), box, (int(size), int(size)))


def square_around_points(
    frame_hw: Tuple[int, int], points, crop_size: int, view_hw: int | Tuple[int, int]
) -> Window:
    """A ``crop_size`` square (at most the short side) centred on the box of ``points``,
    shifted inside the frame (reference ``clip_exo_box_center_wp``)."""
    h, w = frame_hw
    out = (view_hw, view_hw) if isinstance(view_hw, int) else tuple(view_hw)
    side = int(min(int(crop_size), h, w))
    pts = _as_points(points)
    cx = (pts[:, 0].min() + pts[:, 0].max()) / 2.0
    cy = (pts[:, 1].min() + pts[:, 1].max()) / 2.0
    x1 = int(np.clip(round(cx - side / 2.0), 0, w - side))
    y1 = int(np.clip(round(cy - side / 2.0), 0, h - side))
    return Window((int(h), int(w)), (x1, y1, x1 + side, y1 + side), (int(out[0]), int(out[1])))


def window_around_mask(mask: np.ndarray, ratio: float = 2.0) -> Window:
    """Zoom on the object (reference ``crop_and_resize_by_mask_safe``): a square of
    ``int(H / ratio)`` grown to cover the mask box, centred on the box, shifted inside the
    frame, resized back to the frame size. An empty mask gives a centred square."""
    mask = np.asarray(mask)
    h, w = mask.shape[:2]
    ys, xs = np.nonzero(mask > 0)
    target = int(h / ratio)
    if len(xs) == 0:
        side = target
        x1 = max(0, min(w // 2 - side // 2, w - side))
        y1 = max(0, min(h // 2 - side // 2, h - side))
        x2, y2 = x1 + side, y1 + side
    else:
        x_lo, x_hi, y_lo, y_hi = int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())
        side = max(target, x_hi - x_lo + 1, y_hi - y_lo + 1)
        x1 = (x_lo + x_hi) // 2 - side // 2
        y1 = (y_lo + y_hi) // 2 - side // 2
        x1 = min(max(x1, 0), w - side) if side <= w else 0
        y1 = min(max(y1, 0), h - side) if side <= h else 0
        x2, y2 = min(w, x1 + side), min(h, y1 + side)
        x1, y1 = max(0, x1), max(0, y1)
    return Window((h, w), (int(x1), int(y1), int(x2), int(y2)), (h, w))


# =======================================================================================
# The view recipes shared by inference, training and evaluation
# =======================================================================================
@dataclass
class SourceView:
    """The source as the networks see it.

    ``square`` (frame -> the 518 source view: frame 0 of the first pass) and ``crop``
    (frame -> the zoom on the object fed to the features pass and the head)."""

    square: Window
    image: np.ndarray  # the source view (size x size x 3)
    mask: np.ndarray  # its mask, uint8 {0, 1}
    crop: ViewTransform  # Chain(square, zoom), or ``square`` itself when the zoom is empty
    crop_image: np.ndarray
    crop_mask: np.ndarray  # uint8 {0, 1}


def prepare_source(image: np.ndarray, mask: np.ndarray, size: int, ratio: float = 2.0) -> SourceView:
    """SPEC steps 2 and 4 for the source: the square view (a square frame resized, a
    non-square one cut to the short-side square around the mask mean), then the R=``ratio``
    zoom on the mask within it (falling back to the square view when the zoom's mask is empty)."""
    square = square_around_mask_mean(mask, size)
    view = square.image(image)
    view_mask = square.mask(mask, keep_tiny=True)
    zoom = window_around_mask(view_mask, ratio)
    crop_mask = zoom.mask(view_mask)
    if not crop_mask.any():
        return SourceView(square, view, view_mask, square, view, view_mask)
    return SourceView(square, view, view_mask, Chain(square, zoom), zoom.image(view), crop_mask)


@dataclass
class TargetCrop:
    """The square crop of a target frame around its projected points (SPEC step 3)."""

    window: Window
    kept: np.ndarray  # indices of the projections kept (outliers removed), farthest first
    box_size: float
    crop_size: int


def crop_target(
    frame_hw: Tuple[int, int], frame_points, size: int, schedule: str = "3x", outlier_k: int = 10
) -> TargetCrop:
    """Drop the ``outlier_k`` projections farthest from their median, size a square crop
    from the remaining points' box with the schedule (scaled by the frame's short side) and
    centre it on that box."""
    from vggts_ros.crops import crop_size as schedule_size

    pts = _as_points(frame_points)
    kept, _ = prompts.median_outlier_split(pts, outlier_k)
    box = prompts.points_box_size(pts[kept])
    side = schedule_size(schedule, box, short_side=min(frame_hw))
    return TargetCrop(square_around_points(frame_hw, pts[kept], side, size), kept, float(box), int(side))

