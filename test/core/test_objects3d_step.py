"""The 3D step of the set processor (the node's, ``vggts replay``'s and the demo's shared
path): sensor depth matched to the colour frame, intrinsics, static and VGGT poses, scale,
and a reason for everything that is missing or unusable. Real inputs: a bundled scene with
exact depth, the weight-free backend, depth and camera_info messages as ``rosbags`` builds
them (the classes ``vggts replay`` reads)."""

import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest

from vggts_ros.config import CameraConfig, GeometryConfig, NodeConfig
from vggts_ros.geometric import GeometricSegmentor
from vggts_ros.geometry.boxes import compare_boxes, quaternion_from_matrix
from vggts_ros.geometry.depth_stream import DepthStream
from vggts_ros.geometry.objects3d_step import Objects3DStep, pose_matrix
from vggts_ros.registry import TrackedObject
from vggts_ros.scenes import synthetic_scene
from vggts_ros.set_processor import CameraFrame, SetProcessor
from vggts_ros.stream import StatelessSegmentor

bags = pytest.importorskip("vggts_ros.bags")
pytest.importorskip("rosbags", reason="rosbags is not installed (pip install -r requirements.txt)")

SIZE = (320, 240)
STAMP = 10.0
SENSOR_ONLY = GeometryConfig(vggt_heads=False)  # depth topics only (the weight-free backend has no heads)


@pytest.fixture(scope="module")
def scene():
    return synthetic_scene(seed=0, ego_size=SIZE, exo_size=SIZE)


def rel(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(b))


def T_ego_from(scene, name):
    return scene.cameras["ego"].T_cam_from_world @ scene.cameras[name].T_world_from_cam


def pose7(T):
    return [float(v) for v in T[:3, 3]] + [float(v) for v in quaternion_from_matrix(T[:3, :3])]


def cameras(scene, depth=("exo1", "exo2"), poses=True, **extra):
    return [CameraConfig(n, f"/{n}/image_raw", scene.role(n), depth_topic=f"/{n}/depth" if n in depth else "",
                         pose=pose7(T_ego_from(scene, n)) if poses and n != "ego" else [], **extra.get(n, {}))
            for n in scene.views]


def feed(step, scene, stamp=STAMP, encodings=None, info=True):
    for name, stream in step.depth.items():
        enc = (encodings or {}).get(name, "32FC1")
        stream.add(stamp, bags.depth_msg(scene.depth(name), enc, int(round(stamp * 1e9)), name))
    if info:
        for name in scene.views:
            cam = scene.cameras[name]
            step.camera_info[name] = bags.camera_info_msg(cam.K, cam.size, 0, name)


def run(step, scene, segmentor=None, object_ids=(1,), stamp=STAMP, drawn=None):
    proc = SetProcessor(segmentor or GeometricSegmentor(), {n: scene.role(n) for n in scene.views}, objects3d=step)
    frames = {n: CameraFrame(n, stamp, scene.image(n)) for n in scene.views}
    objects = [TrackedObject(oid, "ego", f"box{oid}", scene.image("ego"), scene.mask("ego", oid),
                             stamp if drawn is None else drawn, 1) for oid in object_ids]
    return proc.process(stamp, frames, objects)


# ----------------------------------------------------------------------------- sensor depth
def test_sensor_depth_and_static_poses_give_each_camera_and_the_fused_box(scene):
    step = Objects3DStep(cameras(scene), SENSOR_ONLY, 0.02)
    feed(step, scene, encodings={"exo2": "16UC1"})
    out = run(step, scene, object_ids=(1, 2))
    r = out.objects3d
    assert r.depth == {"exo1": "", "exo2": ""} and "objects3d" in out.stages
    for name in ("exo1", "exo2"):
        objs = r.cameras[name]
        assert (objs.frame, objs.scale, objs.scale_source) == (name, "metric", f"depth:{name}")
        for oid in (1, 2):
            o = objs.get(oid)
            assert o.ok and o.label == f"box{oid}" and rel(o.centroid, scene.surface_points(name, oid).mean(0)) < 0.01
    # each result carries its camera's estimate
    for cam in out.cameras:
        for o in cam.objects:
            assert o.result.object3d is r.cameras[cam.camera].get(o.object.object_id)
    # ego (no depth topic) is the reference: identity; the others' static poses fuse the box
    assert "ego" not in r.cameras and r.fused.frame == "ego" and r.fused.scale_source == "depth:exo1+exo2"
    for oid in (1, 2):
        f = r.fused.get(oid)
        truth = scene.box(oid, "ego")
        c = compare_boxes(f.box, truth)
        assert f.cameras == ("exo1", "exo2") and c["size_error"] < 0.2
        assert c["center_error"] < 0.05 * np.linalg.norm(truth.center)
    assert r.poses is None  # no VGGT


