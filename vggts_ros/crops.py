"""Image geometry of the pipeline: letterboxing to the network size, the square target
crop around projected points (and its inverse for logits and points), the crop around
the source mask, and the crop-size schedules.

The reference constants are pixels of 960x540 (exo) frames; here they scale with the
frame's short side, so a 540-pixel short side reproduces the reference exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Dict, Optional, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F

REFERENCE_SHORT_SIDE = 540
LETTERBOX_PAD_VALUE = 114
PATCH = 14


# --------------------------------------------------------------------------- schedules
def _linear_schedule(lo: float, hi: float, c_lo: float, c_hi: float, slope: float):
    def schedule(box_size: float, short_side: int = REFERENCE_SHORT_SIDE) -> int:
        s = float(short_side)
        lo_s, hi_s = s * lo / REFERENCE_SHORT_SIDE, s * hi / REFERENCE_SHORT_SIDE
        if box_size < lo_s:
            size = int(s * c_lo / REFERENCE_SHORT_SIDE)
        elif box_size > hi_s:
            size = int(s * c_hi / REFERENCE_SHORT_SIDE)
        else:
            size = int(slope * (box_size - lo_s) + s * c_lo / REFERENCE_SHORT_SIDE)
        return max(1, min(size, int(short_side)))

    return schedule


crop_size_3x = _linear_schedule(50, 200, 180, 540, 2.4)
crop_size_2x = _linear_schedule(80, 200, 270, 540, 2.25)
crop_size_1_5x = _linear_schedule(100, 200, 360, 540, 1.8)


def crop_size_1x(box_size: float, short_side: int = REFERENCE_SHORT_SIDE) -> int:
    return int(short_side)


crop_size_3x.__doc__ = "About 3x context: 1/3 of the short side below a box of 50/540 of it, the full short side above 200/540, linear between."
crop_size_2x.__doc__ = "About 2x context: 1/2 of the short side below 80/540 of it, the full short side above 200/540."
crop_size_1_5x.__doc__ = "About 1.5x context: 2/3 of the short side below 100/540 of it, the full short side above 200/540."

CROP_SCHEDULES: Dict[str, Callable[..., int]] = {
    "3x": crop_size_3x,
    "2x": crop_size_2x,
    "1.5x": crop_size_1_5x,
    "1x": crop_size_1x,
}


def crop_size(schedule: str, box_size: float, short_side: int = REFERENCE_SHORT_SIDE) -> int:
    """Square crop side (pixels of the frame) for a projected-point box of ``box_size``."""
    try:
        fn = CROP_SCHEDULES[schedule]
    except KeyError:
        raise ValueError(f"unknown crop schedule {schedule!r}; expected one of {list(CROP_SCHEDULES)}") from None
    return fn(box_size, short_side)


# --------------------------------------------------------------------------- letterbox
@dataclass
class LetterboxMeta:
    ori_h: int
    ori_w: int
    new_h: int  # size of the resized content, before padding
    new_w: int
    size: int

    @property
    def scale(self) -> float:
        """Network pixels per frame pixel along the long side."""
        return self.size / max(self.ori_h, self.ori_w)


def letterbox(image: np.ndarray, size: int = 518, is_mask: bool = False) -> Tuple[np.ndarray, LetterboxMeta]:
    """Resize so that the long side is ``size`` and the short side a multiple of 14, then
    pad the bottom/right to ``size x size`` (grey 114 for images, 0 for masks).
    Square frames are resized directly. Images use area interpolation, masks nearest."""
    h, w = image.shape[:2]
    interp = cv2.INTER_NEAREST if is_mask else cv2.INTER_AREA
    if h == w:
        new_h = new_w = size
    elif w > h:
        new_w, new_h = size, int(round(h * (size / w) / PATCH) * PATCH)
    else:
        new_h, new_w = size, int(round(w * (size / h) / PATCH) * PATCH)
    src = image.astype(np.uint8) if is_mask and image.dtype == np.bool_ else image
    out = cv2.resize(src, (new_w, new_h), interpolation=interp)
    pad_h, pad_w = size - out.shape[0], size - out.shape[1]
    if pad_h > 0 or pad_w > 0:
        pad = ((0, pad_h), (0, pad_w)) + ((0, 0),) * (out.ndim - 2)
        out = np.pad(out, pad, mode="constant", constant_values=0 if is_mask else LETTERBOX_PAD_VALUE)
    if is_mask:
        out = out.astype(np.uint8)
    return out, LetterboxMeta(h, w, new_h, new_w, size)


def letterbox_points_to_frame(points: np.ndarray, meta: LetterboxMeta, clip: bool = True) -> np.ndarray:
    """Network pixels -> frame pixels, as the reference does it: scale both axes by the
    long-side ratio; with ``clip``, clip to ``[0, size - 1]`` before and to the frame after."""
    pts = np.asarray(points, dtype=np.float32)
    if clip:
        pts = np.clip(pts, 0, meta.size - 1)
    pts = pts * (max(meta.ori_h, meta.ori_w) / meta.size)
    if clip:
        pts = pts.copy()
        pts[:, 0] = np.clip(pts[:, 0], 0, meta.ori_w - 1)
        pts[:, 1] = np.clip(pts[:, 1], 0, meta.ori_h - 1)
    return pts


# --------------------------------------------------------------------------- square crop
@dataclass
class CropMeta:
    """Where a square crop came from, enough to map predictions back."""

    x1: int
    y1: int
    x2: int
    y2: int
    crop_size: int
    ori_h: int
    ori_w: int
    H: int
    W: int

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d) -> "CropMeta":
        return cls(**{k: int(d[k]) for k in ("x1", "y1", "x2", "y2", "crop_size", "ori_h", "ori_w", "H", "W")})


@dataclass
class SquareCrop:
    image: np.ndarray  # H x W x 3
    points: np.ndarray  # N x 2 float32, crop-output pixels
    meta: CropMeta
    mask: Optional[np.ndarray] = None  # H x W uint8 when a mask was given
    mask_cropped: bool = False  # part of the given mask falls outside the crop


def square_crop_around_points(
    image: np.ndarray,
    points: np.ndarray,
    crop_size: int,
    out_size: int | Tuple[int, int] = 518,
    mask: Optional[np.ndarray] = None,
) -> SquareCrop:
    """Cut a ``crop_size`` square centred on the box of ``points`` (shifted to stay inside
    the frame), resize it to ``out_size`` and move the points along (clipped to it)."""
    out_h, out_w = (out_size, out_size) if isinstance(out_size, int) else out_size
    ori_h, ori_w = image.shape[:2]
    crop_size = int(min(int(crop_size), ori_h, ori_w))
    pts = np.asarray(points)
    cx = (pts[:, 0].min() + pts[:, 0].max()) / 2.0
    cy = (pts[:, 1].min() + pts[:, 1].max()) / 2.0
    half = crop_size / 2.0
    x1 = int(np.clip(round(cx - half), 0, ori_w - crop_size))
    y1 = int(np.clip(round(cy - half), 0, ori_h - crop_size))
    x2, y2 = x1 + crop_size, y1 + crop_size

    out_img = cv2.resize(image[y1:y2, x1:x2], (out_w, out_h), interpolation=cv2.INTER_AREA)
    out_mask, cut = None, False
    if mask is not None:
        mask_u8 = np.asarray(mask).astype(np.uint8)
        ys, xs = np.nonzero(mask_u8 > 0)
        cut = len(xs) == 0 or not (xs.min() >= x1 and ys.min() >= y1 and xs.max() <= x2 and ys.max() <= y2)
        out_mask = cv2.resize(mask_u8[y1:y2, x1:x2], (out_w, out_h), interpolation=cv2.INTER_NEAREST)

    moved = pts.astype(np.float64, copy=True)
    moved[:, 0] = np.clip((moved[:, 0] - x1) * (out_w / crop_size), 0, out_w - 1)
    moved[:, 1] = np.clip((moved[:, 1] - y1) * (out_h / crop_size), 0, out_h - 1)
    meta = CropMeta(x1, y1, x2, y2, crop_size, ori_h, ori_w, out_h, out_w)
    return SquareCrop(out_img, moved.astype(np.float32), meta, out_mask, bool(cut))


def recover_square_crop(
    logits: torch.Tensor,
    points: Optional[torch.Tensor],
    meta: CropMeta | dict,
    fill: float = -32.0,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Map crop-space logits (``[H, W]``, ``[1, H, W]`` or ``[1, 1, H, W]``) and points back
    to the frame. Logits are resized bilinearly to the crop and pasted on a ``fill``
    canvas of the frame size. Returns (``[ori_h, ori_w]`` logits, ``[N, 2]`` points or None)."""
    m = meta if isinstance(meta, CropMeta) else CropMeta.from_dict(meta)
    x = logits
    while x.dim() > 2:
        if x.shape[0] != 1:
            raise ValueError(f"expected a single mask, got shape {tuple(logits.shape)}")
        x = x[0]
    crop = F.interpolate(x[None, None].float(), size=(m.crop_size, m.crop_size), mode="bilinear", align_corners=False)
    out = torch.full((m.ori_h, m.ori_w), float(fill), device=x.device, dtype=x.dtype)
    out[m.y1 : m.y2, m.x1 : m.x2] = crop[0, 0].to(x.dtype)
    if points is None or points.numel() == 0:
        return out, None
    p = points.to(device=x.device, dtype=x.dtype)
    back = torch.stack([p[:, 0] * (m.crop_size / float(m.W)) + m.x1, p[:, 1] * (m.crop_size / float(m.H)) + m.y1], 1)
    return out, back


