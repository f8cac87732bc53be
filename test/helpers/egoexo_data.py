"""A tiny Ego-Exo4D correspondence set in the SegSwap layout (shared by the dataset, view and clip tests)."""

import json
from pathlib import Path

import cv2
import numpy as np

from vggts_ros.training.egoexo import make_key
from vggts_ros.training.masks_io import rle_encode


S = 112  # the smoke preset's input size; frames are chosen so that crops need no resampling
EGO, EXO = "aria01_214-1", "cam01"
EGO_HW, EXO_HW = (112, 112), (112, 200)
# object -> frame -> camera -> (x1, y1, x2, y2) in frame pixels, or None (not visible)
OBJECTS = {
    "take_a": {
        "cup": {"0": {EGO: (30, 40, 70, 80), EXO: (110, 36, 160, 76)},
                "30": {EGO: (20, 20, 60, 50), EXO: None}},
        "box": {"0": {EGO: (60, 60, 100, 100), EXO: (20, 40, 70, 80)}},
    },
    "take_b": {
        "cup": {"7": {EGO: (10, 10, 60, 60), EXO: (100, 30, 150, 80)}},
    },
}


def _rect_mask(hw, box, scale=1):
    m = np.zeros((hw[0] * scale, hw[1] * scale), np.uint8)
    if box is not None:
        x1, y1, x2, y2 = box
        m[y1 * scale:y2 * scale, x1 * scale:x2 * scale] = 1
    return m


def _g2x_points(box, rng):
    """40 points filling the exo box + 10 outliers, in pixels of the 518 letterbox."""
    if box is None:
        box = (90, 40, 110, 60)
    x1, y1, x2, y2 = box
    xs, ys = np.meshgrid(np.linspace(x1, x2 - 1, 8), np.linspace(y1, y2 - 1, 5))
    inl = np.stack([xs.ravel(), ys.ravel()], 1)
    out = np.array([[2, 2], [198, 2], [2, 110], [198, 110], [100, 2], [100, 110], [2, 56], [198, 56], [5, 5], [195, 105]],
                   float)
    pts = np.concatenate([inl, out])[rng.permutation(50)]
    return pts * (518.0 / 200.0)


def build_segswap(root: Path, cache_splits=("val",)) -> Path:
    rng = np.random.default_rng(0)
    (root).mkdir(parents=True, exist_ok=True)
    (root / "split.json").write_text(json.dumps({"train": ["take_b"], "val": ["take_a"], "test": []}))
    cache = {"train": [], "val": []}
    pairs = {("train", "g"): [], ("train", "x"): [], ("val", "g"): [], ("val", "x"): []}
    for take, objs in OBJECTS.items():
        split = "val" if take == "take_a" else "train"
        ann = {"masks": {}}
        for obj, frames in objs.items():
            for frame, cams in frames.items():
                for cam, hw in ((EGO, EGO_HW), (EXO, EXO_HW)):
                    d = root / take / cam
                    d.mkdir(parents=True, exist_ok=True)
                    img_path = d / f"{frame}.jpg"
                    if not img_path.exists():
                        img = rng.integers(0, 255, size=(hw[0] // 8, hw[1] // 8, 3)).astype(np.uint8)
                        cv2.imwrite(str(img_path), cv2.resize(img, (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST))
                    if cams[cam] is not None:  # annotations at twice the frame resolution
                        ann["masks"].setdefault(obj, {}).setdefault(cam, {})[frame] = rle_encode(_rect_mask(hw, cams[cam], 2))
                ego_e = f"root//{take}//{EGO}//{obj}//rgb//{frame}"
                exo_e = f"root//{take}//{EXO}//{obj}//rgb//{frame}"
                pairs[(split, "g")].append([ego_e, ego_e.replace("rgb", "mask"), exo_e, exo_e.replace("rgb", "mask")])
                pairs[(split, "x")].append([exo_e, exo_e.replace("rgb", "mask"), ego_e, ego_e.replace("rgb", "mask")])
                ex1, ey1, ex2, ey2 = cams[EGO]
                x2g = [[ex1 + 5 + 7 * i, ey1 + 5 + 5 * i] for i in range(5)]
                cache[split].append({
                    "scene_info": make_key(take, EGO, EXO, obj, frame),
                    "g2x_518_first": _g2x_points(cams[EXO], rng).tolist(),
                    "g2x_518_vis": [[1.0]] * 50, "g2x_518_conf": [[1.0]] * 50,
                    "x2g_518": (np.array(x2g, float) * 518.0 / 112.0).tolist(),
                })
        (root / take / "annotation.json").write_text(json.dumps(ann))
    for (split, d), entries in pairs.items():
        (root / f"{split}_{'egoexo' if d == 'g' else 'exoego'}_pairs.json").write_text(json.dumps(entries))
    for split in cache_splits:
        (root / f"{split}_obj_wp.json").write_text(json.dumps(cache[split]))
    return root

