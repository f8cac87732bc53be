"""Objects in 3D per camera and fused, on the bundled scenes' exact geometry, and bad input."""

import dataclasses

import cv2
import numpy as np
import pytest

from vggts_ros.geometry.accuracy import scene_geometry
from vggts_ros.geometry.boxes import compare_boxes
from vggts_ros.geometry.depth import Intrinsics
from vggts_ros.geometry.objects3d import (CameraGeometry, Object3DConfig, estimate_object, fuse_objects,
                                          object_points, objects_in_3d)
from vggts_ros.geometry.scale import Scale, scale_from_depth
from vggts_ros.scenes import synthetic_scene, tall_scene

BARE = Object3DConfig(complete=False, edge_jump=0.0, outlier_k=float("inf"))  # every masked pixel with depth


@pytest.fixture(scope="module")
def scene():
    return synthetic_scene(0)


@pytest.fixture(scope="module")
def tall():
    return tall_scene(0)


def view(scene, name):
    cam = scene.cameras[name]
    return scene.depth(name), Intrinsics.from_K(cam.K, cam.size)


def rel_err(est, truth):
    return float(np.linalg.norm(est - truth) / np.linalg.norm(truth))


def test_unprojection_gives_the_visible_surface_exactly(scene):
    # every pixel of the exact mask, unprojected: the truth's own definition, to the last bits
    for name in scene.views:
        depth, intr = view(scene, name)
        for oid in scene.object_ids:
            got = object_points(scene.mask(name, oid), depth, intr, config=BARE)
            truth = scene.surface_points(name, oid)
            assert got.points.shape == truth.shape
            assert np.abs(got.points - truth).max() < 1e-12


def test_estimate_per_camera_matches_the_truth(scene):
    for name in scene.views:
        depth, intr = view(scene, name)
        for oid in scene.object_ids:
            est = estimate_object(scene.mask(name, oid), depth, intr, object_id=oid, label="box", camera=name)
            assert est.ok and est.reason == "" and est.cameras == (name,) and est.label == "box"
            truth = scene.surface_points(name, oid)
            assert rel_err(est.centroid, truth.mean(0)) < 0.005
            assert est.points > 0.9 * len(truth) and est.cloud.shape == (est.points, 3)
            assert est.cloud.dtype == np.float32
            assert 0.9 < est.confidence <= 1.0
            # one camera sees a box's top and sides: its box is the true box
            c = compare_boxes(est.box, scene.box(oid, name))
            assert c["size_error"] < 0.05 and c["angle_deg"] < 1.0, (name, oid, c)
            # z of an upright box is the height: along the support plane's normal
            assert est.size[2] == pytest.approx(scene.box(oid).size[2], rel=0.05)
            q = est.orientation
            assert q.shape == (4,) and np.linalg.norm(q) == pytest.approx(1.0)


def test_deterministic(scene):
    depth, intr = view(scene, "exo1")
    a = estimate_object(scene.mask("exo1", 2), depth, intr)
    b = estimate_object(scene.mask("exo1", 2), depth.copy(), intr)
    assert np.array_equal(a.centroid, b.centroid) and np.array_equal(a.box.size, b.box.size)
    assert np.array_equal(a.box.rotation, b.box.rotation) and np.array_equal(a.cloud, b.cloud)


def test_float32_depth_as_a_topic_gives_the_same_estimate(scene):
    depth, intr = view(scene, "exo2")
    a = estimate_object(scene.mask("exo2", 1), depth, intr)
    b = estimate_object(scene.mask("exo2", 1), depth.astype(np.float32), intr)
    assert np.abs(a.centroid - b.centroid).max() < 1e-5


def test_partial_mask_is_completed_over_the_support_plane(tall):
    # The top face only (what a transfer from the source often gives): the sides are found
    # in the depth above the floor, so the centroid is that of the whole visible surface.
    name, oid = "exo1", 3
    depth, intr = view(tall, name)
    mask = tall.mask(name, oid)
    box = tall.box(oid, name)
    pts = tall.surface_points(name, oid)
    v, u = np.nonzero(mask)
    top = np.zeros_like(mask)
    on_top = np.abs((pts - box.center) @ box.rotation[:, 2] - box.size[2] / 2) < 1e-9
    top[v[on_top], u[on_top]] = True
    assert 0.1 < top.sum() / mask.sum() < 0.5
    truth = pts.mean(0)
    without = estimate_object(top, depth, intr, config=dataclasses.replace(Object3DConfig(), complete=False))
    with_ = estimate_object(top, depth, intr)
    assert rel_err(without.centroid, truth) > 0.03
    assert rel_err(with_.centroid, truth) < 0.005
    assert with_.note == ""