def test_without_poses_there_is_no_fused_estimate_and_the_notes_say_why(scene):
    step = Objects3DStep(cameras(scene, poses=False), SENSOR_ONLY, 0.02)
    feed(step, scene)
    r = run(step, scene).objects3d
    assert r.fused is None and any("no camera has a pose in 'ego'" in n for n in r.notes)
    assert r.cameras["exo1"].get(1).ok


@pytest.mark.parametrize("what, message, expected", [
    ("NaN, inf and zero", lambda s: np.where(np.indices((SIZE[1], SIZE[0]))[0] % 2 == 0, np.nan,
                                             np.where(np.indices((SIZE[1], SIZE[0]))[1] % 2 == 0, np.inf, 0.0)),
     "has no valid reading"),
    ("wrong aspect", lambda s: np.full((100, 100), 3.0), "does not have the colour image's aspect ratio"),
    ("unknown encoding", "mono16", "unknown depth encoding 'mono16'"),
])
def test_unusable_depth_gives_every_object_of_the_camera_a_reason(scene, what, message, expected):
    step = Objects3DStep(cameras(scene), SENSOR_ONLY, 0.02)
    feed(step, scene)
    if message == "mono16":
        bad = bags.depth_msg(scene.depth("exo1"), "16UC1", int(STAMP * 1e9))
        bad.encoding = "mono16"
    else:
        bad = bags.depth_msg(message(scene), "32FC1", int(STAMP * 1e9))
    step.depth["exo1"].add(STAMP, bad)  # replaces the good one of this stamp
    r = run(step, scene, object_ids=(1, 2)).objects3d
    assert expected in r.depth["exo1"]
    for o in r.cameras["exo1"].objects:
        assert not o.ok and expected in o.reason and o.centroid is None and o.points == 0 and o.confidence == 0
    assert r.cameras["exo2"].get(1).ok and r.fused.get(1).cameras == ("exo2",)  # the rest goes on
    assert step.depth["exo1"].values()["depth_ok"] == "false" and expected in step.depth["exo1"].last_reason


def test_half_valid_depth_is_still_used(scene):
    step = Objects3DStep(cameras(scene), SENSOR_ONLY, 0.02)
    feed(step, scene)
    holes = scene.depth("exo1").copy()
    holes[::2] = np.nan  # every other row without a reading
    step.depth["exo1"].add(STAMP, bags.depth_msg(holes, "32FC1", int(STAMP * 1e9)))
    o = run(step, scene).objects3d.cameras["exo1"].get(1)
    assert o.ok and rel(o.centroid, scene.surface_points("exo1", 1).mean(0)) < 0.01


def test_missing_intrinsics_and_the_intrinsics_parameter(scene):
    K = scene.cameras["exo2"].K
    params = {"exo2": {"intrinsics": [K[0, 0], K[1, 1], K[0, 2], K[1, 2]]}}
    step = Objects3DStep(cameras(scene, **params), SENSOR_ONLY, 0.02)
    feed(step, scene, info=False)
    r = run(step, scene).objects3d
    o = r.cameras["exo1"].get(1)
    assert "no camera_info beside its image topic and no camera.exo1.intrinsics" in o.reason and not o.ok
    assert r.cameras["exo2"].get(1).ok  # from the parameter


