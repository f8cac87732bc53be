"""Ego-Exo4D loader (SegSwap layout, both directions), COCO RLE, first-pass projections,
and the per-direction evaluation table/JSON against hand-computed values."""

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from vggts_ros import metrics
from vggts_ros.training.config import DataSection, ModelSection
from vggts_ros.training.egoexo import EgoExoPairs, make_key
from vggts_ros.training.evaluate import evaluate
from vggts_ros.training.masks_io import counts_to_string, rle_decode, rle_encode, string_to_counts

from helpers.egoexo_data import EGO, EGO_HW, EXO, EXO_HW, S, _rect_mask, build_segswap  # noqa: E402,F401


@pytest.fixture
def segswap(tmp_path):
    return build_segswap(tmp_path / "egoexo")


# ------------------------------------------------------------------------------ RLE
def test_rle_compressed_string_by_hand():
    # runs 3, 2, 1, 40: the fourth is stored as 40 - 2 = 38 = 0b1_00110 -> 'V' (6 | more) then '1'
    assert counts_to_string([3, 2, 1, 40]) == "321V1"
    assert string_to_counts("321V1") == [3, 2, 1, 40]
    # a negative difference uses the sign bit: 5, 10, 2, 4 -> 4 - 10 = -6 -> 0b11010 = 26 -> 'J'
    assert counts_to_string([5, 10, 2, 4]) == "5:2J"
    assert string_to_counts("5:2J") == [5, 10, 2, 4]


def test_rle_roundtrip_column_major():
    rng = np.random.default_rng(1)
    for shape in [(7, 5), (1, 1), (40, 33)]:
        m = (rng.random(shape) > 0.6).astype(np.uint8)
        for compressed in (True, False):
            assert np.array_equal(rle_decode(rle_encode(m, compressed)), m)
    m = np.zeros((2, 3), np.uint8)
    m[1, 0] = 1  # column-major: pixel order (0,0), (1,0), (0,1) ...
    assert rle_encode(m, compressed=False)["counts"] == [1, 1, 4]
    assert rle_decode({"size": [2, 3], "counts": [0, 6]}).all()
    with pytest.raises(ValueError):
        rle_decode({"size": [2, 3], "counts": [1, 2]})


# ------------------------------------------------------------------------------ loader
def test_loader_reads_both_directions_with_cached_projections(segswap):
    data = DataSection(kind="egoexo", root=str(segswap), split="val")
    ds = EgoExoPairs(data, S, train=False)
    assert len(ds) == 6
    by = {(s[1], s[0].split("//")[3], s[0].split("//")[4]): i for i, s in enumerate(ds.samples)}
    assert sorted(d for d, _, _ in by) == ["ego2exo"] * 3 + ["exo2ego"] * 3

    s = ds[by[("ego2exo", "cup", "000000")]]
    assert s["key"] == f"take_a//{EGO}//{EXO}//cup//000000" and s["direction"] == "ego2exo"
    assert s["src_img"].shape == (S, S, 3) and s["tar_img"].shape == (S, S, 3)
    # source: ego frame cropped around the mask (R = 2): the object fills more of the view
    assert s["src_mask"].sum() > (40 * 40) * 1.5
    # target: the exo crop centred on the kept (inlier) projections: a full 112 side here
    m = s["meta"]
    assert (m["ori_h"], m["ori_w"]) == EXO_HW and m["y2"] - m["y1"] == 112 and m["x2"] - m["x1"] == 112
    assert m["x1"] <= 110 and m["x2"] >= 160
    assert np.array_equal(s["tar_frame_mask"], _rect_mask(EXO_HW, (110, 36, 160, 76)))
    assert np.array_equal(s["tar_mask"], s["tar_frame_mask"][:, m["x1"]:m["x2"]])
    inside = s["tar_mask"][np.round(s["tar_points"][:, 1]).astype(int), np.round(s["tar_points"][:, 0]).astype(int)]
    assert inside.all(), "clustered prompts of the inlier projections lie on the object"
    assert s["src_points"].shape == (5, 2) and s["tar_points"].shape == (5, 2)

    s = ds[by[("exo2ego", "box", "000000")]]
    assert s["meta"] == {"x1": 0, "y1": 0, "x2": 112, "y2": 112, "ori_h": 112, "ori_w": 112}
    assert np.array_equal(s["tar_mask"], _rect_mask(EGO_HW, (60, 60, 100, 100)))
    assert np.allclose(s["tar_points"], [[65 + 7 * i, 65 + 5 * i] for i in range(5)], atol=1e-3)
    assert s["src_mask"].sum() > 0  # exo source: short-side square around the object, then R = 2

    s = ds[by[("ego2exo", "cup", "000030")]]
    assert s["tar_frame_mask"].sum() == 0, "object not annotated in the exo view: empty ground truth"


