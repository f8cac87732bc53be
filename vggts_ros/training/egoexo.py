"""Ego-Exo4D correspondence pairs in the SegSwap layout, both directions.

Layout (``root``)::

    split.json                       {"train": [take, ...], "val": [...], "test": [...]}
    <split>_egoexo_pairs.json        [[src_rgb, src_mask, tar_rgb, tar_mask], ...] ego -> exo
    <split>_exoego_pairs.json        the same for exo -> ego
    <take>/annotation.json           {"masks": {object: {camera: {frame: COCO RLE}}}}
    <take>/<camera>/<frame>.jpg      frames (masks are resized to the frame when they differ)

Pair entries are ``...//<take>//<camera>//<object>//rgb|mask//<frame>``; the ego camera is
recognised by name (``ego_camera_pattern``, "aria" in Ego-Exo4D). A pair is keyed
``take//ego_cam//exo_cam//object//frame`` (frame zero-padded to 6 digits), as in the
reference's sample files.

**First-pass projections.** The reference tracks points once with VGGT on the full
frames and stores them per key in ``<split>_obj_wp.json`` (a list of
``{"scene_info": key, "g2x_518_first": [50 x 2], "g2x_518_vis", "g2x_518_conf",
"x2g_518": [5 x 2]}``): ``g2x`` are exo pixels of the 518 letterboxed exo frame for 50
K-means points of the ego mask; ``x2g`` are pixels of the 518-resized ego frame for 5
K-means points of the exo view (cropped square around the object). This loader reads
that file (or a dict keyed the same way); :func:`compute_projections` fills missing
entries with a backbone, in the same format.

**Samples** follow the reference, through the same view transforms as inference
(:mod:`vggts_ros.transforms`: :func:`~vggts_ros.transforms.prepare_source` and
:func:`~vggts_ros.transforms.crop_target`): sources are the square view (a square frame
resized, a non-square one cut to the short-side square around the mask mean) zoomed on the
mask (R = 2); ego->exo targets are the exo frame cropped around the projected points
(outliers dropped, crop side from the box size, "3x" schedule) with 5 clustered prompts;
exo->ego targets are the whole (square) ego frame resized, with the 5 cached points.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from .. import transforms
from ..prompts import cluster_points, kmeans_sample_points
from .config import DataSection
from .masks_io import rle_decode
from .pairs import condense_projections, empty_like_points, frame_meta, single_threaded

REFERENCE_SIZE = 518
FRAME_EXTS = (".jpg", ".jpeg", ".png")
PAIR_FILES = {"ego2exo": "{split}_egoexo_pairs.json", "exo2ego": "{split}_exoego_pairs.json"}


def frame_id(idx: str) -> str:
    """Annotation/file frame name: the integer without padding when it is one."""
    try:
        return str(int(idx))
    except ValueError:
        return str(idx)


def make_key(take: str, ego: str, exo: str, obj: str, idx: str) -> str:
    try:
        idx = f"{int(idx):06d}"
    except ValueError:
        pass
    return "//".join([take, ego, exo, obj, idx])


def split_key(key: str) -> Tuple[str, str, str, str, str]:
    parts = key.split("//")
    if len(parts) != 5:
        raise ValueError(f"bad pair key {key!r}: expected take//ego_cam//exo_cam//object//frame")
    return parts[0], parts[1], parts[2], parts[3], parts[4]


def parse_view(entry: str) -> Tuple[str, str, str, str]:
    """``...//take//cam//obj//rgb//idx`` -> (take, cam, obj, idx)."""
    parts = entry.split("//")
    if len(parts) < 5:
        raise ValueError(f"bad pair entry {entry!r}: expected ...//take//camera//object//rgb//frame")
    take, cam, obj, _kind, idx = parts[-5:]
    return take, cam, obj, idx


