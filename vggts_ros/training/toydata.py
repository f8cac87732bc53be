"""Small generated instance-segmentation data sets for tests, demos and benchmarks:
textured shapes (ellipses, polygons, rectangles, rings) on textured backgrounds, written
as image/mask PNG pairs and/or a COCO JSON with RLE or polygon annotations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Tuple

import cv2
import numpy as np

from ..scenes import random_texture
from .masks_io import rle_encode


def _shape_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    short = min(h, w)
    r = short * rng.uniform(0.12, 0.24)
    cx = rng.uniform(r, w - r)
    cy = rng.uniform(r, h - r)
    kind = int(rng.integers(0, 4))
    if kind == 0:
        cv2.ellipse(m, (int(cx), int(cy)), (int(r), int(r * rng.uniform(0.5, 1.0))), float(rng.uniform(0, 180)),
                    0, 360, 1, -1)
    elif kind == 1:
        n = int(rng.integers(5, 9))
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        rad = r * rng.uniform(0.6, 1.0, n)
        pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1).astype(np.int32)
        cv2.fillPoly(m, [pts], 1)
    elif kind == 2:
        rect = ((float(cx), float(cy)), (float(2 * r), float(2 * r * rng.uniform(0.4, 0.9))), float(rng.uniform(0, 180)))
        cv2.fillPoly(m, [cv2.boxPoints(rect).astype(np.int32)], 1)
    else:
        cv2.circle(m, (int(cx), int(cy)), int(r), 1, -1)
        cv2.circle(m, (int(cx), int(cy)), int(r * rng.uniform(0.35, 0.6)), 0, -1)
    return m


def make_image(rng: np.random.Generator, size: Tuple[int, int], n_objects: int,
               background: str = "muted") -> Tuple[np.ndarray, np.ndarray]:
    """One RGB image ``(w, h)`` and its instance label map (ids 1..n, later ones on top).

    Objects are sharply textured in a saturated colour of their own. ``background``:
    "muted" (a blurred, desaturated texture) or "plain" (grey with faint noise: objects
    stand out even in the features of a random-weight backbone)."""
    w, h = size
    if background == "plain":
        level = float(rng.uniform(90, 150))
        image = np.clip(level + rng.normal(0, 4, size=(h, w, 1)), 0, 255).repeat(3, axis=2).astype(np.uint8)
    else:
        bg = cv2.GaussianBlur(random_texture(rng, (w, h), shapes=25, text=0), (0, 0), 2.0).astype(np.float32)
        grey = bg.mean(axis=2, keepdims=True)
        image = (0.35 * bg + 0.65 * grey).astype(np.uint8)
    labels = np.zeros((h, w), np.int32)
    hues = rng.permutation(np.linspace(0, 179, 7, endpoint=False).astype(int))
    for oid in range(1, n_objects + 1):
        m = _shape_mask(rng, h, w).astype(bool)
        tex = random_texture(rng, (w, h), shapes=40, text=4).astype(np.float32)
        hsv = np.array([[[hues[(oid - 1) % len(hues)], 230, 220]]], np.uint8)
        tint = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).astype(np.float32)[0, 0]
        tex = (0.45 * tex + 0.55 * tint).clip(0, 255).astype(np.uint8)
        image[m] = tex[m]
        labels[m] = oid
    return image, labels


def write_shapes_dataset(
    root: str, n_images: int = 8, size: Tuple[int, int] = (224, 168), n_objects: int = 2, seed: int = 0,
    png_pairs: bool = True, coco: bool = False, coco_format: str = "rle", background: str = "muted",
) -> Dict[str, str]:
    """Write ``root/images/*.png`` (+ ``root/masks/*.png`` label maps) and optionally
    ``root/annotations.json`` (COCO; ``coco_format`` "rle", "rle_raw" or "polygon").
    Returns the written paths."""
    base = Path(root)
    (base / "images").mkdir(parents=True, exist_ok=True)
    if png_pairs:
        (base / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images: List[dict] = []
    anns: List[dict] = []
    for i in range(n_images):
        image, labels = make_image(rng, size, n_objects, background)
        name = f"img_{seed}_{i:03d}.png"
        cv2.imwrite(str(base / "images" / name), image[..., ::-1])
        if png_pairs:
            cv2.imwrite(str(base / "masks" / name), labels.astype(np.uint8))
        images.append({"id": i + 1, "file_name": name, "height": int(labels.shape[0]), "width": int(labels.shape[1])})
        for oid in range(1, n_objects + 1):
            m = (labels == oid).astype(np.uint8)
            if m.sum() == 0:
                continue
            if coco_format == "polygon":
                contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
                seg = [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]
            else:
                seg = rle_encode(m, compressed=(coco_format == "rle"))
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                         "area": int(m.sum()), "segmentation": seg})
    out = {"root": str(base)}
    if coco:
        path = base / "annotations.json"
        path.write_text(json.dumps({"images": images, "annotations": anns,
                                    "categories": [{"id": 1, "name": "shape"}]}), encoding="utf-8")
        out["coco"] = str(path)
    return out