def test_training_mode_draws_directions_and_skips_empty_targets(segswap):
    data = DataSection(kind="egoexo", root=str(segswap), split="val", seed=3)
    ds = EgoExoPairs(data, S, train=True)
    assert len(ds) == 3
    seen = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            s = ds[i]
            assert s["tar_mask"].sum() > 0
            seen.add(s["direction"])
    assert seen == {"ego2exo", "exo2ego"}
    one = EgoExoPairs(DataSection(kind="egoexo", root=str(segswap), split="val", directions=["exo2ego"]), S, train=True)
    assert {one[i]["direction"] for i in range(len(one))} == {"exo2ego"}


def test_missing_projections_are_reported(segswap):
    ds = EgoExoPairs(DataSection(kind="egoexo", root=str(segswap), split="train"), S, train=False)
    assert ds.missing_projections() == [f"take_b//{EGO}//{EXO}//cup//000007"]
    with pytest.raises(KeyError, match="first-pass projections"):
        ds[0]


def test_online_projections_in_reference_format(segswap):
    from vggts_ros.training.runtime import DistEnv, build_backbone, ensure_projections

    ds = EgoExoPairs(DataSection(kind="egoexo", root=str(segswap), split="train"), S, train=False)
    backbone = build_backbone(ModelSection(preset="smoke", vggt_checkpoint=None), torch.device("cpu"))
    assert ensure_projections(ds, backbone, DistEnv()) == 1
    items = json.loads((segswap / "train_obj_wp.json").read_text())
    assert [it["scene_info"] for it in items] == [f"take_b//{EGO}//{EXO}//cup//000007"]
    it = items[0]
    assert np.asarray(it["g2x_518_first"]).shape == (50, 2) and np.asarray(it["x2g_518"]).shape == (5, 2)
    assert np.asarray(it["g2x_518_vis"]).shape == (50, 1) and np.asarray(it["g2x_518_conf"]).shape == (50, 1)
    assert 0 <= np.min(it["g2x_518_first"]) and np.max(it["g2x_518_first"]) <= 518
    assert ds.missing_projections() == []
    assert ds[0]["tar_img"].shape == (S, S, 3) and ds[1]["direction"] == "exo2ego"


