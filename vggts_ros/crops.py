"""Crop-size schedules of the target crop (SPEC step 3): the side of the square cut
around a target's projected points, from the size of their box.

The reference constants are pixels of 960x540 (exo) frames; here they scale with the
frame's short side, so a 540-pixel short side reproduces the reference exactly. The crop
geometry itself lives in :mod:`vggts_ros.transforms`.
"""

from __future__ import annotations

from typing import Callable, Dict

REFERENCE_SHORT_SIDE = 540


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