# --------------------------------------------------------------------------- source crop
def crop_around_mask(
    image: np.ndarray, mask: np.ndarray, ratio: float = 2.0
) -> Tuple[np.ndarray, np.ndarray, Tuple[int, int, int, int]]:
    """Zoom on the object: a square of ``H / ratio`` (grown to cover the whole mask box)
    centred on the mask box, kept inside the frame, resized back to the input size.
    An empty mask gives a centred crop. Returns (image, mask, (x1, y1, x2, y2))."""
    mask = np.asarray(mask)
    h, w = mask.shape[:2]
    ys, xs = np.nonzero(mask > 0)
    target = int(h / ratio)
    if len(xs) == 0:
        cx, cy, size = w // 2, h // 2, target
        x1 = max(0, min(cx - size // 2, w - size))
        y1 = max(0, min(cy - size // 2, h - size))
        x2, y2 = x1 + size, y1 + size
    else:
        x_lo, x_hi, y_lo, y_hi = int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())
        size = max(target, x_hi - x_lo + 1, y_hi - y_lo + 1)
        x1 = (x_lo + x_hi) // 2 - size // 2
        y1 = (y_lo + y_hi) // 2 - size // 2
        # Slide the window back inside the frame, then clamp what still sticks out.
        x1 = min(max(x1, 0), w - size) if size <= w else 0
        y1 = min(max(y1, 0), h - size) if size <= h else 0
        x2, y2 = min(w, x1 + size), min(h, y1 + size)
        x1, y1 = max(0, x1), max(0, y1)
    out_mask = cv2.resize(mask[y1:y2, x1:x2], (w, h), interpolation=cv2.INTER_NEAREST)
    out_img = cv2.resize(image[y1:y2, x1:x2], (w, h), interpolation=cv2.INTER_AREA)
    return out_img, out_mask, (int(x1), int(y1), int(x2), int(y2))
