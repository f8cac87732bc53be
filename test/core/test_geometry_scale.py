"""The metric scale of VGGT's relative geometry: recovered from a depth camera and from a
known baseline on inputs with a known scale; bad configurations named."""

import numpy as np
import pytest

from vggts_ros.geometry.scale import (Baseline, Scale, ScaleError, check_baseline, choose_scale, parse_baseline,
                                      scale_from_baseline, scale_from_depth, scale_from_depths)
from vggts_ros.scenes import synthetic_scene

K = 3.7  # VGGT's units are the truth divided by this


@pytest.fixture(scope="module")
def scene():
    return synthetic_scene(1)


def vggt_like(depth, rng, noise=0.01, outliers=0.3):
    """The scene's depth in VGGT units: / K, 1 % multiplicative noise, a share of wild values."""
    d = depth / K * (1 + rng.normal(0, noise, depth.shape))
    bad = rng.uniform(0, 1, depth.shape) < outliers
    d[bad] = rng.uniform(0.01, 10.0, int(bad.sum()))
    return d


@pytest.mark.parametrize("outliers", [0.0, 0.3, 0.45])
def test_scale_from_a_depth_camera_is_recovered(scene, outliers):
    rng = np.random.default_rng(0)
    sensor = scene.depth("exo1")
    s = scale_from_depth(sensor, vggt_like(sensor, rng, outliers=outliers), camera="exo1")
    assert s.kind == "metric" and s.source == "depth:exo1"
    assert s.value == pytest.approx(K, rel=0.005)
    assert s.samples == np.isfinite(sensor).sum()
    # exact inputs: exact scale
    assert scale_from_depth(sensor, sensor / K).value == pytest.approx(K, rel=1e-12)


def test_the_estimator_breaks_down_past_half_outliers(scene):
    # the median's 50 % breakdown point, shown: 60 % of pixels agreeing on another scale win
    sensor = scene.depth("exo2")
    wrong = sensor / 2.0
    v = np.where(np.random.default_rng(1).uniform(0, 1, sensor.shape) < 0.6, wrong, sensor / K)
    assert scale_from_depth(sensor, v).value == pytest.approx(2.0, rel=1e-9)
    v = np.where(np.random.default_rng(1).uniform(0, 1, sensor.shape) < 0.4, wrong, sensor / K)
    assert scale_from_depth(sensor, v).value == pytest.approx(K, rel=1e-9)


def test_confidence_and_invalid_pixels_are_left_out(scene):
    rng = np.random.default_rng(2)
    sensor = scene.depth("ego").copy()
    vggt = sensor / K
    conf = np.full(sensor.shape, 5.0)
    # the left half: VGGT wrong but unsure of it; a band without sensor readings (0 and NaN)
    vggt[:, :240] = sensor[:, :240] / 1.5
    conf[:, :240] = 1.0
    sensor[:40] = 0.0
    sensor[40:80] = np.nan
    s = scale_from_depth(sensor, vggt, confidence=conf, min_confidence=2.0, camera="ego")
    assert s.value == pytest.approx(K, rel=1e-9)
    assert s.samples == (480 - 80) * 240
    del rng


def test_several_depth_cameras_pool_their_pixels(scene):
    pairs = {n: (scene.depth(n), scene.depth(n) / K, None) for n in ("exo1", "exo2")}
    s = scale_from_depths(pairs)
    assert s.source == "depth:exo1+exo2" and s.value == pytest.approx(K, rel=1e-12)


def test_no_overlapping_pixels_is_an_error(scene):
    sensor = scene.depth("exo1")
    vggt = np.full(sensor.shape, np.nan)
    with pytest.raises(ScaleError, match=r"no valid overlapping pixels .* \(0 < 100; per camera exo1: 0\)"):
        scale_from_depth(sensor, vggt, camera="exo1")
    with pytest.raises(ScaleError, match="differ in size"):
        scale_from_depth(sensor, sensor[::2, ::2] / K, camera="exo1")


