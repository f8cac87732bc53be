"""Instance-mask formats: COCO run-length encoding (compressed string or uncompressed
counts) through ``pycocotools``, COCO polygons, and label PNGs.

COCO RLE runs alternate background/foreground starting with background, over the pixels
in column-major (Fortran) order; the compressed form is pycocotools' string. Before a
compressed RLE reaches pycocotools its runs are checked to cover the image exactly:
pycocotools does not check a short RLE and would return uninitialised pixels.
"""

from __future__ import annotations

import warnings
from typing import Dict, List, Sequence, Union

import cv2
import numpy as np

RLE = Dict[str, Union[List[int], str, List[int]]]


def _coco():
    try:
        from pycocotools import mask as coco_mask
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("COCO RLE masks need pycocotools (pip install pycocotools)") from exc
    return coco_mask


def _runs(mask: np.ndarray) -> List[int]:
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return []
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs = [0] + runs
    return [int(r) for r in runs]


def counts_to_string(counts: Sequence[int]) -> str:
    """Uncompressed runs -> COCO's compressed string (pycocotools)."""
    counts = [int(c) for c in counts]
    total = sum(counts)
    if total == 0:
        return pycoco_string(_coco().frPyObjects({"size": [0, 0], "counts": counts}, 0, 0))
    return pycoco_string(_coco().frPyObjects({"size": [total, 1], "counts": counts}, total, 1))


def pycoco_string(rle) -> str:
    counts = rle["counts"]
    return counts.decode("ascii") if isinstance(counts, bytes) else str(counts)


def string_to_counts(text: Union[str, bytes]) -> List[int]:
    """COCO's compressed string -> runs. pycocotools has no public call for this; it is
    used to check a string before pycocotools decodes it (see the module docstring):
    5-bit little-endian groups in characters ``48 + bits``, 0x20 = more groups follow,
    0x10 of the last group = sign, runs after the third stored as the difference to the
    run two before."""
    data = text.encode("ascii") if isinstance(text, str) else bytes(text)
    counts: List[int] = []
    p = 0
    while p < len(data):
        x = 0
        k = 0
        while True:
            c = data[p] - 48
            x |= (c & 0x1F) << (5 * k)
            more = c & 0x20
            p += 1
            k += 1
            if not more:
                if c & 0x10:
                    x |= -1 << (5 * k)
                break
            if p >= len(data):
                raise ValueError("truncated RLE string")
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def rle_encode(mask: np.ndarray, compressed: bool = True) -> RLE:
    """``{"size": [h, w], "counts": str | list}`` of a binary mask."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    size = [int(mask.shape[0]), int(mask.shape[1])]
    if not compressed:
        return {"size": size, "counts": _runs(mask)}
    if mask.size == 0:
        return {"size": size, "counts": ""}
    rle = _coco().encode(np.asfortranarray(mask != 0, dtype=np.uint8))
    return {"size": size, "counts": pycoco_string(rle)}


def _check_counts(counts: Sequence[int], h: int, w: int) -> None:
    counts = np.asarray(counts, dtype=np.int64)
    if (counts < 0).any():
        raise ValueError("RLE counts must be non-negative")
    total = int(counts.sum())
    if total != h * w:
        raise ValueError(f"RLE covers {total} pixels but size {h}x{w} has {h * w}")


def rle_decode(rle: RLE) -> np.ndarray:
    """Binary ``uint8`` mask ``[h, w]`` of a COCO RLE (compressed or not)."""
    try:
        h, w = (int(v) for v in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a COCO RLE (need 'size' and 'counts'): {exc}") from None
    if h * w == 0:
        return np.zeros((h, w), np.uint8)
    coco = _coco()
    if isinstance(counts, (str, bytes)):
        _check_counts(string_to_counts(counts), h, w)
        compressed = {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else bytes(counts)}
    else:
        _check_counts(counts, h, w)
        compressed = coco.frPyObjects({"size": [h, w], "counts": [int(c) for c in counts]}, h, w)
    with warnings.catch_warnings():  # pycocotools' own NumPy 2 copy-keyword notice
        warnings.simplefilter("ignore", DeprecationWarning)
        return np.ascontiguousarray(coco.decode(compressed), dtype=np.uint8)


def polygons_to_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """Rasterise COCO polygons (``[[x1, y1, x2, y2, ...], ...]``) into a ``uint8`` mask."""
    mask = np.zeros((int(height), int(width)), dtype=np.uint8)
    pts = []
    for poly in polygons:
        arr = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
        if len(arr) >= 3:
            pts.append(np.round(arr).astype(np.int32))
    if pts:
        cv2.fillPoly(mask, pts, 1)
    return mask


def decode_segmentation(segmentation, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` entry (polygons, RLE or uncompressed RLE) as a mask."""
    if isinstance(segmentation, dict):
        m = rle_decode(segmentation)
        if m.shape != (height, width):
            m = cv2.resize(m, (width, height), interpolation=cv2.INTER_NEAREST)
        return m
    if isinstance(segmentation, (list, tuple)):
        return polygons_to_mask(segmentation, height, width)
    raise ValueError(f"unsupported segmentation of type {type(segmentation).__name__}")


def read_label_png(path: str) -> np.ndarray:
    """Instance labels from a PNG: single channel values as ids, or colours mapped to ids
    (black = background). Returns ``int32 [h, w]`` with 0 = background."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f"cannot read mask {path}")
    if img.ndim == 2:
        return img.astype(np.int32)
    rgb = img[..., :3].astype(np.int64)
    code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    values, inverse = np.unique(code, return_inverse=True)
    labels = inverse.reshape(code.shape).astype(np.int32)
    if values[0] == 0:
        return labels  # black took id 0
    return labels + 1
