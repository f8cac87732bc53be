"""Bundled scenes: determinism, exact masks, and the Middlebury pair's ground truth."""

import cv2
import numpy as np
import pytest

from vggts_ros.scenes import Scene, load_scene, motorcycle_scene, synthetic_scene, tall_scene, textureless_scene, wall_scene
from vggts_ros.types import TargetView


@pytest.fixture(scope="module")
def scene0():
    return synthetic_scene(0)


@pytest.fixture(scope="module")
def moto():
    return motorcycle_scene()


def test_synthetic_is_deterministic_and_seeded(scene0):
    again = synthetic_scene(0)
    other = synthetic_scene(1)
    for cam in scene0.views:
        assert np.array_equal(scene0.image(cam), again.image(cam))
        for oid in scene0.object_ids:
            assert np.array_equal(scene0.mask(cam, oid), again.mask(cam, oid))
    assert not np.array_equal(scene0.image("ego"), other.image("ego"))


def test_synthetic_layout_and_sizes(scene0):
    assert isinstance(scene0, Scene)
    assert scene0.source == "ego" and scene0.targets == ["exo1", "exo2"]
    assert scene0.role("ego") == "ego" and scene0.role("exo1") == scene0.role("exo2") == "exo"
    assert scene0.image("ego").shape == (480, 480, 3) and scene0.image("ego").dtype == np.uint8
    assert scene0.image("exo1").shape == (360, 640, 3)
    tv = scene0.target_views()
    assert [v.name for v in tv] == ["exo1", "exo2"] and all(isinstance(v, TargetView) for v in tv)
    small = synthetic_scene(4, n_objects=2, n_exo=3, ego_size=(320, 240), exo_size=(400, 300))
    assert small.image("ego").shape == (240, 320, 3)
    assert [small.image(n).shape for n in small.targets] == [(300, 400, 3)] * 3
    assert small.object_ids == [1, 2]


@pytest.mark.parametrize("make, seed", [(synthetic_scene, 0), (synthetic_scene, 1), (synthetic_scene, 2),
                                        (tall_scene, 0), (tall_scene, 1), (textureless_scene, 0),
                                        (wall_scene, 1)])
def test_synthetic_masks_are_exact_projections(make, seed):
    scene = make(seed)
    for cam_name, cam in scene.cameras.items():
        masks = scene.masks[cam_name]
        assert sorted(masks) == scene.object_ids  # every object is seen in every view
        total = np.zeros(cam.size[::-1], int)
        for oid, mask in masks.items():
            assert mask.dtype == bool and mask.shape == cam.size[::-1]
            total += mask
            # The mask lies inside the projected box outline and fills most of it
            # (less only where another box hides part of it).
            uv, depth = cam.project(scene.meta["boxes"][oid])
            assert depth.min() > 0
            hull = np.zeros(mask.shape, np.uint8)
            cv2.fillConvexPoly(hull, cv2.convexHull(np.round(uv).astype(np.int32)), 1)
            grown = cv2.dilate(hull, np.ones((5, 5), np.uint8)).astype(bool)
            assert not (mask & ~grown).any(), (cam_name, oid)
            assert mask.sum() >= 0.6 * hull.sum(), (cam_name, oid)
            assert mask.sum() > 1000
        assert total.max() == 1  # one owner per pixel


def test_synthetic_images_show_the_objects(scene0):
    # The boxes' textures are saturated, the floor mostly grey: the masks pick out
    # the colourful pixels in every view.
    for cam in scene0.views:
        hsv = cv2.cvtColor(scene0.image(cam), cv2.COLOR_RGB2HSV)
        sat = hsv[..., 1].astype(float)
        objects = np.zeros(sat.shape, bool)
        for oid in scene0.object_ids:
            objects |= scene0.mask(cam, oid)
        assert sat[objects].mean() > sat[~objects].mean() + 40, cam


def test_motorcycle_ships_offline_and_has_one_object(moto):
    left, right = moto.image("left"), moto.image("right")
    assert left.shape == right.shape == (500, 741, 3)
    assert moto.source == "left" and moto.targets == ["right"]
    m = moto.mask("left", 1)
    frac = m.mean()
    assert 0.15 < frac < 0.4
    n, _ = cv2.connectedComponents(m.astype(np.uint8), connectivity=8)
    assert n == 2  # background + one object
    # a near object: the mask's disparities are well above the frame's median
    disp = moto.meta["disparity"]
    assert np.nanmedian(np.where(np.isfinite(disp) & m, disp, np.nan)) > np.nanmedian(
        np.where(np.isfinite(disp) & ~m, disp, np.nan)) + 10


