"""Sensor depth as REP 118 publishes it, and the pinhole intrinsics that unproject it.

Depth (REP 118): a ``sensor_msgs/Image`` registered to the colour image, ``32FC1`` in
metres or ``16UC1`` in millimetres. A pixel without a reading is 0, NaN or +-inf (and a
negative value is no reading either); here every such pixel becomes NaN, so that one
test (``np.isfinite``) says which pixels have depth.

A depth image of another size than the colour image but the same aspect ratio (a sensor
that streams depth at half resolution) is scaled to the colour image by nearest
neighbour: each colour pixel takes the depth pixel that contains its centre, so a depth
edge is never blended into a value that lies on neither surface.

Pixel coordinates are pixel centres at integers (OpenCV, ``image_geometry``). Scaling an
image by ``s`` maps ``x -> (x + 0.5) * s - 0.5``; intrinsics scale the same way
(``fx * s``, ``(cx + 0.5) * s - 0.5``). (``image_proc``'s resize node uses ``cx * s``,
which differs from this by ``(s - 1) / 2`` px.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

#: REP 118 depth encodings and the factor from their unit to metres.
DEPTH_ENCODINGS = {"32FC1": 1.0, "16UC1": 0.001}


class DepthError(ValueError):
    """A depth image that cannot be used (encoding, size, no valid reading)."""


class IntrinsicsError(ValueError):
    """Intrinsics that are missing or cannot describe a pinhole camera."""


Size = Tuple[int, int]  # (width, height)


# ----------------------------------------------------------------------------- depth
def depth_to_metres(data: np.ndarray, encoding: str) -> np.ndarray:
    """``HxW`` depth in ``encoding`` -> ``HxW`` float32 metres, NaN where there is no reading.

    ``32FC1`` needs a float array (metres), ``16UC1`` a uint16 array (millimetres).
    0, NaN, +-inf and negative values are no reading."""
    if encoding not in DEPTH_ENCODINGS:
        raise DepthError(f"unknown depth encoding {encoding!r}; REP 118 depth is one of "
                         f"{', '.join(DEPTH_ENCODINGS)} (32FC1 metres, 16UC1 millimetres)")
    arr = np.asarray(data)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2 or arr.size == 0:
        raise DepthError(f"a depth image is HxW with one channel, got shape {arr.shape}")
    if encoding == "16UC1":
        if arr.dtype != np.uint16:
            raise DepthError(f"16UC1 depth must be uint16 millimetres, got {arr.dtype}")
        out = arr.astype(np.float32) * np.float32(DEPTH_ENCODINGS[encoding])
    else:
        if not np.issubdtype(arr.dtype, np.floating):
            raise DepthError(f"32FC1 depth must be float metres, got {arr.dtype}")
        out = arr.astype(np.float32, copy=True)
    with np.errstate(invalid="ignore"):
        out[~(np.isfinite(out) & (out > 0))] = np.nan
    return out


def same_aspect(depth_size: Size, image_size: Size) -> bool:
    """Whether a depth image of ``depth_size`` covers the same field as ``image_size``:
    its aspect ratio matches to within one depth pixel on either axis."""
    (wd, hd), (wc, hc) = depth_size, image_size
    return abs(wd - wc * hd / hc) <= 1.0 and abs(hd - hc * wd / wc) <= 1.0


def scale_depth(depth: np.ndarray, image_size: Size) -> np.ndarray:
    """Depth (``hd x wd``) resampled to the colour image's ``(width, height)`` by nearest
    neighbour (the depth pixel containing each colour pixel's centre); never interpolated.

    Raises :class:`DepthError` when the aspect ratios differ (the depth image then covers
    another field of view: it is not registered to this colour image)."""
    depth = np.asarray(depth)
    hd, wd = depth.shape[:2]
    wc, hc = (int(v) for v in image_size)
    if (wd, hd) == (wc, hc):
        return depth
    if not same_aspect((wd, hd), (wc, hc)):
        raise DepthError(f"depth image {wd}x{hd} (aspect {wd / hd:.4f}) does not have the colour image's "
                         f"aspect ratio ({wc}x{hc}, {wc / hc:.4f}); depth must be registered to the colour camera")
    ix = np.minimum(((np.arange(wc) + 0.5) * (wd / wc)).astype(np.int64), wd - 1)
    iy = np.minimum(((np.arange(hc) + 0.5) * (hd / hc)).astype(np.int64), hd - 1)
    return depth[iy[:, None], ix[None, :]]


def sensor_depth(data: np.ndarray, encoding: str, image_size: Size) -> np.ndarray:
    """A depth image as it arrives (array + REP 118 encoding) -> float32 metres at the colour
    image's ``(width, height)``, NaN where there is no reading.

    Raises :class:`DepthError` for an unknown encoding, a wrong dtype, another aspect ratio,
    or a depth image without a single valid reading."""
    metres = depth_to_metres(data, encoding)
    if not np.isfinite(metres).any():
        raise DepthError(f"the {encoding} depth image ({metres.shape[1]}x{metres.shape[0]}) has no valid "
                         "reading (every pixel is 0, NaN, inf or negative)")
    return scale_depth(metres, image_size)


def depth_image(msg) -> Tuple[np.ndarray, str]:
    """A ``sensor_msgs/Image`` holding depth (a ROS message or a ``rosbags`` one: any object
    with ``height``, ``width``, ``encoding``, ``step``, ``is_bigendian``, ``data``) -> its
    ``HxW`` array in the encoding's dtype (``32FC1`` float32, ``16UC1`` uint16) and the
    encoding. Raises :class:`DepthError` naming an unknown encoding or a buffer that does
    not hold the image."""
    encoding = str(msg.encoding)
    if encoding not in DEPTH_ENCODINGS:
        raise DepthError(f"unknown depth encoding {encoding!r}; REP 118 depth is one of "
                         f"{', '.join(DEPTH_ENCODINGS)} (32FC1 metres, 16UC1 millimetres)")
    dtype = np.dtype(np.float32 if encoding == "32FC1" else np.uint16)
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise DepthError(f"the depth image has no pixels ({w}x{h})")
    if step < w * dtype.itemsize:
        raise DepthError(f"depth image step {step} is smaller than width x {dtype.itemsize} bytes "
                         f"= {w * dtype.itemsize}")
    data = msg.data
    raw = np.frombuffer(data if isinstance(data, (bytes, bytearray, memoryview, np.ndarray)) else bytes(data), np.uint8)
    if raw.size < step * h:
        raise DepthError(f"the depth image's data holds {raw.size} bytes, its step x height is {step * h}")
    rows = np.ascontiguousarray(raw[: step * h].reshape(h, step)[:, : w * dtype.itemsize])
    order = ">" if int(msg.is_bigendian) else "<"
    return rows.view(dtype.newbyteorder(order)).reshape(h, w).astype(dtype, copy=False), encoding


def encode_depth(depth: np.ndarray, encoding: str) -> np.ndarray:
    """``HxW`` depth in metres (NaN = no reading) -> the ``HxW`` array a REP 118 depth
    message of ``encoding`` carries: ``32FC1`` float32 metres (NaN kept), ``16UC1`` uint16
    millimetres (rounded; no reading, and depth beyond 65.535 m, is 0). Little-endian."""
    if encoding not in DEPTH_ENCODINGS:
        raise DepthError(f"unknown depth encoding {encoding!r}; one of {', '.join(DEPTH_ENCODINGS)}")
    z = np.asarray(depth, np.float64)
    if encoding == "32FC1":
        return np.ascontiguousarray(z.astype("<f4"))
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(z) & (z > 0) & (z < 65.5355)
    return np.ascontiguousarray(np.where(ok, np.round(np.where(ok, z, 0.0) * 1000.0), 0).astype("<u2"))


def camera_info_topic(image_topic: str) -> str:
    """``<camera>/camera_info`` beside an image topic (``/cam/image_raw[/compressed]``), as
    ``image_transport`` pairs them."""
    base = image_topic[: -len("/compressed")] if image_topic.endswith("/compressed") else image_topic
    return base.rsplit("/", 1)[0] + "/camera_info" if "/" in base.strip("/") else "camera_info"


# ----------------------------------------------------------------------------- intrinsics
@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of one image size: ``u = fx x / z + cx``, ``v = fy y / z + cy``."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        for name in ("fx", "fy", "cx", "cy"):
            if not math.isfinite(getattr(self, name)):
                raise IntrinsicsError(f"intrinsics {name} is not finite ({getattr(self, name)})")
        if self.fx <= 0 or self.fy <= 0:
            raise IntrinsicsError(f"focal lengths must be positive, got fx={self.fx}, fy={self.fy}")
        if self.width <= 0 or self.height <= 0:
            raise IntrinsicsError(f"image size must be positive, got {self.width}x{self.height}")

    @property
    def size(self) -> Size:
        return (self.width, self.height)

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def scaled_to(self, image_size: Size) -> "Intrinsics":
        """The same camera seen at another resolution (pixel-centre convention)."""
        w, h = (int(v) for v in image_size)
        if (w, h) == self.size:
            return self
        if not same_aspect(self.size, (w, h)):
            raise IntrinsicsError(f"intrinsics for {self.width}x{self.height} cannot describe a {w}x{h} image "
                                  "(another aspect ratio: cropped, not scaled)")
        sx, sy = w / self.width, h / self.height
        return Intrinsics(self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5, w, h)

    def rays(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """``Nx3`` directions with z = 1 through pixels ``(u, v)`` (float64)."""
        u = np.asarray(u, np.float64)
        v = np.asarray(v, np.float64)
        return np.stack([(u - self.cx) / self.fx, (v - self.cy) / self.fy, np.ones_like(u)], axis=-1)

    def unproject(self, u: np.ndarray, v: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Pixels ``(u, v)`` at depth ``z`` (along the optical axis) -> ``Nx3`` points."""
        return self.rays(u, v) * np.asarray(z, np.float64)[..., None]

    def project(self, points: np.ndarray) -> np.ndarray:
        """``Nx3`` points in the optical frame -> ``Nx2`` pixels."""
        p = np.asarray(points, np.float64)
        return np.stack([self.fx * p[:, 0] / p[:, 2] + self.cx, self.fy * p[:, 1] / p[:, 2] + self.cy], axis=1)

    @classmethod
    def from_K(cls, K, size: Size, image_size: Optional[Size] = None) -> "Intrinsics":
        """From a camera_info's ``K`` (9 numbers, row-major, or 3x3) for images of ``size``
        ``(width, height)``; scaled to ``image_size`` when the colour image differs.
        A camera_info whose size is 0x0 (some drivers) is taken to describe ``image_size``."""
        k = np.asarray(K, np.float64).reshape(-1)
        if k.size != 9:
            raise IntrinsicsError(f"camera_info K has {k.size} numbers, expected 9")
        if not np.isfinite(k).all():
            raise IntrinsicsError("camera_info K has non-finite entries")
        if not k.any():
            raise IntrinsicsError("camera_info K is all zero: the camera is not calibrated "
                                  "(set camera.<name>.intrinsics or calibrate it)")
        k = k.reshape(3, 3)
        if k[2, 2] == 0 or k[1, 0] != 0 or k[2, 0] != 0 or k[2, 1] != 0:
            raise IntrinsicsError(f"camera_info K is not a pinhole camera matrix: {k.tolist()}")
        k = k / k[2, 2]
        w, h = (int(v) for v in size)
        if (w <= 0 or h <= 0) and image_size is not None:
            w, h = (int(v) for v in image_size)
        intr = cls(float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2]), w, h)
        return intr.scaled_to(image_size) if image_size is not None else intr

    @classmethod
    def from_P(cls, P, size: Size, image_size: Optional[Size] = None) -> "Intrinsics":
        """From a camera_info's ``P`` (12 numbers, row-major 3x4): the camera of the
        rectified image, as ``image_geometry`` (and so ``depth_image_proc``) and RViz use it.
        Its fourth column (a stereo pair's baseline term) is not part of the intrinsics."""
        p = np.asarray(P, np.float64).reshape(-1)
        if p.size != 12:
            raise IntrinsicsError(f"camera_info P has {p.size} numbers, expected 12")
        return cls.from_K(p.reshape(3, 4)[:, :3], size, image_size)

    @classmethod
    def from_parameter(cls, values: Sequence[float], image_size: Size) -> "Intrinsics":
        """From ``camera.<name>.intrinsics`` = ``(fx, fy, cx, cy)`` in the colour image's pixels."""
        vals = [float(v) for v in values]
        if len(vals) != 4:
            raise IntrinsicsError(f"intrinsics parameter needs 4 numbers (fx, fy, cx, cy), got {len(vals)}")
        return cls(*vals, int(image_size[0]), int(image_size[1]))


