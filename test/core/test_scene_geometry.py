"""Bundled scenes' geometry ground truth: exact depth per view, true boxes, calibrated cameras."""

import numpy as np
import pytest

from vggts_ros.scenes import (_box_faces, floor_texture, look_at, motorcycle_scene, render, synthetic_scene,
                              tall_scene, wall_scene)


def unproject(cam, depth, v, u):
    z = depth[v, u]
    K = cam.K
    return np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], axis=1)


def to_world(cam, pts):
    return (pts - cam.t) @ cam.R


@pytest.fixture(scope="module")
def scene0():
    return synthetic_scene(0)


@pytest.mark.parametrize("make, seed", [(synthetic_scene, 0), (tall_scene, 0), (wall_scene, 1)])
def test_depth_is_exact_on_floor_and_boxes(make, seed):
    scene = make(seed)
    for name, cam in scene.cameras.items():
        depth = scene.depth(name)
        assert depth.shape == cam.size[::-1] and depth.dtype == np.float64
        owner = np.zeros(depth.shape, int)
        for oid in scene.object_ids:
            owner[scene.mask(name, oid)] = oid
        # the floor: every floor pixel's point lies on z = 0 in the world
        v, u = np.nonzero(owner == 0)
        floor = to_world(cam, unproject(cam, depth, v, u))
        assert np.abs(floor[:, 2]).max() < 1e-9, name
        for oid in scene.object_ids:
            box = scene.box(oid, name)  # the true box in this camera's optical frame
            local = (scene.surface_points(name, oid) - box.center) @ box.rotation
            # on the box's surface (one coordinate at +-half size) and never outside it
            to_surface = np.abs(np.abs(local) - box.size / 2).min(axis=1)
            assert to_surface.max() < 1e-9, (name, oid)
            assert (np.abs(local) <= box.size / 2 + 1e-9).all(), (name, oid)
            # the visible surface is the object's: its points fill most of the box's extent
            assert (np.ptp(local, axis=0) > 0.5 * box.size).sum() >= 2


def test_depth_marks_nothing_seen_as_nan():
    rng = np.random.default_rng(0)
    floor = floor_texture(rng, 256)
    cam = look_at((0.0, -3.0, 0.5), (0.0, 0.0, 0.5), 60.0, (160, 120))  # level: the upper half is sky
    faces = _box_faces((0.0, 0.0), (0.4, 0.3, 0.3), 0.3, rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), 1,
                       np.array([0.0, 0.0, 1.0]))
    img, ids = render(cam, faces, floor, 5.0)
    img2, ids2, depth = render(cam, faces, floor, 5.0, depth=True)
    assert np.array_equal(img, img2) and np.array_equal(ids, ids2)  # depth changes nothing drawn
    sky = np.isnan(depth)
    assert sky[:40].all() and not sky[-40:].any()
    assert not sky[ids == 1].any()
    # every box pixel's point lies on the plane of one of the box's faces
    v, u = np.nonzero(ids == 1)
    assert len(v) > 100
    p = to_world(cam, unproject(cam, depth, v, u))
    dist = np.stack([np.abs((p - f.origin) @ f.normal) for f in faces])
    assert dist.min(axis=0).max() < 1e-9


def test_true_boxes_match_the_drawn_corners(scene0):
    for oid in scene0.object_ids:
        box = scene0.box(oid)
        drawn = scene0.meta["boxes"][oid]
        got = box.corners()
        # the same 8 corners, in any order
        d = np.linalg.norm(got[:, None] - drawn[None], axis=2)
        assert d.min(axis=1).max() < 1e-12
        assert box.center[2] == pytest.approx(box.size[2] / 2)  # standing on the floor
        assert np.allclose(box.rotation @ box.rotation.T, np.eye(3)) and np.linalg.det(box.rotation) > 0
        for name, cam in scene0.cameras.items():
            in_cam = scene0.box(oid, name)
            assert np.allclose(in_cam.center, cam.R @ box.center + cam.t, atol=1e-12)
            assert np.allclose(in_cam.rotation, cam.R @ box.rotation, atol=1e-12)


def test_camera_poses_are_inverse(scene0):
    for cam in scene0.cameras.values():
        assert np.allclose(cam.T_world_from_cam @ cam.T_cam_from_world, np.eye(4), atol=1e-12)
        assert np.allclose(cam.T_world_from_cam[:3, 3], cam.center)


def test_missing_truth_is_named(scene0):
    with pytest.raises(KeyError, match="no depth for camera 'nope'"):
        scene0.depth("nope")
    with pytest.raises(KeyError, match="no true box for object 9"):
        scene0.box(9)


def test_motorcycle_depth_and_cameras_agree_with_the_disparity():
    scene = motorcycle_scene()
    left, right = scene.cameras["left"], scene.cameras["right"]
    disp = scene.meta["disparity"]
    v, u = np.nonzero(np.isfinite(disp))
    pts = unproject(left, scene.depth("left"), v, u)
    uv, z = right.project(pts)
    # every left point lands in the right view exactly x - d away, on the same row
    assert np.abs(uv[:, 0] - (u - disp[v, u])).max() < 1e-9
    assert np.abs(uv[:, 1] - v).max() < 1e-9
    depth_l = scene.depth("left")
    assert 2.0 < np.nanmin(depth_l) and np.nanmax(depth_l) < 5.5
    assert np.isnan(depth_l[~np.isfinite(disp)]).all()
    # the right depth is the nearest left surface that lands on each right pixel
    depth_r = scene.depth("right")
    assert np.isfinite(depth_r[scene.mask("right", 1)]).mean() > 0.9
    xr = np.floor(u - disp[v, u] + 0.5).astype(int)
    ok = (xr >= 0) & (xr < disp.shape[1])
    assert (depth_r[v[ok], xr[ok]] <= depth_l[v[ok], u[ok]] + 1e-12).all()
    assert not scene.boxes  # a motorcycle is not a box: no true box