def test_motorcycle_right_mask_is_the_disparity_warp(moto):
    ml, mr = moto.mask("left", 1), moto.mask("right", 1)
    disp = moto.meta["disparity"]
    left = moto.image("left").astype(np.float32)
    right = moto.image("right").astype(np.float32)
    assert 0.9 < mr.sum() / ml.sum() < 1.05
    ys, xs = np.nonzero(ml & np.isfinite(disp))
    xr = np.round(xs - disp[ys, xs]).astype(int)
    ok = (xr >= 0) & mr[ys, np.clip(xr, 0, ml.shape[1] - 1)]
    # almost every object pixel lands inside the right mask (the rest is occluded)
    assert ok.mean() > 0.95
    # and it lands on the same colour: photometric error far below a 10 px mistake
    err = np.abs(left[ys[ok], xs[ok]] - right[ys[ok], xr[ok]]).mean()
    wrong = np.clip(xr[ok] + 10, 0, ml.shape[1] - 1)
    err_wrong = np.abs(left[ys[ok], xs[ok]] - right[ys[ok], wrong]).mean()
    assert err < 12 and err_wrong > 2 * err
    # the right mask is the left one moved left by the disparity, not a copy
    d_med = int(round(np.median(disp[ys, xs])))
    shifted = np.zeros_like(ml)
    shifted[:, :-d_med] = ml[:, d_med:]
    inter = lambda a, b: (a & b).sum() / (a | b).sum()  # noqa: E731
    assert inter(mr, shifted) > 0.75 and inter(mr, shifted) > inter(mr, ml) + 0.2


def test_textureless_scene_is_scene_with_one_plain_box(scene0):
    plain = textureless_scene(0)
    assert plain.name == "textureless_0" and plain.object_ids == scene0.object_ids
    for cam in scene0.views:  # same geometry, same other objects
        for oid in scene0.object_ids:
            assert np.array_equal(plain.mask(cam, oid), scene0.mask(cam, oid))
        box = scene0.mask(cam, 1)
        same = np.abs(plain.image(cam).astype(int) - scene0.image(cam).astype(int)).max(axis=2) <= 8
        assert same[~cv2.dilate(box.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)].mean() > 0.99
    # object 1 has no texture: almost no detail inside it, unlike the textured box 2
    gray = cv2.cvtColor(plain.image("ego"), cv2.COLOR_RGB2GRAY)
    lap = np.abs(cv2.Laplacian(gray.astype(np.float32), cv2.CV_32F))
    def inner(oid):
        return cv2.erode(plain.mask("ego", oid).astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    assert lap[inner(1)].mean() < 0.25 * lap[inner(2)].mean()
    sift = cv2.SIFT_create()
    counts = [len(sift.detect(gray, inner(oid).astype(np.uint8))) for oid in (1, 2)]
    assert counts[0] < 8 <= counts[1], counts


def test_tall_scene_has_tall_boxes_and_wide_baselines():
    scene = tall_scene(0)
    assert scene.name == "tall_0"
    heights = [corners[:, 2].max() - corners[:, 2].min() for corners in scene.meta["boxes"].values()]
    assert min(heights) >= 0.3 and max(heights) <= 0.5
    def azimuth(cam):
        c = scene.cameras[cam].center
        return np.degrees(np.arctan2(c[1], c[0]))
    for exo in scene.targets:
        gap = abs((azimuth(exo) - azimuth("ego") + 180) % 360 - 180)
        assert 70 <= gap <= 90, (exo, gap)


def test_wall_scene_has_a_long_plain_panel():
    scene = wall_scene(0)
    corners = scene.meta["boxes"][1]
    length, thickness = np.linalg.norm(corners[1] - corners[0]), np.linalg.norm(corners[3] - corners[0])
    assert (length, thickness) == pytest.approx((0.8, 0.05))
    assert np.ptp(corners[:, 2]) == pytest.approx(0.4)
    assert scene.mask("exo1", 1).sum() > scene.mask("exo1", 2).sum()  # larger than a box there


def test_load_scene_names():
    assert load_scene("wall:2").name == "wall_2"
    assert load_scene("tall:1").name == "tall_1"
    assert load_scene("textureless").name == "textureless_0"
    assert load_scene(" synthetic:2 ").name == "synthetic_2"
    with pytest.raises(ValueError, match="unknown scene 'cube:1'"):
        load_scene("cube:1")
    with pytest.raises(ValueError, match="the seed must be an integer"):
        load_scene("tall:x")
