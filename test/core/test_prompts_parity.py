"""Prompt and crop utilities reproduce the reference (fixture ``prompts.pt``, and the
geometric stages of ``pipeline_ego2exo.pt``), and generalise sensibly to other frames."""

import numpy as np
import pytest
import torch

from conftest import assert_close_ref, load_fixture
from vggts_ros import crops, prompts, transforms
from vggts_ros.models.union_head import sample_point_features

# Reference function name -> schedule name of this project.
SCHEDULE_NAMES = {
    "cal_crop_size_3x": "3x",
    "cal_crop_size_2x": "2x",
    "cal_crop_size_1_5_x": "1.5x",
    "cal_crop_size_1_x": "1x",
}
COORD_TOL = 1e-2


@pytest.fixture(scope="module")
def fx():
    return load_fixture("prompts.pt")


@pytest.fixture(scope="module")
def pipe():
    return load_fixture("pipeline_ego2exo.pt")


def np_(x):
    return x.numpy() if torch.is_tensor(x) else np.asarray(x)


def sorted_rows(a):
    a = np.asarray(a, dtype=np.float64).reshape(-1, 2)
    return a[np.lexsort(a.T[::-1])]


def assert_points(actual, expected, what, ordered=True):
    a, e = np.asarray(actual, dtype=np.float64), np_(expected).astype(np.float64)
    if not ordered:
        a, e = sorted_rows(a), sorted_rows(e)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    err = np.abs(a - e).max() if e.size else 0.0
    assert err <= COORD_TOL, f"{what}: max error {err:.3g} px"


def assert_image(actual, expected, what):
    a, e = np.asarray(actual).astype(np.int64), np_(expected).astype(np.int64)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    assert np.abs(a - e).max() <= 1, f"{what}: differs by {np.abs(a - e).max()}"


# ------------------------------------------------------------------- prompts.pt
def test_kmeans_sampling(fx):
    assert fx["kmeans_sampling"]
    for key, ref in fx["kmeans_sampling"].items():
        name, n = key.rsplit("_", 1)
        out = prompts.kmeans_sample_points(np_(fx["masks"][name]), int(n))
        assert out.dtype == np.float32 and out.shape == (int(n), 2)
        assert_points(out, ref, key, ordered=False)
        mask = np_(fx["masks"][name])
        assert all(mask[int(y), int(x)] > 0 for x, y in out), f"{key}: point off the mask"


def test_outlier_removal(fx):
    k = len(fx["outlier_removed"])
    keep, removed = prompts.remove_outliers_median(np_(fx["outlier_input"]), k)
    assert_points(keep, fx["outlier_keep"], "outlier_keep")
    assert_points(removed, fx["outlier_removed"], "outlier_removed")


def test_cluster_centers(fx):
    k = len(fx["cluster_centers"])
    labels, centers = prompts.cluster_points(np_(fx["outlier_keep"]), k)
    assert labels.shape == (len(fx["outlier_keep"]),)
    assert_points(centers, fx["cluster_centers"], "cluster_centers")


def test_crop_sizes(fx):
    assert set(fx["crop_sizes"]) == set(SCHEDULE_NAMES)
    for ref_name, table in fx["crop_sizes"].items():
        for box, expected in table.items():
            got = crops.crop_size(SCHEDULE_NAMES[ref_name], float(box))
            assert got == expected, f"{ref_name}({box}) = {got}, expected {expected}"


def test_square_crop_and_recovery(fx):
    c = fx["clip"]
    out_h, out_w = c["out_image"].shape[:2]
    win = transforms.square_around_points(c["image"].shape[:2], np_(c["points"]), c["crop_size"], (out_h, out_w))
    x1, y1, x2, y2 = win.box
    meta = dict(x1=x1, y1=y1, x2=x2, y2=y2, crop_size=x2 - x1, ori_h=win.frame_hw[0], ori_w=win.frame_hw[1],
                H=win.view_hw[0], W=win.view_hw[1])
    assert meta == dict(c["meta"])
    assert_image(win.image(np_(c["image"])), c["out_image"], "out_image")
    assert_image(win.mask(np_(c["mask"])), c["out_mask"], "out_mask")
    assert_points(win.points(np_(c["points"])), c["out_points"], "out_points")

    logits = win.logits_to_frame(c["logits"])
    assert_close_ref(logits, c["recovered_logits"], "recovered_logits")
    assert_points(win.points_to_frame(np_(c["out_points"])), c["recovered_points"], "recovered_points")
    # The same from a [1, 1, H, W] input.
    assert torch.equal(win.logits_to_frame(c["logits"][None]), logits)


def test_crop_by_mask(fx):
    b = fx["crop_by_mask"]
    win = transforms.window_around_mask(np_(b["mask"]), b["R"])
    assert_image(win.image(np_(b["image"])), b["out_image"], "crop_by_mask image")
    assert_image(win.mask(np_(b["mask"])), b["out_mask"], "crop_by_mask mask")
    x1, y1, x2, y2 = win.box
    assert 0 <= x1 < x2 <= b["mask"].shape[1] and 0 <= y1 < y2 <= b["mask"].shape[0]