# ------------------------------------------------------------------------------ scoring
def _predictor(batch):
    """ego->exo: the ground truth (an empty target predicted as the whole crop);
    exo->ego: the left half of the ground-truth box."""
    out = []
    for i, d in enumerate(batch["direction"]):
        gt = np.asarray(batch["tar_mask"][i]).astype(bool)
        if d == "ego2exo":
            pred = gt if gt.any() else np.ones_like(gt)
        else:
            pred = gt.copy()
            xs = np.nonzero(gt.any(0))[0]
            pred[:, (xs.min() + xs.max() + 1) // 2:] = False
        out.append(torch.from_numpy(np.where(pred, 10.0, -10.0)).float()[None])
    return torch.stack(out)


def test_per_direction_metrics_match_hand_values(segswap, tmp_path):
    data = DataSection(kind="egoexo", root=str(segswap), split="val")
    ds = EgoExoPairs(data, S, train=False, keep_frames=True)
    report = evaluate(None, None, ds, data, batch_size=4, predictor=_predictor, worst_k=2)
    s = report.summary()
    loc = 10.0 / (112 * math.sqrt(2))  # every half box moves its bbox centre 10 px left
    half = _rect_mask(EGO_HW, (30, 40, 50, 80)), _rect_mask(EGO_HW, (30, 40, 70, 80))
    contour = metrics.contour_accuracy(half[1], half[0])

    assert s["ego2exo"]["pairs"] == 3 and s["ego2exo"]["visible_pairs"] == 2
    assert s["ego2exo"]["iou"] == pytest.approx(1.0)
    assert s["ego2exo"]["location_error"] == pytest.approx(0.0)
    assert s["ego2exo"]["contour_accuracy"] == pytest.approx(1.0)
    assert s["ego2exo"]["visibility_balanced_accuracy"] == pytest.approx(0.5)  # TPR 1, TNR 0
    assert s["exo2ego"]["pairs"] == 3 and s["exo2ego"]["visible_pairs"] == 3
    assert s["exo2ego"]["iou"] == pytest.approx(0.5)
    assert s["exo2ego"]["location_error"] == pytest.approx(loc)
    assert s["exo2ego"]["contour_accuracy"] == pytest.approx(contour, abs=0.05)
    assert s["exo2ego"]["visibility_balanced_accuracy"] == pytest.approx(1.0)
    assert s["overall"]["iou"] == pytest.approx((1 + 1 + 0.5 * 3) / 5)
    assert s["overall"]["location_error"] == pytest.approx(3 * loc / 5)
    assert s["overall"]["visibility_balanced_accuracy"] == pytest.approx(0.5)

    table = report.table().splitlines()
    assert table[2].startswith("| ego2exo | 3 | 100.0 | 0.000 | 100.0 | 50.0 |")
    assert table[3].startswith("| exo2ego | 3 | 50.0 | 0.063 |") and table[3].endswith("| 100.0 |")
    assert table[4].startswith("| overall | 6 | 70.0 | 0.038 |") and table[4].endswith("| 50.0 |")

    paths = report.write(str(tmp_path / "eval"))
    js = json.loads(Path(paths["json"]).read_text())
    assert js["summary"]["exo2ego"]["iou"] == pytest.approx(0.5)
    assert js["summary"]["ego2exo"]["iou"] == pytest.approx(1.0)
    assert len(js["pairs"]) == 6 and {p["direction"] for p in js["pairs"]} == {"ego2exo", "exo2ego"}
    empty = [p for p in js["pairs"] if not p["gt_visible"]]
    assert len(empty) == 1 and empty[0]["iou"] is None and empty[0]["pred_visible"] is True
    overlays = sorted(Path(paths["overlays"]).glob("*.png"))
    # worst first: the false positive on the invisible object, then a half-box pair
    assert len(overlays) == 2 and "000030" in overlays[0].name
    assert Path(paths["table"]).read_text().startswith("| direction |")


def test_cli_trains_on_egoexo_pairs(segswap, tmp_path):
    """`vggts train --data egoexo`: projections of the train split computed online and
    written in the reference format, both directions drawn, validation after the epoch."""
    from vggts_ros.cli import main as vggts_main

    out = tmp_path / "run"
    rc = vggts_main(["train", "--preset", "smoke", "--img-size", "112", "--vggt-checkpoint", "none",
                     "--data", "egoexo", "--data-root", str(segswap), "--split", "train", "--eval-root", str(segswap),
                     "--eval-split", "val", "--out", str(out), "--epochs", "1", "--batch-size", "1", "--workers", "0",
                     "--device", "cpu", "--no-progress"])
    assert rc == 0
    assert (segswap / "train_obj_wp.json").is_file()
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["epochs"][0]["steps"] == 1
    assert {"eval_ego2exo_iou", "eval_exo2ego_iou", "eval_overall_iou"} <= set(summary["epochs"][0])
    assert (out / "ckpts" / "epoch_1.pth").is_file()
