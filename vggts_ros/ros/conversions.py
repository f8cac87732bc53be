"""sensor_msgs <-> NumPy without cv_bridge.

The ROS 2 ``cv_bridge`` is not on PyPI (PyPI's ``cv-bridge`` is an unrelated port), and
the conversions the node needs are small: raw ``Image`` buffers of the common encodings
and ``CompressedImage`` payloads decoded with OpenCV. Every failure raises
``ImageError`` with a message that names the problem.
"""

from __future__ import annotations

from typing import Tuple

import cv2
import numpy as np

# encoding -> (channels, dtype, colour order of 3/4-channel data)
ENCODINGS = {
    "rgb8": (3, np.uint8, "rgb"),
    "bgr8": (3, np.uint8, "bgr"),
    "rgba8": (4, np.uint8, "rgb"),
    "bgra8": (4, np.uint8, "bgr"),
    "mono8": (1, np.uint8, None),
    "8UC1": (1, np.uint8, None),
    "8UC3": (3, np.uint8, "bgr"),
    "8UC4": (4, np.uint8, "bgr"),
    "mono16": (1, np.uint16, None),
    "16UC1": (1, np.uint16, None),
}
MASK_ENCODINGS = ("mono8", "8UC1")


class ImageError(ValueError):
    """An image message that cannot be turned into pixels."""


def _buffer(msg, channels: int, dtype) -> np.ndarray:
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageError(f"image has no pixels ({width}x{height})")
    itemsize = np.dtype(dtype).itemsize
    row = width * channels * itemsize
    if step < row:
        raise ImageError(f"step {step} is smaller than width*channels*bytes = {row}")
    data = msg.data
    raw = np.frombuffer(bytes(data) if not isinstance(data, (bytes, bytearray, memoryview)) else data, dtype=np.uint8)
    if raw.size < step * height:
        raise ImageError(f"data holds {raw.size} bytes, expected step*height = {step * height}")
    rows = raw[: step * height].reshape(height, step)[:, :row]
    big = bool(getattr(msg, "is_bigendian", 0))
    arr = np.ascontiguousarray(rows).view(np.dtype(dtype).newbyteorder(">" if big else "<"))
    return arr.reshape(height, width, channels).astype(dtype, copy=False)


def image_to_rgb(msg) -> np.ndarray:
    """``sensor_msgs/Image`` -> ``HxWx3`` uint8 RGB."""
    encoding = msg.encoding
    if encoding not in ENCODINGS:
        raise ImageError(f"unsupported image encoding {encoding!r}; supported: {sorted(ENCODINGS)}")
    channels, dtype, order = ENCODINGS[encoding]
    arr = _buffer(msg, channels, dtype)
    if dtype == np.uint16:
        arr = (arr.astype(np.float32) / 257.0).round().astype(np.uint8)
    if channels == 1:
        return np.repeat(arr, 3, axis=2)
    arr = arr[..., :3]
    if order == "bgr":
        arr = arr[..., ::-1]
    return np.ascontiguousarray(arr)


def compressed_to_rgb(msg) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` (jpeg/png) -> ``HxWx3`` uint8 RGB."""
    data = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    if data.size == 0:
        raise ImageError("compressed image has no data")
    decoded = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if decoded is None:
        raise ImageError(f"could not decode compressed image (format {msg.format!r}, {data.size} bytes)")
    return np.ascontiguousarray(decoded[..., ::-1])


def mask_from_image(msg) -> np.ndarray:
    """A mono8 / 8UC1 mask message -> ``HxW`` bool (nonzero = object)."""
    if msg.encoding not in MASK_ENCODINGS:
        raise ImageError(f"mask encoding must be mono8 or 8UC1, got {msg.encoding!r}")
    return _buffer(msg, 1, np.uint8)[..., 0] != 0


def fill_image(msg, array: np.ndarray, encoding: str) -> None:
    """Write ``array`` (HxW uint8 or HxWx3 uint8) into an existing ``Image`` message."""
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8:
        raise ImageError(f"expected uint8 pixels, got {array.dtype}")
    msg.height, msg.width = int(array.shape[0]), int(array.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(array.shape[1] * (array.shape[2] if array.ndim == 3 else 1))
    msg.data = array.tobytes()


def image_size(msg) -> Tuple[int, int]:
    """(height, width) of a raw image message."""
    return int(msg.height), int(msg.width)


def check_pixels(image: np.ndarray) -> str:
    """Empty string for a usable frame, else why it is not (a dead or blank camera)."""
    if image.size == 0:
        return "image is empty"
    if not np.isfinite(image).all():
        return "image contains NaN or infinite values"
    if image.max() == image.min():
        return f"image is constant (all pixels = {image.flat[0]})"
    return ""