def resolve_intrinsics(image_size: Size, *, parameter: Optional[Sequence[float]] = None,
                       camera_info_K=None, camera_info_size: Optional[Size] = None,
                       camera_info_P=None, camera: str = "") -> Intrinsics:
    """The intrinsics for a colour image of ``image_size``: the ``camera.<name>.intrinsics``
    parameter when set (explicit configuration wins), else the camera_info's ``P`` when it
    is set (not all zero; what ``depth_image_proc`` and the node's markers use), else its
    ``K``, scaled from the camera_info's size. Raises :class:`IntrinsicsError` naming the
    camera when there is none."""
    if parameter is not None and len(parameter) > 0:
        return Intrinsics.from_parameter(parameter, image_size)
    if camera_info_P is not None and np.any(np.asarray(camera_info_P, np.float64)):
        return Intrinsics.from_P(camera_info_P, camera_info_size or image_size, image_size)
    if camera_info_K is not None:
        return Intrinsics.from_K(camera_info_K, camera_info_size or image_size, image_size)
    who = camera or "<name>"
    raise IntrinsicsError(f"camera {camera!r} has no intrinsics: no camera_info beside its image topic and "
                          f"no camera.{who}.intrinsics (fx, fy, cx, cy)")


def missing_geometry(camera: str, *, depth_topic: str = "", has_camera_info: bool = False,
                     intrinsics: Optional[Sequence[float]] = None, vggt_heads: bool = False) -> List[str]:
    """What camera ``camera`` lacks to give objects in 3D, one sentence per gap (empty: nothing).

    Depth comes from its depth topic or VGGT's depth head; intrinsics from its camera_info,
    ``camera.<name>.intrinsics`` or VGGT's camera head."""
    gaps = []
    if not depth_topic and not vggt_heads:
        gaps.append(f"camera {camera!r}: no depth (no camera.{camera}.depth_topic and geometry.vggt_heads off)")
    has_intr = has_camera_info or (intrinsics is not None and len(intrinsics) > 0)
    if not has_intr and not vggt_heads:
        gaps.append(f"camera {camera!r}: no intrinsics (no camera_info beside its image topic and no "
                    f"camera.{camera}.intrinsics)")
    return gaps
