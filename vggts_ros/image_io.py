"""Reading images and masks from files and writing PNGs, for the command-line tools.

Images come back as HxWx3 ``uint8`` RGB, masks as HxW ``bool`` (nonzero = object).
Every failure raises :class:`~vggts_ros.errors.UsageError` naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vggts_ros.errors import UsageError


def _imread(path: str, what: str, flags: int) -> np.ndarray:
    import cv2

    if not Path(path).is_file():
        raise UsageError(f"{what} file not found: {path}")
    image = cv2.imread(str(path), flags)
    if image is None:
        raise UsageError(f"cannot read {path} as an image (is it a PNG/JPEG?)")
    return image


def read_rgb(path: str) -> np.ndarray:
    import cv2

    return np.ascontiguousarray(_imread(path, "image", cv2.IMREAD_COLOR)[..., ::-1])


def read_mask(path: str) -> np.ndarray:
    import cv2

    mask = _imread(path, "mask", cv2.IMREAD_UNCHANGED)
    if mask.ndim == 3:
        colour = mask[..., :3]
        if colour.shape[2] == 3 and not (
            (colour[..., 0] == colour[..., 1]).all() and (colour[..., 1] == colour[..., 2]).all()
        ):
            raise UsageError(f"{path} is a colour image, not a mask; give a single-channel (grey) mask, nonzero = object")
        mask = colour[..., 0]
    return mask != 0


def write_png(path: Path, image: np.ndarray) -> None:
    """Write an RGB (HxWx3) or grey (HxW) ``uint8`` image."""
    import cv2

    data = image if image.ndim == 2 else image[..., ::-1]
    if not cv2.imwrite(str(path), np.ascontiguousarray(data)):
        raise UsageError(f"cannot write {path}")