def test_depth_of_another_stamp_is_never_used(scene):
    step = Objects3DStep(cameras(scene), SENSOR_ONLY, 0.02)
    feed(step, scene, stamp=STAMP - 0.5)  # the depth stream lags half a second
    o = run(step, scene).objects3d.cameras["exo1"].get(1)
    assert "no depth image within 0.02 s of the colour frame at 10.000 s" in o.reason
    assert "the newest is 0.500 s older (the depth stream stopped or lags" in o.reason


# ----------------------------------------------------------------------------- the depth stream
def test_depth_stream_matches_the_nearest_stamp_within_the_slop_and_says_why_not():
    now = [100.0]
    s = DepthStream("/d", keep=1.0, capacity=5, clock=lambda: now[0])
    assert s.match(1.0, 0.02).reason == "no depth image received on /d"
    for t in (1.0, 1.1, 1.2):
        s.add(t, f"m{t}")
    assert s.match(1.11, 0.02).message == "m1.1" and s.match(1.19, 0.02).message == "m1.2"
    why = s.match(1.14, 0.02).reason
    assert "nearest -0.040 s" in why and "not registered or not synchronised" in why
    now[0] += 3.0
    why = s.match(2.0, 0.02).reason
    assert "the newest is 0.800 s older (the depth stream stopped or lags, the last one arrived 3.0 s ago)" in why
    for t in (2.0, 2.2, 2.4):
        s.add(t, f"m{t}")
    assert s.kept() == (2.0, 2.2, 2.4)  # the last second of stamps
    assert "older than the 1 s of depth kept" in s.match(1.2, 0.02).reason
    v = s.values()
    assert (v["depth_received"], v["depth_sets_matched"], v["depth_sets_missed"]) == ("6", "2", "4")


def test_depth_stream_keeps_the_images_of_sets_waiting_for_and_in_inference():
    s = DepthStream("/d", keep=0.5, capacity=4, holds=2)
    s.hold(1.0, 0.01)  # handed to inference before its depth image arrived
    for i in range(10):
        s.add(1.0 + 0.1 * i, i)
    assert s.kept()[0] == 1.0 and len(s.kept()) == 5  # the waiting one, and the newest four
    assert "older than the 0.5 s of depth kept, and was not held" in s.match(1.2, 0.01).reason
    s.begin(1.0, 0.01)  # the inference thread takes it...
    s.hold(1.6, 0.01)
    s.hold(1.7, 0.01)  # ...while two newer sets wait (1.7 replaces 1.6 in the thread; both held)
    for i in range(10, 30):
        s.add(1.0 + 0.1 * i, i)
    assert [round(t, 3) for t in s.kept()] == [1.0, 1.6, 1.7, 3.6, 3.7, 3.8, 3.9]
    assert s.match(1.0, 0.01).message == 0  # 2.9 s later, still there
    s.hold(3.95, 0.01)
    s.add(4.0, 30)
    assert [round(t, 3) for t in s.kept()] == [1.7, 3.7, 3.8, 3.9, 4.0]  # matched: released; 1.6 replaced


def test_depth_stream_capacity_and_a_short_wait_for_an_image_on_its_way():
    s = DepthStream("/d", keep=10.0, capacity=3)
    for t in range(6):
        s.add(float(t), t)
    assert s.kept() == (3.0, 4.0, 5.0)
    threading.Timer(0.05, lambda: s.add(6.0, "late")).start()
    t0 = time.monotonic()
    m = s.match(6.0, 0.01, wait=2.0)
    assert m.message == "late" and time.monotonic() - t0 < 1.5
    assert s.match(7.0, 0.01, wait=0.05).message is None  # waited, then says why


# ----------------------------------------------------------------------------- VGGT geometry
@dataclass
class FakeGeometry:
    """VGGT's per-view geometry as the heads give it (vggts_ros.geometry.camera.ViewGeometry):
    depth and confidence in frame pixels, K, T_cam_from_ref (reference: the source view)."""

    depth: np.ndarray
    depth_conf: np.ndarray
    K: np.ndarray
    T_cam_from_ref: np.ndarray


