"""Single-image self-training pairs (VGGT-S supplement).

Any folder of images with instance masks becomes a correspondence data set: each sample
picks one instance and deforms its image into a pseudo second view.

* **Source**: a square crop of half the short side (grown to cover the object), centred
  on the object, resized to the network size, mild photometric jitter.
* **Target**: the whole image warped by one augmentation family (drawn with probability
  ``adaptive_ratio``, 1:1 by default), then an exo-style square crop of about two thirds
  of the short side around the warped object (jittered), resized, photometric jitter.
* **Prompts**: source prompts are K-means points of the source mask. For VGGT-adaptive
  pairs the target prompts are projections of source points: by the backbone's track
  head during training (``adaptive_prompts="backbone"``, the sample carries the points to
  track) or through the known warp (``"warp"``, a perfect tracker, used with random-weight
  backbones). For non-adaptive pairs they are K-means points of the warped ground-truth
  mask, each moved by a random offset within ``offset_radius`` (px of a 518 input).

Inputs, either:

* image/mask PNG pairs: ``root/images/<name>.(png|jpg|jpeg)`` with ``root/masks/<name>.png``
  (or ``<name>_mask.png`` next to the image); a mask holds one id per instance (0 = none)
  or one colour per instance;
* a COCO instances JSON (polygons, RLE or uncompressed RLE; crowd regions skipped).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import cv2
import numpy as np
from torch.utils.data import Dataset

from ..prompts import kmeans_sample_points
from .augment import adaptive_warp, disk_offsets, non_adaptive_warp, photometric
from .config import DataSection
from .masks_io import decode_segmentation, read_label_png
from .pairs import (box_to_crop, condense_projections, crop_to_box, cut, empty_like_points, frame_meta,
                    single_threaded, square_box)

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp")
REFERENCE_SIZE = 518.0


@dataclass
class Instance:
    image: str  # image path
    name: str  # stable key
    label_png: Optional[str] = None  # PNG pairs: label image and instance id
    label_id: int = 0
    segmentation: Any = None  # COCO: the annotation's segmentation
    height: int = 0
    width: int = 0


def read_rgb(path: str) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"cannot read image {path}")
    return np.ascontiguousarray(img[..., ::-1])


def png_pair_instances(root: str, min_area: int = 64) -> List[Instance]:
    """Instances of ``root/images`` + ``root/masks`` (or ``<name>_mask.png`` siblings)."""
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"data root {root} is not a directory")
    pairs: List[Tuple[Path, Path]] = []
    img_dir, mask_dir = base / "images", base / "masks"
    if img_dir.is_dir() and mask_dir.is_dir():
        for img in sorted(img_dir.iterdir()):
            if img.suffix.lower() in IMAGE_EXTS and (mask_dir / f"{img.stem}.png").is_file():
                pairs.append((img, mask_dir / f"{img.stem}.png"))
    else:
        for img in sorted(base.iterdir()):
            if img.suffix.lower() in IMAGE_EXTS and not img.stem.endswith("_mask"):
                m = img.with_name(f"{img.stem}_mask.png")
                if m.is_file():
                    pairs.append((img, m))
    out: List[Instance] = []
    for img, m in pairs:
        labels = read_label_png(str(m))
        ids, counts = np.unique(labels, return_counts=True)
        for i, c in zip(ids.tolist(), counts.tolist()):
            if i != 0 and c >= min_area:
                out.append(Instance(str(img), f"{img.stem}#{i}", label_png=str(m), label_id=int(i),
                                    height=labels.shape[0], width=labels.shape[1]))
    if not out:
        raise ValueError(f"no image/mask pairs with instances under {root} "
                         f"(expected images/<name>.png + masks/<name>.png, or <name>.png + <name>_mask.png)")
    return out


def coco_instances(json_path: str, images_dir: Optional[str] = None, min_area: int = 64) -> List[Instance]:
    with open(json_path, "r", encoding="utf-8") as fh:
        coco = json.load(fh)
    if not isinstance(coco, dict) or "images" not in coco or "annotations" not in coco:
        raise ValueError(f"{json_path} is not a COCO instances file (needs 'images' and 'annotations')")
    if images_dir is None:
        guess = Path(json_path).parent / "images"
        images_dir = str(guess if guess.is_dir() else Path(json_path).parent)
    images = {int(im["id"]): im for im in coco["images"]}
    out: List[Instance] = []
    for ann in coco["annotations"]:
        if ann.get("iscrowd", 0):
            continue
        im = images.get(int(ann["image_id"]))
        if im is None or "segmentation" not in ann:
            continue
        area = ann.get("area")
        if area is not None and float(area) < min_area:
            continue
        path = Path(images_dir) / im["file_name"]
        out.append(Instance(str(path), f"{Path(im['file_name']).stem}#{ann.get('id', len(out))}",
                            segmentation=ann["segmentation"], height=int(im["height"]), width=int(im["width"])))
    if not out:
        raise ValueError(f"{json_path}: no usable (non-crowd, large enough) instance annotations")
    return out


def _coco_images_dir(data: DataSection) -> Optional[str]:
    if data.images_dir:
        return data.images_dir
    for cand in (Path(data.coco).parent / "images", Path(data.root or ".") / "images", Path(data.root or ".")):
        if data.root or cand.parent == Path(data.coco).parent:
            if cand.is_dir():
                return str(cand)
    return None


def load_instance(inst: Instance) -> Tuple[np.ndarray, np.ndarray]:
    image = read_rgb(inst.image)
    h, w = image.shape[:2]
    if inst.label_png is not None:
        labels = read_label_png(inst.label_png)
        mask = (labels == inst.label_id).astype(np.uint8)
    else:
        mask = decode_segmentation(inst.segmentation, inst.height or h, inst.width or w)
    if mask.shape != (h, w):
        mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
    return image, mask


def _bbox(mask: np.ndarray) -> Optional[Tuple[int, int, int, int]]:
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def select_instances(data: DataSection) -> list:
    """The object instances a data section names (COCO annotations or PNG mask pairs),
    after its ``limit`` and ``step``: what both self-training datasets sample from."""
    if data.coco:
        instances = coco_instances(data.coco, _coco_images_dir(data), data.min_instance_area)
    else:
        instances = png_pair_instances(data.root, data.min_instance_area)
    if data.limit is not None:
        instances = instances[: int(data.limit)]
    return instances[:: max(1, int(data.step))]


class SelfTrainingPairs(Dataset):
    """Pseudo pairs from single images; see the module docstring.

    ``__getitem__`` is deterministic in (``data.seed``, epoch, index), so DataLoader
    workers and DDP ranks agree; with ``data.fixed_pairs`` the epoch is ignored.
    """

    MAX_TRIES = 10
    MEMO_LIMIT = 4096  # fixed pairs kept in memory (per process / loader worker)

    def __init__(self, data: DataSection, img_size: int) -> None:
        self.data = data
        self.size = int(img_size)
        self.instances = select_instances(data)
        self.epoch = 0
        self._family_epoch: Optional[int] = None
        self._family = np.zeros(0, dtype=bool)
        self._memo: Dict[int, Dict[str, Any]] = {}
        self.max_short = int(data.max_short_side or 2 * self.size)

    def __len__(self) -> int:
        return len(self.instances)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def rng(self, index: int) -> np.random.Generator:
        epoch = 0 if self.data.fixed_pairs else self.epoch
        return np.random.default_rng([int(self.data.seed), int(epoch), int(index)])

    def __getitem__(self, index) -> Dict[str, Any]:
        if isinstance(index, tuple):  # (epoch, index) from EpochTaggedSampler
            self.set_epoch(index[0])
            index = index[1]
        index = int(index)
        if self.data.fixed_pairs and index in self._memo:
            return dict(self._memo[index])
        sample = self._build(index)
        if self.data.fixed_pairs and len(self._memo) < self.MEMO_LIMIT:
            self._memo[index] = sample
        return dict(sample)

    def _build(self, index: int) -> Dict[str, Any]:
        n = len(self.instances)
        for shift in range(n):
            idx = (index + shift) % n
            inst = self.instances[idx]
            image, mask = load_instance(inst)
            image, mask = self._downscale(image, mask)
            rng = self.rng(idx)
            for attempt in range(self.MAX_TRIES):
                with single_threaded():
                    sample = self.make_pair(image, mask, rng, idx)
                if sample is not None:
                    sample["key"] = inst.name if attempt == 0 else f"{inst.name}~{attempt}"
                    return sample
        raise RuntimeError("no instance gave a usable self-training pair (masks too small or empty?)")

    def _downscale(self, image: np.ndarray, mask: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        h, w = mask.shape
        short = min(h, w)
        if short <= self.max_short:
            return image, mask
        f = self.max_short / float(short)
        size = (max(1, int(round(w * f))), max(1, int(round(h * f))))
        return (cv2.resize(image, size, interpolation=cv2.INTER_AREA),
                cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST))

    # ------------------------------------------------------------------ one pair
    def is_adaptive(self, index: int) -> bool:
        """Family of a sample: per epoch, exactly ``round(adaptive_ratio * len)`` indices
        (a seeded random subset) are VGGT-adaptive, the rest non-adaptive."""
        epoch = 0 if self.data.fixed_pairs else self.epoch
        if self._family_epoch != epoch:
            n = len(self.instances)
            order = np.random.default_rng([int(self.data.seed), int(epoch), 7]).permutation(n)
            flags = np.zeros(n, dtype=bool)
            flags[order[: int(round(self.data.adaptive_ratio * n))]] = True
            self._family, self._family_epoch = flags, epoch
        return bool(self._family[index])

    def make_pair(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                  index: Optional[int] = None) -> Optional[Dict[str, Any]]:
        d, S = self.data, self.size
        h, w = mask.shape
        short = min(h, w)
        box = _bbox(mask)
        if box is None:
            return None
        bx1, by1, bx2, by2 = box
        centre = ((bx1 + bx2) / 2.0, (by1 + by2) / 2.0)

        # Source: half the short side, grown to hold the object, centred on it.
        side = max(int(short / d.source_crop_ratio), bx2 - bx1 + 1, by2 - by1 + 1)
        src_box = square_box(centre, side, h, w)
        src_img, src_mask = cut(image, mask, src_box, S)
        if src_mask.sum() < d.min_source_area * S * S:
            return None
        src_img = photometric(rng, src_img, 0.5)

        # Target: warp the frame, then an exo-style crop around the warped object.
        adaptive = self.is_adaptive(index) if index is not None else bool(rng.random() < d.adaptive_ratio)
        warp = adaptive_warp(rng, h, w, centre) if adaptive else non_adaptive_warp(rng, h, w, centre)
        w_img, w_mask = warp.apply(image, mask)
        wbox = _bbox(w_mask)
        if wbox is None:
            return None
        tside = int(round(float(rng.uniform(*d.target_crop)) * short))
        jitter = rng.uniform(-0.15, 0.15, size=2) * tside
        tcentre = ((wbox[0] + wbox[2]) / 2.0 + jitter[0], (wbox[1] + wbox[3]) / 2.0 + jitter[1])
        tar_box = square_box(tcentre, tside, h, w)
        tar_img, tar_mask = cut(w_img, w_mask, tar_box, S)
        if tar_mask.sum() == 0:
            return None
        tar_img = photometric(rng, tar_img, 1.0)

        src_points = kmeans_sample_points(src_mask, d.prompt_points)
        track = False
        track_points = empty_like_points(d.first_pass_points)
        if adaptive:
            track_points = kmeans_sample_points(src_mask, d.first_pass_points)
            if d.adaptive_prompts == "warp":
                frame_pts = crop_to_box(track_points, src_box, S)
                moved = box_to_crop(warp.forward_points(frame_pts), tar_box, S)
                tar_points = condense_projections(moved, S, d.prompt_points, d.outlier_k)
            else:
                tar_points = empty_like_points(d.prompt_points)
                track = True
        else:
            gt_points = kmeans_sample_points(tar_mask, d.prompt_points)
            radius = d.offset_radius * S / REFERENCE_SIZE
            tar_points = np.clip(gt_points + disk_offsets(rng, d.prompt_points, radius), 0, S - 1).astype(np.float32)

        return {
            "direction": "adaptive" if adaptive else "non-adaptive",
            "augment": warp.ops,
            "src_img": src_img,
            "src_mask": src_mask.astype(np.uint8),
            "src_points": src_points.astype(np.float32),
            "track_points": track_points.astype(np.float32),
            "track": np.bool_(track),
            "tar_img": tar_img,
            "tar_mask": tar_mask.astype(np.uint8),
            "tar_points": tar_points.astype(np.float32),
            "tar_frame_mask": tar_mask.astype(np.uint8),
            "meta": frame_meta(0, 0, S, S, S, S),
        }