class EgoExoPairs(Dataset):
    """Ego-Exo4D correspondence pairs; see the module docstring.

    ``train=True``: one sample per pair, direction drawn per (epoch, index) among
    ``data.directions`` (the reference flips a coin); pairs whose target mask is empty or
    whose source mask is tiny are replaced by the next one. ``train=False``: one sample
    per (pair, direction), nothing skipped (empty targets count for visibility).
    """

    MAX_TRIES = 10

    def __init__(self, data: DataSection, img_size: int, train: bool = False, keep_frames: bool = False) -> None:
        self.data = data
        self.size = int(img_size)
        self.train = bool(train)
        self.keep_frames = keep_frames
        self.root = Path(data.root)
        self.epoch = 0
        if not self.root.is_dir():
            raise FileNotFoundError(f"Ego-Exo4D root {data.root} is not a directory")
        split_path = self.root / "split.json"
        if not split_path.is_file():
            raise FileNotFoundError(f"{split_path} is missing (SegSwap layout needs split.json)")
        splits = json.loads(split_path.read_text(encoding="utf-8"))
        if data.split not in splits:
            raise ValueError(f"split {data.split!r} not in {split_path} (has {sorted(splits)})")
        self.takes = set(splits[data.split])
        self.pattern = re.compile(data.ego_camera_pattern)
        self.projections_path = self._projections_path()
        self.projections: Dict[str, Dict[str, Any]] = self._read_projections(self.projections_path)

        by_dir = self._pair_keys()
        keys_all = sorted(set(k for d in data.directions for k in by_dir[d]))
        if self.train:
            keys = keys_all[:: data.step]
            keys = keys[: data.limit] if data.limit is not None else keys
            self.samples: List[Tuple[str, Optional[str]]] = [(k, None) for k in keys]
        else:
            self.samples = []
            for d in data.directions:
                ks = sorted(by_dir[d])[:: data.step]
                ks = ks[: data.limit] if data.limit is not None else ks
                self.samples += [(k, d) for k in ks]
        if not self.samples:
            raise ValueError(f"no {data.split} pairs for directions {data.directions} under {data.root}")
        self.masks = self._load_masks({k for k, _ in self.samples})

    # ------------------------------------------------------------------ index
    def _projections_path(self) -> Path:
        if self.data.projections:
            return Path(self.data.projections)
        return self.root / f"{self.data.split}_obj_wp.json"

    @staticmethod
    def _read_projections(path: Path) -> Dict[str, Dict[str, Any]]:
        if not path.is_file():
            return {}
        content = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(content, dict):
            return {make_key(*split_key(k)): v for k, v in content.items()}
        out = {}
        for item in content:
            item = dict(item)
            key = item.pop("scene_info")
            out[make_key(*split_key(key))] = item
        return out

    def is_ego(self, cam: str) -> bool:
        return bool(self.pattern.search(cam))

    def _pair_keys(self) -> Dict[str, List[str]]:
        found: Dict[str, Optional[List[str]]] = {}
        for direction, pattern in PAIR_FILES.items():
            path = self.root / pattern.format(split=self.data.split)
            if not path.is_file():
                found[direction] = None
                continue
            keys = []
            for entry in json.loads(path.read_text(encoding="utf-8")):
                a, b = parse_view(entry[0]), parse_view(entry[2])
                if a[0] != b[0] or a[2] != b[2] or frame_id(a[3]) != frame_id(b[3]):
                    continue  # not the same take/object/moment
                if self.is_ego(a[1]) == self.is_ego(b[1]):
                    continue  # need one ego and one exo camera
                ego, exo = (a, b) if self.is_ego(a[1]) else (b, a)
                if ego[0] in self.takes:
                    keys.append(make_key(ego[0], ego[1], exo[1], ego[2], ego[3]))
            found[direction] = keys
        cached = [k for k in self.projections if split_key(k)[0] in self.takes]
        out: Dict[str, List[str]] = {}
        for direction in PAIR_FILES:
            other = "exo2ego" if direction == "ego2exo" else "ego2exo"
            keys = found[direction] if found[direction] is not None else found[other]
            out[direction] = sorted(set(keys if keys is not None else cached))
        return out

    def _load_masks(self, keys: Iterable[str]) -> Dict[Tuple[str, str, str, str], Any]:
        """Keep only the RLEs the samples need (annotation files can be large)."""
        wanted: Dict[str, set] = {}
        for key in keys:
            take, ego, exo, obj, idx = split_key(key)
            for cam in (ego, exo):
                wanted.setdefault(take, set()).add((obj, cam, frame_id(idx)))
        masks: Dict[Tuple[str, str, str, str], Any] = {}
        for take, items in wanted.items():
            path = self.root / take / "annotation.json"
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing")
            ann = json.loads(path.read_text(encoding="utf-8")).get("masks", {})
            for obj, cam, fid in items:
                per_cam = ann.get(obj, {}).get(cam, {})
                rle = per_cam.get(fid)
                if rle is None:
                    rle = next((v for k, v in per_cam.items() if frame_id(k) == fid), None)
                masks[(take, obj, cam, fid)] = rle
        return masks

    # ------------------------------------------------------------------ reading
    def frame_path(self, take: str, cam: str, idx: str) -> Path:
        base = self.root / take / cam
        for name in dict.fromkeys([frame_id(idx), str(idx)]):
            for ext in FRAME_EXTS:
                p = base / f"{name}{ext}"
                if p.is_file():
                    return p
        raise FileNotFoundError(f"no frame {frame_id(idx)}.jpg under {base}")

    def view(self, take: str, cam: str, obj: str, idx: str) -> Tuple[np.ndarray, np.ndarray]:
        path = self.frame_path(take, cam, idx)
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"cannot read {path}")
        img = np.ascontiguousarray(img[..., ::-1])
        h, w = img.shape[:2]
        rle = self.masks.get((take, obj, cam, frame_id(idx)))
        if rle is None:
            return img, np.zeros((h, w), np.uint8)
        mask = rle_decode(rle)
        if mask.shape != (h, w):
            mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
        return img, mask

    # ------------------------------------------------------------------ samples
    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def direction_of(self, index: int) -> str:
        key, direction = self.samples[index]
        if direction is not None:
            return direction
        if len(self.data.directions) == 1:
            return self.data.directions[0]
        rng = np.random.default_rng([int(self.data.seed), self.epoch, int(index)])
        return self.data.directions[int(rng.integers(0, len(self.data.directions)))]

    def __getitem__(self, index) -> Dict[str, Any]:
        if isinstance(index, tuple):  # (epoch, index) from EpochTaggedSampler
            self.set_epoch(index[0])
            index = index[1]
        index = int(index)
        if not self.train:
            return self.build(self.samples[index][0], self.direction_of(index))
        n = len(self.samples)
        last = None
        for shift in range(self.MAX_TRIES):
            i = (index + shift) % n
            sample = self.build(self.samples[i][0], self.direction_of(i))
            last = sample
            S = self.size
            if sample["tar_mask"].sum() > 0 and sample["src_mask"].sum() >= self.data.min_source_area * S * S:
                return sample
        return last

    def entry(self, key: str) -> Dict[str, Any]:
        e = self.projections.get(key)
        if e is None:
            raise KeyError(f"no first-pass projections for {key}; run compute_projections() "
                           f"(or 'vggts train/evaluate', which do it) or give data.projections")
        return e

    def build(self, key: str, direction: str) -> Dict[str, Any]:
        take, ego, exo, obj, idx = split_key(key)
        d, S = self.data, self.size
        with single_threaded():
            if direction == "ego2exo":
                sample = self._ego2exo(key, take, ego, exo, obj, idx)
            elif direction == "exo2ego":
                sample = self._exo2ego(key, take, ego, exo, obj, idx)
            else:
                raise ValueError(f"unknown direction {direction!r}")
            sample["src_points"] = kmeans_sample_points(sample["src_mask"], d.prompt_points).astype(np.float32)
        sample.update(key=key, direction=direction, track=np.bool_(False),
                      track_points=empty_like_points(d.first_pass_points))
        return sample

    def _source(self, image: np.ndarray, mask: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        view = transforms.prepare_source(image, mask, self.size, self.data.source_crop_ratio)
        return view.crop_image, view.crop_mask

    def _ego2exo(self, key, take, ego, exo, obj, idx) -> Dict[str, Any]:
        d, S = self.data, self.size
        src_img, src_mask = self._source(*self.view(take, ego, obj, idx))
        tar_frame, tar_frame_mask = self.view(take, exo, obj, idx)
        h, w = tar_frame_mask.shape
        proj = np.asarray(self.entry(key)["g2x_518_first"], dtype=np.float64).reshape(-1, 2)
        # The cache holds pixels of the 518 letterboxed exo frame (whatever size S is).
        pts = transforms.letterbox((h, w), REFERENCE_SIZE).reference_points_to_frame(proj)
        crop = transforms.crop_target((h, w), pts, S, d.crop_schedule, d.outlier_k)
        win = crop.window
        kept = pts[crop.kept]
        _, centres = cluster_points(win.points(kept).astype(np.float32), d.prompt_points)
        x1, y1, x2, y2 = win.box
        sample = {
            "src_img": src_img, "src_mask": src_mask,
            "tar_img": win.image(tar_frame), "tar_mask": win.mask(tar_frame_mask),
            "tar_points": np.asarray(centres, dtype=np.float32),
            "tar_frame_mask": tar_frame_mask.astype(np.uint8),
            "meta": frame_meta(x1, y1, x2, y2, h, w),
            "tar_proj_points": kept.astype(np.float32),
        }
        if self.keep_frames:
            sample["tar_frame"] = tar_frame
        return sample

    def _exo2ego(self, key, take, ego, exo, obj, idx) -> Dict[str, Any]:
        d, S = self.data, self.size
        src_img, src_mask = self._source(*self.view(take, exo, obj, idx))
        tar_frame, tar_frame_mask = self.view(take, ego, obj, idx)
        h, w = tar_frame_mask.shape
        if h != w:
            raise ValueError(f"exo->ego needs square ego frames (Ego-Exo4D's are); {take}/{ego} frame {idx} is {w}x{h}")
        win = transforms.resize((h, w), S)
        pts = np.asarray(self.entry(key)["x2g_518"], dtype=np.float64).reshape(-1, 2) * (S / float(REFERENCE_SIZE))
        if len(pts) == d.prompt_points:
            tar_points = np.clip(pts, 0, S - 1).astype(np.float32)
        else:
            tar_points = condense_projections(pts, S, d.prompt_points, d.outlier_k)
        sample = {
            "src_img": src_img, "src_mask": src_mask,
            "tar_img": win.image(tar_frame), "tar_mask": win.mask(tar_frame_mask),
            "tar_points": tar_points,
            "tar_frame_mask": tar_frame_mask.astype(np.uint8),
            "meta": frame_meta(0, 0, w, h, h, w),
            "tar_proj_points": win.points_to_frame(pts).astype(np.float32),
        }
        if self.keep_frames:
            sample["tar_frame"] = tar_frame
        return sample

    # ------------------------------------------------------------------ projections
    def missing_projections(self) -> List[str]:
        keys = dict.fromkeys(k for k, _ in self.samples)
        need = []
        for k in keys:
            e = self.projections.get(k)
            if e is None or "g2x_518_first" not in e or "x2g_518" not in e:
                need.append(k)
        return need


@torch.no_grad()
def compute_projections(
    dataset: EgoExoPairs, backbone, keys: Sequence[str], device: torch.device | str = "cpu",
    batch_size: int = 4, size: Optional[int] = None, progress: bool = False,
) -> Dict[str, Dict[str, Any]]:
    """First-pass projections for ``keys`` in the reference format (coordinates in pixels
    of 518 inputs whatever ``size`` the backbone runs at; default the data set's size).

    Views as at inference (:mod:`vggts_ros.transforms`): the source is its square view
    (:func:`~vggts_ros.transforms.prepare_source`), the target letterboxed (a square one
    resized). ``g2x``: ``first_pass_points`` K-means points of the ego view's mask tracked
    into the exo view. ``x2g``: ``prompt_points`` K-means points of the exo square's mask
    tracked into the ego view."""
    from .pairs import images_to_tensor

    d = dataset.data
    S = int(size or dataset.size)
    scale = REFERENCE_SIZE / float(S)
    device = torch.device(device)
    out: Dict[str, Dict[str, Any]] = {}
    iterator: Iterable = range(0, len(keys), batch_size)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(list(iterator), desc="first-pass projections", dynamic_ncols=True)
    for start in iterator:
        chunk = list(keys[start : start + batch_size])
        g_src, g_tar, g_pts, x_src, x_tar, x_pts = [], [], [], [], [], []
        for key in chunk:
            take, ego, exo, obj, idx = split_key(key)
            ego_img, ego_mask = dataset.view(take, ego, obj, idx)
            exo_img, exo_mask = dataset.view(take, exo, obj, idx)
            ego_src = transforms.prepare_source(ego_img, ego_mask, S, d.source_crop_ratio)
            exo_src = transforms.prepare_source(exo_img, exo_mask, S, d.source_crop_ratio)
            with single_threaded():
                g_pts.append(kmeans_sample_points(ego_src.mask, d.first_pass_points))
                x_pts.append(kmeans_sample_points(exo_src.mask, d.prompt_points))
            g_src.append(ego_src.image)
            g_tar.append(transforms.letterbox(exo_img.shape[:2], S).image(exo_img))
            x_src.append(exo_src.image)
            x_tar.append(transforms.letterbox(ego_img.shape[:2], S).image(ego_img))
        g = _track(backbone, np.stack(g_src), np.stack(g_tar), np.stack(g_pts), device)
        x = _track(backbone, np.stack(x_src), np.stack(x_tar), np.stack(x_pts), device)
        for i, key in enumerate(chunk):
            coords, vis, conf = g[0][i], g[1][i], g[2][i]
            out[key] = {
                "g2x_518_first": (np.clip(coords, 0, S - 1) * scale).tolist(),
                "g2x_518_vis": vis.reshape(-1, 1).tolist(),
                "g2x_518_conf": conf.reshape(-1, 1).tolist(),
                "x2g_518": (np.clip(x[0][i], 0, S - 1) * scale).tolist(),
            }
    return out


def _track(backbone, src: np.ndarray, tar: np.ndarray, points: np.ndarray, device: torch.device):
    from .pairs import images_to_tensor

    images = torch.stack([images_to_tensor(src, device), images_to_tensor(tar, device)], dim=1)
    out = backbone(images, torch.from_numpy(points).float().to(device))
    coords = out.coords[:, 1].float().cpu().numpy()
    vis = out.vis[:, 1].float().cpu().numpy() if out.vis is not None else np.ones(coords.shape[:2], np.float32)
    conf = out.conf[:, 1].float().cpu().numpy() if out.conf is not None else np.ones(coords.shape[:2], np.float32)
    return coords, vis, conf


def write_projections(path: str, entries: Dict[str, Dict[str, Any]]) -> None:
    """Write (merge into) a projections file in the reference list format, atomically."""
    p = Path(path)
    current = EgoExoPairs._read_projections(p)
    current.update(entries)
    items = [dict(scene_info=k, **v) for k, v in sorted(current.items())]
    tmp = p.with_name(p.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(items), encoding="utf-8")
    os.replace(tmp, p)