class TrueGeometrySegmentor(StatelessSegmentor):
    """The weight-free backend plus VGGT-style geometry of a scene with a known scale:
    the true depth and poses divided by ``k`` (what VGGT would give if it were exact)."""

    name = "geometric+true_geometry"

    def __init__(self, scene, k):
        self.inner, self.scene, self.k = GeometricSegmentor(), scene, k

    def geometry(self, name):
        T = self.scene.cameras[name].T_cam_from_world @ self.scene.cameras["ego"].T_world_from_cam
        T[:3, 3] /= self.k
        d = self.scene.depth(name)
        return FakeGeometry((d / self.k).astype(np.float32), np.full(d.shape, 5.0, np.float32),
                            self.scene.cameras[name].K, T)

    def segment(self, source_image, source_mask, targets):
        results = self.inner.segment(source_image, source_mask, targets)
        for view, r in zip(targets, results):
            r.geometry = self.geometry(view.name)
            r.source_geometry = self.geometry("ego")
        return results


@pytest.mark.parametrize("depth_cams, baseline, kind, source", [
    (("exo1",), "", "metric", "depth:exo1"),
    ((), "exo1,exo2,{}", "metric", "baseline:exo1-exo2"),
    ((), "", "relative", "none"),
])
def test_vggt_geometry_scale_and_fusion_on_a_known_scale(scene, depth_cams, baseline, kind, source):
    k = 3.7
    dist = np.linalg.norm(scene.cameras["exo1"].center - scene.cameras["exo2"].center)
    geo = GeometryConfig(vggt_heads=True, baseline=baseline.format(dist))
    step = Objects3DStep(cameras(scene, depth=depth_cams, poses=False), geo, 0.02)
    feed(step, scene)
    out = run(step, scene, TrueGeometrySegmentor(scene, k), object_ids=(1, 2))
    r = out.objects3d
    assert (r.scale.kind, r.scale.source) == (kind, source) and not [n for n in r.notes if "VGGT" in n]
    factor = 1.0 if kind == "metric" else k  # relative: VGGT's units, the truth / k
    assert abs(r.scale.value - (k if kind == "metric" else 1.0)) < 1e-5 * k
    # poses: VGGT's, in ego's frame, metres when metric
    for name in scene.views:
        T = r.poses.poses[name]
        assert np.allclose(T[:3, :3], T_ego_from(scene, name)[:3, :3], atol=1e-9)
        assert np.allclose(T[:3, 3] * factor, T_ego_from(scene, name)[:3, 3], atol=1e-5)
    # every camera has 3D (VGGT depth where there is no sensor), the fused box is the truth
    assert set(r.cameras) == {"ego", "exo1", "exo2"}
    assert (r.fused.scale, r.fused.scale_source) == (kind, source)
    for oid in (1, 2):
        for name in ("exo1", "exo2"):
            o = r.cameras[name].get(oid)
            assert o.ok and rel(o.centroid * factor, scene.surface_points(name, oid).mean(0)) < 0.01
        f = r.fused.get(oid)
        truth = scene.box(oid, "ego")
        c = compare_boxes(f.box.__class__(f.box.center * factor, f.box.size * factor, f.box.rotation), truth)
        assert set(f.cameras) == {"ego", "exo1", "exo2"} and c["size_error"] < 0.05
        assert c["center_error"] < 0.01 * np.linalg.norm(truth.center)


def test_vggt_poses_need_the_reference_camera_in_the_pass(scene):
    """Keyframe mode: the source (reference) camera's mask was drawn on an older frame, so
    its view in VGGT's pass is not the set's frame; the poses say why they are missing."""
    step = Objects3DStep(cameras(scene, depth=("exo1",), poses=False), GeometryConfig(vggt_heads=True), 0.02)
    feed(step, scene)
    r = run(step, scene, TrueGeometrySegmentor(scene, 2.0), drawn=STAMP - 1.0).objects3d
    assert r.poses is None and r.fused is None
    assert any("the reference frame 'ego' is not in VGGT's pass of this set" in n for n in r.notes), r.notes
    assert r.scale.source == "depth:exo1" and r.cameras["exo2"].scale == "metric"  # VGGT depth, scaled