def test_sample_feat(fx):
    s = fx["sample_feat"]
    out = sample_point_features(s["feat"], s["points"], tuple(s["img_hw"]))
    assert_close_ref(out, s["out"], "sample_feat")


# ------------------------------------------------------- pipeline_ego2exo.pt stages
def test_pipeline_letterbox(pipe):
    size = pipe["ego_letterbox"].shape[0]
    for image, ref, is_mask in (
        ("ego_image", "ego_letterbox", False),
        ("ego_mask", "ego_mask_letterbox", True),
        ("exo_image", "exo_letterbox", False),
    ):
        lb = transforms.letterbox(pipe[image].shape[:2], size)
        out = lb.mask(np_(pipe[image])) if is_mask else lb.image(np_(pipe[image]))
        assert_image(out, pipe[ref], ref)


def test_pipeline_target_crop_stages(pipe):
    exo = np_(pipe["exo_image"])
    size = pipe["exo_letterbox"].shape[0]
    lb = transforms.letterbox(exo.shape[:2], size)
    frame_pts = lb.reference_points_to_frame(np_(pipe["first_pass_projected_518"]))
    assert_points(frame_pts, pipe["projected_exo_pixels"], "projected_exo_pixels")

    k = len(pipe["projected_exo_pixels"]) - len(pipe["kept_points"])
    kept, _ = prompts.remove_outliers_median(np_(pipe["projected_exo_pixels"]), k)
    assert_points(kept, pipe["kept_points"], "kept_points")

    kept = np_(pipe["kept_points"])
    box = prompts.points_box_size(kept)
    assert box == pytest.approx(float(pipe["box_size"]), abs=1e-4)
    side = crops.crop_size("3x", float(pipe["box_size"]), short_side=min(exo.shape[:2]))
    assert side == pipe["crop_size"]
    win = transforms.square_around_points(exo.shape[:2], kept, side, pipe["target_crop_image"].shape[:2])
    m = dict(pipe["crop_meta"])
    assert win.box == (m["x1"], m["y1"], m["x2"], m["y2"]) and win.view_hw == (m["H"], m["W"])
    assert_image(win.image(exo), pipe["target_crop_image"], "target_crop_image")
    assert_points(win.points(kept), pipe["crop_points"], "crop_points")

    _, centers = prompts.cluster_points(np_(pipe["crop_points"]), len(pipe["target_points"]))
    assert_points(centers, pipe["target_points"], "target_points")


def test_pipeline_source_crop_stages(pipe):
    win = transforms.window_around_mask(np_(pipe["ego_mask_letterbox"]), 2)
    assert_image(win.image(np_(pipe["ego_letterbox"])), pipe["source_crop_image"], "source_crop_image")
    assert_image(win.mask(np_(pipe["ego_mask_letterbox"])), pipe["source_crop_mask"], "source_crop_mask")
    pts = prompts.kmeans_sample_points(np_(pipe["source_crop_mask"]), len(pipe["source_points"]))
    assert_points(pts, pipe["source_points"], "source_points", ordered=False)


# ------------------------------------------------------------- generalisation
def test_schedules_scale_with_short_side():
    for name in crops.CROP_SCHEDULES:
        for box in (10.0, 60.0, 90.0, 125.3, 150.0, 199.9, 250.0):
            ref = crops.crop_size(name, box)
            double = crops.crop_size(name, 2 * box, short_side=1080)
            assert abs(double - 2 * ref) <= 2, (name, box, ref, double)
            assert crops.crop_size(name, 1e6, short_side=700) == 700
    with pytest.raises(ValueError):
        crops.crop_size("4x", 10.0)


def test_square_crop_other_frame_sizes():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8)
    pts = np.array([[1200.0, 700.0], [1270.0, 715.0], [1250.0, 690.0]])
    win = transforms.square_around_points(img.shape[:2], pts, 2000, 518)  # larger than the frame
    assert win.box == (560, 0, 1280, 720) and win.image(img).shape == (518, 518, 3)
    full = win.logits_to_frame(torch.randn(1, 1, 518, 518))
    assert full.shape == (720, 1280) and bool((full[:, :560] == -32).all())
    assert np.abs(win.points_to_frame(win.points(pts)) - pts).max() < 1e-9


def test_sampling_edge_cases():
    empty = np.zeros((30, 40), np.uint8)
    assert np.array_equal(prompts.kmeans_sample_points(empty, 5), np.zeros((5, 2), np.float32))
    mask = np.zeros((30, 40), np.uint8)
    mask[5:15, 10:30] = 255  # any nonzero value is object
    pts = prompts.kmeans_sample_points(mask, 8)
    assert pts.shape == (8, 2) and all(mask[int(y), int(x)] for x, y in pts)
    assert len({tuple(p) for p in pts}) == 8
    _, centers = prompts.cluster_points(np.array([[1.0, 2.0], [3.0, 4.0]]), 5)
    assert centers.shape == (5, 2)
