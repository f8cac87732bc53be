"""Clips for Temporal VGGT-S: "image as video" synthesis from single images.

One image with an instance mask becomes a T-frame clip seen by a moving target camera:

* **Source** (fixed for the clip, the node's keyframe mode): the self-training source, a
  square crop around the object resized to the network size, with its mask and K-means
  prompts.
* **Trajectory**: a homography per frame whose scale, rotation, translation and mild
  perspective vary smoothly from one random pose to another (cosine easing), so
  consecutive frames are close while the clip as a whole moves away from the source view.
* **Occluders**: textured shapes of their own colour crossing the object's path at
  constant velocity, nearest to its centre around the middle of the clip. The ground
  truth is the *visible* part of the object (``clips.truth="visible"``, the default) or
  the whole object, hidden part included (``"amodal"``: the case a memory can solve,
  since the hidden part was seen a few frames earlier); ``occlusion[t]`` is the hidden
  fraction of the object inside the target input either way.
* **Blur**: a motion-blur (line kernel) or defocus (Gaussian) blur on a random subset of
  frames (``blurred[t]``).
* **Target input**: a square crop around the (occlusion-agnostic) warped object that
  follows it smoothly, resized to the network size, one photometric jitter per clip.
* **Prompts**: source points moved through the known warp (a perfect tracker, which, like
  VGGT's, also projects points that are hidden), condensed to the head's prompts as the
  pipeline does.

A clip sample holds the arrays of a pair sample (:mod:`.pairs`) with a leading frame axis
``T`` plus ``occlusion`` ``[T]``, ``blurred`` ``[T]`` and ``amodal_mask`` ``[T, S, S]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from torch.utils.data import Dataset

from ..prompts import kmeans_sample_points
from ..scenes import random_texture
from .augment import GREY, photometric
from .config import DataSection
from .pairs import box_to_crop, condense_projections, crop_to_box, cut, single_threaded, square_box
from .self_training import _bbox, load_instance, select_instances

CLIP_STACKED = ("src_img", "src_mask", "src_points", "tar_img", "tar_mask", "tar_points", "amodal_mask",
                "occlusion", "blurred")


@dataclass
class ClipSection:
    """How clips are synthesised (see the module docstring)."""

    frames: int = 6
    occluders: int = 1  # per clip
    occluder_size: Tuple[float, float] = (0.8, 1.3)  # relative to the object's bounding box
    occluder_travel: Tuple[float, float] = (1.4, 2.2)  # path length in object diameters
    blur_prob: float = 0.25
    blur_sigma: Tuple[float, float] = (1.0, 2.5)  # px of the full frame (defocus) / half length (motion)
    scale: Tuple[float, float] = (0.8, 1.25)  # start and end scale of the trajectory
    rotate_deg: float = 12.0
    shift: float = 0.12  # translation of the end poses, fraction of the short side
    corner_jitter: float = 0.03  # mild perspective
    target_crop: Tuple[float, float] = (0.55, 0.8)  # crop side / short side
    crop_lag: float = 0.08  # how far the crop centre may trail the object (fraction of its side)
    truth: str = "visible"  # ground truth: the "visible" part, or the "amodal" (whole) object


    def validate(self) -> "ClipSection":
        if int(self.frames) < 2:
            raise ValueError(f"clips.frames must be >= 2, got {self.frames}")
        if int(self.occluders) < 0:
            raise ValueError(f"clips.occluders must be >= 0, got {self.occluders}")
        if not 0.0 <= float(self.blur_prob) <= 1.0:
            raise ValueError(f"clips.blur_prob must be in [0, 1], got {self.blur_prob}")
        for name in ("occluder_size", "occluder_travel", "blur_sigma", "scale", "target_crop"):
            lo, hi = getattr(self, name)
            if not 0 < float(lo) <= float(hi):
                raise ValueError(f"clips.{name} must be 0 < low <= high, got {getattr(self, name)}")
        if self.truth not in ("visible", "amodal"):
            raise ValueError(f"clips.truth must be 'visible' or 'amodal', got {self.truth!r}")
        if float(self.target_crop[1]) > 1.0:
            raise ValueError(f"clips.target_crop must be <= 1, got {self.target_crop}")
        return self


def collate_clips(samples: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    batch: Dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        batch[key] = np.stack(values) if key in CLIP_STACKED else values
    return batch


def _ease(t: np.ndarray) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(np.pi * np.clip(t, 0.0, 1.0))


def _pose_homography(h: int, w: int, centre, scale: float, angle_deg: float, shift, corners: np.ndarray) -> np.ndarray:
    """Forward homography: scale/rotate about ``centre``, translate by ``shift``, then move
    the frame corners by ``corners`` (``[4, 2]`` px)."""
    a = np.deg2rad(angle_deg)
    cx, cy = centre
    c, s = scale * np.cos(a), scale * np.sin(a)
    A = np.array([[c, -s, cx - c * cx + s * cy + shift[0]], [s, c, cy - s * cx - c * cy + shift[1]], [0, 0, 1]])
    src = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], dtype=np.float32)
    P = cv2.getPerspectiveTransform(src, (src + corners).astype(np.float32)).astype(np.float64)
    return A @ P


def _occluder(rng: np.random.Generator, rx: float, ry: float, hue: int) -> Tuple[np.ndarray, np.ndarray]:
    """A textured shape on its own canvas: (RGB patch, mask), about ``2rx x 2ry``."""
    W, H = max(3, int(2 * rx) + 3), max(3, int(2 * ry) + 3)
    m = np.zeros((H, W), np.uint8)
    c = (W / 2.0, H / 2.0)
    if rng.random() < 0.5:
        cv2.ellipse(m, (int(c[0]), int(c[1])), (max(1, int(rx)), max(1, int(ry))), float(rng.uniform(0, 180)),
                    0, 360, 1, -1)
    else:
        n = int(rng.integers(4, 8))
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        rad = rng.uniform(0.7, 1.0, n)
        pts = np.stack([c[0] + rx * rad * np.cos(ang), c[1] + ry * rad * np.sin(ang)], 1).astype(np.int32)
        cv2.fillConvexPoly(m, cv2.convexHull(pts), 1)
    tex = random_texture(rng, (W, H), shapes=12, text=0).astype(np.float32)
    tint = cv2.cvtColor(np.array([[[hue, 200, 200]]], np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)[0, 0]
    return (0.5 * tex + 0.5 * tint).clip(0, 255).astype(np.uint8), m


def _paste(image: np.ndarray, occ: np.ndarray, patch: np.ndarray, pmask: np.ndarray, centre) -> None:
    """Paste ``patch`` (where ``pmask``) centred at ``centre`` into ``image``; mark ``occ``."""
    h, w = occ.shape
    ph, pw = pmask.shape
    x0, y0 = int(round(centre[0] - pw / 2.0)), int(round(centre[1] - ph / 2.0))
    xa, ya, xb, yb = max(0, x0), max(0, y0), min(w, x0 + pw), min(h, y0 + ph)
    if xa >= xb or ya >= yb:
        return
    sub = pmask[ya - y0:yb - y0, xa - x0:xb - x0].astype(bool)
    image[ya:yb, xa:xb][sub] = patch[ya - y0:yb - y0, xa - x0:xb - x0][sub]
    occ[ya:yb, xa:xb] |= sub


def _blur(rng: np.random.Generator, image: np.ndarray, sigma: float) -> np.ndarray:
    if rng.random() < 0.5:
        return cv2.GaussianBlur(image, (0, 0), sigma)
    length = max(3, int(round(2 * sigma)) * 2 + 1)
    k = np.zeros((length, length), np.float32)
    k[length // 2, :] = 1.0
    rot = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), float(rng.uniform(0, 180)), 1.0)
    k = cv2.warpAffine(k, rot, (length, length))
    return cv2.filter2D(image, -1, k / max(1e-6, float(k.sum())))


def synthesise_clip(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, data: DataSection,
                    clips: ClipSection, size: int) -> Optional[Dict[str, Any]]:
    """One clip from one image and object mask (None when the object is unusable)."""
    S, T = int(size), int(clips.frames)
    h, w = mask.shape
    short = min(h, w)
    box = _bbox(mask)
    if box is None:
        return None
    bx1, by1, bx2, by2 = box
    centre = ((bx1 + bx2) / 2.0, (by1 + by2) / 2.0)
    diameter = float(max(bx2 - bx1 + 1, by2 - by1 + 1))

    side = max(int(short / data.source_crop_ratio), bx2 - bx1 + 1, by2 - by1 + 1)
    src_box = square_box(centre, side, h, w)
    src_img, src_mask = cut(image, mask, src_box, S)
    if src_mask.sum() < data.min_source_area * S * S:
        return None
    src_img = photometric(rng, src_img, 0.5)
    src_points = kmeans_sample_points(src_mask, data.prompt_points).astype(np.float32)
    track = crop_to_box(kmeans_sample_points(src_mask, data.first_pass_points), src_box, S)

    # Two end poses; every frame eases from one to the other.
    poses = []
    for _ in range(2):
        poses.append((float(rng.uniform(*clips.scale)), float(rng.uniform(-clips.rotate_deg, clips.rotate_deg)),
                      rng.uniform(-clips.shift, clips.shift, size=2) * short,
                      rng.uniform(-clips.corner_jitter, clips.corner_jitter, size=(4, 2)) * np.array([w, h])))
    u = _ease(np.linspace(0.0, 1.0, T))

    # Occluders: constant velocity, closest to the object around the middle of the clip.
    hues = rng.permutation(np.arange(0, 180, 12))
    occluders = []
    for j in range(int(clips.occluders)):
        f = rng.uniform(*clips.occluder_size, size=2)
        patch, pmask = _occluder(rng, 0.5 * diameter * f[0], 0.5 * diameter * f[1], int(hues[j]))
        t_mid = float(rng.uniform(0.35, 0.65)) * (T - 1)
        ang = float(rng.uniform(0, 2 * np.pi))
        speed = float(rng.uniform(*clips.occluder_travel)) * diameter / max(1, T - 1)
        offset = rng.uniform(-0.15, 0.15, size=2) * diameter
        occluders.append((patch, pmask, t_mid, np.array([np.cos(ang), np.sin(ang)]) * speed, offset))

    crop_side = int(round(float(rng.uniform(*clips.target_crop)) * short))
    lag = rng.uniform(-clips.crop_lag, clips.crop_lag, size=2) * crop_side
    blurred = rng.random(T) < clips.blur_prob
    photo_seed = int(rng.integers(0, 2 ** 31 - 1))

    frames: Dict[str, List[np.ndarray]] = {k: [] for k in ("tar_img", "tar_mask", "amodal_mask", "tar_points")}
    occlusion = np.zeros(T, np.float32)
    for t in range(T):
        p0, p1 = poses
        a = u[t]
        H = _pose_homography(h, w, centre, (1 - a) * p0[0] + a * p1[0], (1 - a) * p0[1] + a * p1[1],
                             (1 - a) * p0[2] + a * p1[2], (1 - a) * p0[3] + a * p1[3])
        w_img = cv2.warpPerspective(image, H, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                    borderValue=(GREY, GREY, GREY))
        amodal = cv2.warpPerspective(mask.astype(np.uint8), H, (w, h), flags=cv2.INTER_NEAREST,
                                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        wbox = _bbox(amodal)
        if wbox is None:
            return None
        wc = np.array([(wbox[0] + wbox[2]) / 2.0, (wbox[1] + wbox[3]) / 2.0])
        occ = np.zeros((h, w), bool)
        for patch, pmask, t_mid, vel, offset in occluders:
            _paste(w_img, occ, patch, pmask, wc + offset + vel * (t - t_mid))
        visible = (amodal > 0) & ~occ
        if blurred[t]:
            w_img = _blur(rng, w_img, float(rng.uniform(*clips.blur_sigma)))
        tbox = square_box((wc[0] + lag[0] * np.sin(np.pi * t / max(1, T - 1)),
                           wc[1] + lag[1] * np.sin(np.pi * t / max(1, T - 1))), crop_side, h, w)
        tar_img, tar_mask = cut(w_img, visible.astype(np.uint8), tbox, S)
        _, am = cut(w_img, amodal, tbox, S)
        tar_img = photometric(np.random.default_rng(photo_seed), tar_img, 1.0)
        moved = box_to_crop(cv2.perspectiveTransform(track.reshape(-1, 1, 2).astype(np.float64), H).reshape(-1, 2),
                            tbox, S)
        frames["tar_img"].append(tar_img)
        frames["tar_mask"].append(tar_mask.astype(np.uint8))
        frames["amodal_mask"].append(am.astype(np.uint8))
        frames["tar_points"].append(condense_projections(moved, S, data.prompt_points, data.outlier_k))
        total = float(am.sum())
        occlusion[t] = 1.0 - float(tar_mask.sum()) / total if total > 0 else 1.0
    if frames["tar_mask"][0].sum() == 0:
        return None  # the clip must start with the object in view
    truth = frames["amodal_mask"] if clips.truth == "amodal" else frames["tar_mask"]
    return {
        "src_img": np.stack([src_img] * T), "src_mask": np.stack([src_mask.astype(np.uint8)] * T),
        "src_points": np.stack([src_points] * T),
        "tar_img": np.stack(frames["tar_img"]), "tar_mask": np.stack(truth),
        "amodal_mask": np.stack(frames["amodal_mask"]), "tar_points": np.stack(frames["tar_points"]),
        "occlusion": occlusion, "blurred": blurred.astype(bool),
    }


class ImageClips(Dataset):
    """"Image as video" clips from a folder of images with instance masks (PNG pairs or
    COCO, as :class:`SelfTrainingPairs`). Deterministic in (``data.seed``, epoch, index);
    with ``data.fixed_pairs`` one clip per index whatever the epoch."""

    MAX_TRIES = 10

    def __init__(self, data: DataSection, clips: ClipSection, img_size: int) -> None:
        self.data = data
        self.clips = clips.validate()
        self.size = int(img_size)
        self.instances = select_instances(data)
        self.epoch = 0
        self._memo: Dict[int, Dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self.instances)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, index) -> Dict[str, Any]:
        if isinstance(index, tuple):  # (epoch, index) from EpochTaggedSampler
            self.set_epoch(index[0])
            index = index[1]
        index = int(index)
        if self.data.fixed_pairs and index in self._memo:
            return dict(self._memo[index])
        sample = self._build(index)
        if self.data.fixed_pairs:
            self._memo[index] = sample
        return dict(sample)

    def _build(self, index: int) -> Dict[str, Any]:
        n = len(self.instances)
        epoch = 0 if self.data.fixed_pairs else self.epoch
        for shift in range(n):
            idx = (index + shift) % n
            inst = self.instances[idx]
            image, mask = load_instance(inst)
            rng = np.random.default_rng([int(self.data.seed), int(epoch), int(idx), 17])
            for attempt in range(self.MAX_TRIES):
                with single_threaded():
                    clip = synthesise_clip(image, mask, rng, self.data, self.clips, self.size)
                if clip is not None:
                    clip["key"] = inst.name if attempt == 0 else f"{inst.name}~{attempt}"
                    return clip
        raise RuntimeError("no instance gave a usable clip (masks too small or empty?)")


class EgoExoClips(Dataset):
    """Ego-Exo4D clips from the SegSwap layout: ``frames`` consecutive annotated moments
    of one (take, ego camera, exo camera, object, direction), each built exactly as the
    pair loader builds it (:class:`vggts_ros.training.egoexo.EgoExoPairs`; its source is
    the source camera's frame at the same moment, the node's source-tracking mode).
    Windows start every ``stride`` moments (default: ``frames``, no overlap). Occlusion
    is not annotated: ``occlusion`` is NaN and ``amodal_mask`` is the visible mask."""

    KEYS = ("src_img", "src_mask", "src_points", "tar_img", "tar_mask", "tar_points")

    def __init__(self, data: DataSection, clips: ClipSection, img_size: int, stride: Optional[int] = None) -> None:
        from .egoexo import EgoExoPairs, split_key

        self.clips = clips.validate()
        self.pairs = EgoExoPairs(data, img_size, train=False)
        T = int(clips.frames)
        groups: Dict[Tuple[str, ...], List[Tuple[int, int]]] = {}
        for i, (key, direction) in enumerate(self.pairs.samples):
            take, ego, exo, obj, idx = split_key(key)
            groups.setdefault((take, ego, exo, obj, direction), []).append((int(idx), i))
        self.windows: List[List[int]] = []
        step = max(1, int(stride or T))
        for g in sorted(groups):
            order = [i for _, i in sorted(groups[g])]
            for start in range(0, len(order) - T + 1, step):
                self.windows.append(order[start:start + T])
        if not self.windows:
            raise ValueError(f"no (take, cameras, object, direction) has {T} annotated moments in "
                             f"{data.root} split {data.split!r}; lower clips.frames")

    def __len__(self) -> int:
        return len(self.windows)

    def set_epoch(self, epoch: int) -> None:
        self.pairs.set_epoch(epoch)

    def __getitem__(self, index) -> Dict[str, Any]:
        if isinstance(index, tuple):
            self.set_epoch(index[0])
            index = index[1]
        samples = [self.pairs[i] for i in self.windows[int(index)]]
        out: Dict[str, Any] = {k: np.stack([s[k] for s in samples]) for k in self.KEYS}
        out["amodal_mask"] = out["tar_mask"].copy()
        out["occlusion"] = np.full(len(samples), np.nan, np.float32)
        out["blurred"] = np.zeros(len(samples), bool)
        out["key"] = samples[0]["key"] + f"+{len(samples)}"
        out["direction"] = samples[0]["direction"]
        return out