def test_vggt_heads_without_geometry_in_the_results_are_noted(scene):
    step = Objects3DStep(cameras(scene, depth=("exo1",)), GeometryConfig(vggt_heads=True), 0.02)
    feed(step, scene)
    r = run(step, scene).objects3d
    assert any("no result of this set carries VGGT geometry" in n for n in r.notes)
    assert r.cameras["exo1"].get(1).ok


# ----------------------------------------------------------------------------- configuration
def test_camera_geometry_parameters_round_trip_and_are_validated(scene):
    base = NodeConfig(cameras=cameras(scene, poses=True)).validate()
    params = base.to_parameters()
    assert params["camera.ego.pose"] == [] and params["camera.exo1.intrinsics"] == []
    assert params["camera.exo1.depth_topic"] == "/exo1/depth" and len(params["camera.exo1.pose"]) == 7
    again = NodeConfig.from_parameters(params).validate()
    assert again.cameras[1].pose == pytest.approx(base.cameras[1].pose) and again.cameras[0].pose == []
    given = dict(params, **{"camera.exo1.intrinsics": [500.0, 500.0, 160.0, 120.0],
                            "camera.exo2.intrinsics": [500, 500, 160, 120], "camera.ego.pose": None})  # None: ROS's []
    cfg = NodeConfig.from_parameters(given).validate()
    assert cfg.cameras[1].intrinsics == [500.0, 500.0, 160.0, 120.0] == cfg.cameras[2].intrinsics
    assert cfg.cameras[0].pose == []
    assert pose_matrix(cfg.cameras[1].pose) == pytest.approx(T_ego_from(scene, "exo1"))
    bad = [
        ({"camera.exo1.depth_topic": "exo2/image_raw"},
         "camera.exo1.depth_topic: 'exo2/image_raw' is a camera image topic"),
        ({"camera.exo2.depth_topic": "/exo1/depth"}, "is the depth topic of several cameras"),
        ({"camera.exo1.intrinsics": [500.0, -500.0, 1.0, 1.0]}, "fx and fy must be positive"),
        ({"camera.exo1.pose": [1.0, 2.0]}, "camera.exo1.pose: needs 7 numbers"),
        ({"geometry.baseline": "exo1,exo1,0.5"}, "names camera 'exo1' twice"),
        ({"geometry.baseline": "exo1,exo2,-1"}, "must be a positive number of metres"),
    ]
    assert NodeConfig.from_parameters(params).vggt_heads()  # on by default with the VGGT backend
    assert not NodeConfig.from_parameters(dict(params, **{"model.backend": "geometric"})).vggt_heads()  # no heads
    for change, message in bad:
        with pytest.raises(ValueError, match=message.replace(".", r"\.")):
            NodeConfig.from_parameters(dict(params, **change)).validate()


def test_the_step_on_vggt_heads_of_the_deterministic_model(scene):
    """The real pipeline with its camera and depth heads on (``test-tiny``: deterministic
    weights, meaningless geometry): each result's ViewGeometry reaches the step, the scale
    comes from the one depth camera, poses are in the source camera's frame, and whatever
    cannot be used (e.g. a field of view that gives no focal length) is a note and a reason,
    never an exception or a number published as good."""
    from vggts_ros.backends import create_segmentor
    from vggts_ros.config import ModelConfig, PipelineConfig

    seg = create_segmentor(ModelConfig(backend="vggts", config="test-tiny", device="cpu"),
                           PipelineConfig(geometry_heads=True))
    step = Objects3DStep(cameras(scene, depth=("exo1",), poses=False), GeometryConfig(vggt_heads=True), 0.02)
    feed(step, scene)
    out = run(step, scene, seg)
    r = out.objects3d
    assert out.cameras[0].objects[0].result.geometry is not None
    assert (r.scale.kind, r.scale.source) == ("metric", "depth:exo1") and r.scale.samples > 1000
    assert np.allclose(r.poses.poses["ego"], np.eye(4)) and set(r.poses.poses) <= {"ego", "exo1", "exo2"}
    for name, objs in r.cameras.items():
        for o in objs.objects:
            assert o.ok or (o.reason and o.centroid is None and o.points == 0), (name, o.reason)
            if o.ok:
                assert np.isfinite(o.centroid).all() and np.isfinite(o.size).all()