def centres(scene, divide=K):
    """VGGT-like camera centres: the true ones in the ego frame, divided by ``divide``."""
    T = scene.cameras["ego"].T_cam_from_world
    return {n: (T[:3, :3] @ c.center + T[:3, 3]) / divide for n, c in scene.cameras.items()}


def test_scale_from_a_known_baseline_is_recovered(scene):
    truth = float(np.linalg.norm(scene.cameras["exo1"].center - scene.cameras["exo2"].center))
    s = scale_from_baseline(centres(scene), Baseline("exo1", "exo2", truth))
    assert s.kind == "metric" and s.source == "baseline:exo1-exo2"
    assert s.value == pytest.approx(K, rel=1e-12)
    # applying it brings VGGT's lengths and poses back to metres
    assert s.depth(np.array([1.0, 2.0])) == pytest.approx([K, 2 * K])
    T = np.eye(4)
    T[:3, 3] = [1.0, 0.0, -1.0]
    assert s.pose(T)[:3, 3] == pytest.approx([K, 0.0, -K]) and T[0, 3] == 1.0


def test_baseline_problems_are_named(scene):
    c = centres(scene)
    with pytest.raises(ScaleError, match="names camera 'front', which has no VGGT pose"):
        scale_from_baseline(c, Baseline("front", "exo2", 1.0))
    with pytest.raises(ScaleError, match="names camera 'exo1' twice"):
        scale_from_baseline(c, Baseline("exo1", "exo1", 1.0))
    with pytest.raises(ScaleError, match="estimated baseline exo1-exo2 is zero"):
        scale_from_baseline({"exo1": np.ones(3), "exo2": np.ones(3)}, Baseline("exo1", "exo2", 1.0))
    with pytest.raises(ScaleError, match="not one of the configured cameras"):
        check_baseline(Baseline("exo1", "front", 1.0), ["ego", "exo1", "exo2"])
    check_baseline(Baseline("exo1", "exo2", 1.0), ["ego", "exo1", "exo2"])


def test_parse_baseline_forms_and_errors():
    assert parse_baseline("exo1,exo2,0.6") == Baseline("exo1", "exo2", 0.6)
    assert parse_baseline("exo1 exo2 0.6") == Baseline("exo1", "exo2", 0.6)
    assert parse_baseline(["exo1", "exo2", 0.6]) == Baseline("exo1", "exo2", 0.6)
    assert parse_baseline("") is None and parse_baseline(None) is None and parse_baseline([]) is None
    for bad, match in [("exo1,exo2", "two camera names and metres"), ("a,a,1", "twice"),
                       ("a,b,-1", "positive number"), ("a,b,x", "is not a number"), ("a,b,nan", "positive")]:
        with pytest.raises(ScaleError, match=match):
            parse_baseline(bad)


def test_choose_scale_prefers_depth_then_baseline_then_relative(scene):
    sensor = scene.depth("exo1")
    truth = float(np.linalg.norm(scene.cameras["exo1"].center - scene.cameras["exo2"].center))
    base = Baseline("exo1", "exo2", truth)
    pairs = {"exo1": (sensor, sensor / 2.0, None)}
    assert choose_scale(depth_pairs=pairs, centres=centres(scene), baseline=base).source == "depth:exo1"
    no_overlap = {"exo1": (sensor, np.full(sensor.shape, np.nan), None)}
    s = choose_scale(depth_pairs=no_overlap, centres=centres(scene), baseline=base)
    assert s.source == "baseline:exo1-exo2" and "no valid overlapping pixels" in s.note
    assert s.value == pytest.approx(K)
    s = choose_scale(depth_pairs=no_overlap, centres=centres(scene), baseline=Baseline("exo1", "front", 1.0))
    assert s == Scale(note=s.note) and s.kind == "relative" and s.source == "none" and s.value == 1.0
    assert "no valid overlapping pixels" in s.note and "'front'" in s.note
    assert choose_scale() == Scale()