def test_floor_in_the_mask_is_dropped(scene):
    name, oid = "exo1", 2
    depth, intr = view(scene, name)
    mask = scene.mask(name, oid)
    leaky = cv2.dilate(mask.astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool)
    others = np.zeros_like(mask)
    for o in scene.object_ids:
        if o != oid:
            others |= scene.mask(name, o)
    leaky &= ~others  # the floor around it, not the neighbours
    truth = scene.surface_points(name, oid).mean(0)
    bare = estimate_object(leaky, depth, intr, config=BARE)
    est = estimate_object(leaky, depth, intr)
    assert rel_err(bare.centroid, truth) > 3 * rel_err(est.centroid, truth)
    assert rel_err(est.centroid, truth) < 0.005
    assert compare_boxes(est.box, scene.box(oid, name))["size_error"] < 0.05


def test_outlying_depths_are_rejected(scene):
    name, oid = "exo2", 3
    depth, intr = view(scene, name)
    mask = scene.mask(name, oid)
    rng = np.random.default_rng(0)
    bad = depth.copy()
    v, u = np.nonzero(mask)
    pick = rng.choice(len(v), len(v) // 10, replace=False)
    bad[v[pick], u[pick]] *= rng.choice([0.3, 3.0], len(pick))  # 10 % wild readings
    truth = scene.surface_points(name, oid).mean(0)
    assert rel_err(estimate_object(mask, bad, intr, config=BARE).centroid, truth) > 0.05
    est = estimate_object(mask, bad, intr)
    assert rel_err(est.centroid, truth) < 0.01


@pytest.mark.parametrize("fill", [np.nan, np.inf, 0.0, -1.0])
def test_no_valid_depth_gives_a_reason_not_an_estimate(scene, fill):
    depth, intr = view(scene, "exo1")
    mask = scene.mask("exo1", 1)
    bad = depth.copy()
    bad[mask] = fill
    est = estimate_object(mask, bad, intr, object_id=1, camera="exo1")
    assert not est.ok and est.centroid is None and est.box is None and est.confidence == 0.0
    assert "no valid depth under the mask" in est.reason
    assert np.array_equal(est.size, np.zeros(3)) and np.array_equal(est.orientation, [0, 0, 0, 1])


def test_half_missing_depth_still_estimates_with_lower_confidence(scene):
    depth, intr = view(scene, "exo1")
    mask = scene.mask("exo1", 2)
    holes = depth.copy()
    holes[::2] = np.nan
    full = estimate_object(mask, depth, intr)
    part = estimate_object(mask, holes, intr)
    assert part.ok and part.confidence < 0.7 * full.confidence
    assert rel_err(part.centroid, full.centroid) < 0.005


def test_missing_inputs_give_reasons(scene):
    depth, intr = view(scene, "exo1")
    mask = scene.mask("exo1", 1)
    assert estimate_object(mask, None, intr).reason == "no depth for this camera"
    assert estimate_object(mask, depth, None).reason == "no intrinsics for this camera"
    assert estimate_object(np.zeros_like(mask), depth, intr).reason == "empty mask"
    tiny = np.zeros_like(mask)
    v, u = np.nonzero(mask)
    tiny[v[:5], u[:5]] = True
    assert "too few usable depth points" in estimate_object(tiny, depth, intr).reason


def test_sizes_that_do_not_match_are_named(scene):
    depth, intr = view(scene, "exo1")
    mask = scene.mask("exo1", 1)
    with pytest.raises(ValueError, match=r"depth \(180, 320\) does not match the mask \(360, 640\)"):
        estimate_object(mask, depth[::2, ::2], intr)
    with pytest.raises(ValueError, match="intrinsics are for 320x180, the mask is 640x360"):
        estimate_object(mask, depth, intr.scaled_to((320, 180)))
    with pytest.raises(ValueError, match="depth confidence"):
        estimate_object(mask, depth, intr, confidence=np.ones((10, 10)))


def test_low_confidence_depth_is_dropped(scene):
    depth, intr = view(scene, "exo1")
    mask = scene.mask("exo1", 2)
    split = int(np.median(np.nonzero(mask)[1]))
    conf = np.full(depth.shape, 5.0)
    conf[:, :split] = 1.0  # the left part unsure
    cfg = Object3DConfig(min_depth_confidence=2.0, complete=False)
    est = estimate_object(mask, depth, intr, confidence=conf, config=cfg)
    full = estimate_object(mask, depth, intr, config=dataclasses.replace(cfg, min_depth_confidence=0.0))
    assert 0.3 * full.points < est.points < 0.7 * full.points
    assert (intr.project(est.cloud.astype(np.float64))[:, 0] > split - 1e-3).all()
    got = object_points(mask, depth, intr, confidence=conf, config=cfg)
    assert got.dropped["low_confidence"] == np.count_nonzero(mask[:, :split])


def fused(scene, **kwargs):
    return objects_in_3d(scene_geometry(scene, {}), **kwargs)


def test_fusion_on_exact_poses_is_exact(scene):
    res = fused(scene)
    assert res.fused.frame == "ego" and set(res.cameras) == {"ego", "exo1", "exo2"}
    assert res.fused.scale == "metric" and res.fused.scale_source == "depth:ego+exo1+exo2"
    for oid in scene.object_ids:
        f = res.fused.get(oid)
        assert f.ok and f.cameras == ("ego", "exo1", "exo2")
        truth = scene.box(oid, "ego")
        # every fused point lies on the true box's surface: the poses put them in place exactly
        local = (f.cloud.astype(np.float64) - truth.center) @ truth.rotation
        assert np.abs(np.abs(local) - truth.size / 2).min(axis=1).max() < 1e-5
        c = compare_boxes(f.box, truth)
        assert c["size_error"] < 0.01 and c["center_error"] < 0.005 * np.linalg.norm(truth.center)
        assert f.points > max(res.cameras[c].get(oid).points for c in f.cameras)


def test_fusion_sees_more_than_one_camera(tall):
    # a camera that sees one side of a tall box gives a thin box; all cameras give the box
    res = fused(tall)
    oid = 2
    truth = tall.box(oid, "ego")
    fused_err = compare_boxes(res.fused.get(oid).box, truth)["size_error"]
    assert fused_err < 0.02
    # each camera alone, moved into the reference frame
    worst_single = max(compare_boxes(res.cameras[n].get(oid).box.transformed(
        tall.cameras["ego"].T_cam_from_world @ tall.cameras[n].T_world_from_cam), truth)["size_error"]
        for n in tall.views)
    assert worst_single >= fused_err


def test_camera_without_pose_or_depth_is_left_out(scene):
    cams = scene_geometry(scene, {})
    cams[2] = dataclasses.replace(cams[2], pose=None)
    cams[1] = dataclasses.replace(cams[1], depth=None)
    res = objects_in_3d(cams)
    assert res.cameras["exo1"].get(1).reason == "no depth for this camera"
    assert res.cameras["exo1"].scale_source == "none"
    assert res.fused.get(1).cameras == ("ego",)
    assert res.fused.scale_source == "depth:ego"
    # nobody has a pose: no fused estimate at all
    assert objects_in_3d([dataclasses.replace(c, pose=None) for c in cams]).fused is None


def test_fusion_without_any_usable_camera_says_why(scene):
    cams = [dataclasses.replace(c, depth=None) for c in scene_geometry(scene, {})]
    f = objects_in_3d(cams).fused.get(1)
    assert not f.ok and "no camera with a pose and depth saw it" in f.reason and "no depth" in f.reason


def test_multi_view_consistency_removes_what_one_mask_took_wrongly(scene):
    # exo1's mask of object 1 also covers object 2: the other cameras see object 2's
    # surface outside their masks of object 1 and vote those points out.
    masks = {"exo1": {1: scene.mask("exo1", 1) | scene.mask("exo1", 2)}}
    cams = scene_geometry(scene, masks)
    cfg_off = Object3DConfig(consistency=False)
    truth = scene.box(1, "ego")
    on = objects_in_3d(cams).fused.get(1)
    off = objects_in_3d(cams, config=cfg_off).fused.get(1)
    assert compare_boxes(off.box, truth)["size_error"] > 0.5
    assert compare_boxes(on.box, truth)["size_error"] < 0.05
    assert on.points < off.points


def test_fuse_objects_direct_call(scene):
    cams = scene_geometry(scene, {})
    ests = {c.name: estimate_object(c.masks[3], c.depth, c.intrinsics, object_id=3, camera=c.name) for c in cams}
    poses = {c.name: c.pose for c in cams}
    f = fuse_objects(ests, poses)
    assert f.ok and f.object_id == 3 and f.cameras == ("ego", "exo1", "exo2")
    assert compare_boxes(f.box, scene.box(3, "ego"))["size_error"] < 0.01
    only = fuse_objects(ests, {"exo2": poses["exo2"]})
    assert only.cameras == ("exo2",)


def test_vggt_depth_and_poses_become_metric_through_the_scale(scene):
    # VGGT's depth and translations are the truth divided by an unknown factor; one camera
    # has a depth sensor. The scale from it makes everything metric again.
    k = 2.7
    metric = scene_geometry(scene, {})
    cams = []
    for i, c in enumerate(metric):
        pose = c.pose.copy()
        pose[:3, 3] /= k
        cams.append(CameraGeometry(c.name, c.masks, depth=c.depth if i == 0 else None, intrinsics=None,
                                   vggt_depth=c.depth / k, vggt_intrinsics=c.intrinsics, vggt_pose=pose))
    scale = scale_from_depth(metric[0].depth, metric[0].depth / k, camera="ego")
    assert scale.kind == "metric" and scale.value == pytest.approx(k, rel=1e-6) and scale.source == "depth:ego"
    res = objects_in_3d(cams, scale=scale)
    ref = objects_in_3d(metric)
    assert res.fused.scale == "metric" and res.fused.scale_source == "depth:ego"
    assert res.cameras["ego"].scale_source == "depth:ego"  # its own sensor
    assert res.cameras["exo1"].scale == "metric" and res.cameras["exo1"].scale_source == "depth:ego"
    for oid in scene.object_ids:
        a, b = res.fused.get(oid), ref.fused.get(oid)
        assert np.abs(a.centroid - b.centroid).max() < 1e-4
        assert np.abs(a.box.size - b.box.size).max() < 1e-4
    # without a scale the VGGT cameras are relative, and the sensor camera cannot join them
    rel = objects_in_3d(cams)
    assert rel.fused.scale == "relative" and rel.fused.scale_source == "none"
    assert rel.cameras["exo1"].scale == "relative"
    assert "ego" not in rel.fused.get(1).cameras and rel.fused.get(1).cameras == ("exo1", "exo2")
    assert rel_err(rel.fused.get(1).box.center * k, ref.fused.get(1).box.center) < 1e-3
    assert isinstance(Scale(), Scale)


def test_one_set_of_the_set_processor_in_3d(scene):
    """The per-set call as the node makes it: the set processor's output (weight-free
    backend), each camera's depth and intrinsics, static poses -> per camera and fused."""
    from vggts_ros.geometric import GeometricSegmentor
    from vggts_ros.geometry.objects3d import cameras_from_set
    from vggts_ros.registry import TrackedObject
    from vggts_ros.set_processor import CameraFrame, SetProcessor

    proc = SetProcessor(GeometricSegmentor(), {n: scene.role(n) for n in scene.views})
    frames = {n: CameraFrame(n, 10.0, scene.image(n)) for n in scene.views}
    objects = [TrackedObject(oid, "ego", f"box{oid}", scene.image("ego"), scene.mask("ego", oid), 10.0, 1)
               for oid in scene.object_ids]
    out = proc.process(10.0, frames, objects)
    geo = scene_geometry(scene, {})
    cams, labels = cameras_from_set(out, frames, objects, depth={c.name: c.depth for c in geo},
                                    intrinsics={c.name: c.intrinsics for c in geo},
                                    poses={c.name: c.pose for c in geo})
    assert [c.name for c in cams] == ["ego", "exo1", "exo2"] and labels == {1: "box1", 2: "box2", 3: "box3"}
    assert all(np.array_equal(cams[0].masks[o], scene.mask("ego", o)) for o in scene.object_ids)  # drawn here
    res = objects_in_3d(cams, labels=labels)
    for oid in scene.object_ids:
        for name in ("exo1", "exo2"):
            est = res.cameras[name].get(oid)
            assert est.ok and est.label == f"box{oid}" and 0 < est.confidence <= 1
            assert rel_err(est.centroid, scene.surface_points(name, oid).mean(0)) < 0.01
        f = res.fused.get(oid)
        truth = scene.box(oid, "ego")
        assert compare_boxes(f.box, truth)["size_error"] < 0.2
        assert np.linalg.norm(f.box.center - truth.center) < 0.05 * np.linalg.norm(truth.center)
    # a set whose source frame is not the drawing's (keyframe drawn earlier): ego adds nothing
    later = {n: CameraFrame(n, 11.0, scene.image(n)) for n in scene.views}
    cams2, _ = cameras_from_set(proc.process(11.0, later, objects), later, objects)
    assert [c.name for c in cams2] == ["exo1", "exo2"] and cams2[0].depth is None


def test_relative_depth_is_not_cut_by_metric_limits(scene):
    # VGGT's relative units can be anything: depths of 0.02 "units" are not "too near"
    k = 100.0
    cams = [CameraGeometry(c.name, c.masks, vggt_depth=c.depth / k, vggt_intrinsics=c.intrinsics,
                           vggt_pose=np.diag([1.0, 1.0, 1.0, 1.0]) if i == 0 else None)
            for i, c in enumerate(scene_geometry(scene, {}))]
    res = objects_in_3d(cams)
    est = res.cameras["exo1"].get(1)
    assert res.cameras["exo1"].scale == "relative" and est.ok
    assert rel_err(est.centroid * k, scene.surface_points("exo1", 1).mean(0)) < 0.005
    assert res.fused.get(1).cameras == ("ego",)
