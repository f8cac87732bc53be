"""Sensor depth as REP 118 gives it, scaled to the colour image, and pinhole intrinsics."""

import numpy as np
import pytest

from vggts_ros.geometry.depth import (DepthError, Intrinsics, IntrinsicsError, depth_to_metres, missing_geometry,
                                      resolve_intrinsics, same_aspect, scale_depth, sensor_depth)


def test_32fc1_is_metres_and_every_non_reading_is_nan():
    raw = np.array([[1.5, 0.0, np.nan], [np.inf, -np.inf, -2.0], [3.25, 1e-3, 7.0]], np.float32)
    m = depth_to_metres(raw, "32FC1")
    assert m.dtype == np.float32
    expected = np.array([[1.5, np.nan, np.nan], [np.nan, np.nan, np.nan], [3.25, 1e-3, 7.0]], np.float32)
    assert np.array_equal(np.isnan(m), np.isnan(expected))
    assert np.array_equal(m[~np.isnan(m)], expected[~np.isnan(expected)])
    assert np.isfinite(raw).sum() == 6  # the input is not modified
    assert np.isnan(depth_to_metres(raw.astype(np.float64), "32FC1")[0, 1])  # float64 accepted too


def test_16uc1_is_millimetres_and_zero_is_no_reading():
    raw = np.array([[0, 1000, 1500], [65535, 1, 4321]], np.uint16)
    m = depth_to_metres(raw, "16UC1")
    assert np.isnan(m[0, 0])
    assert m[0, 1] == pytest.approx(1.0) and m[0, 2] == pytest.approx(1.5) and m[1, 0] == pytest.approx(65.535)
    assert m[1, 1] == pytest.approx(0.001) and m[1, 2] == pytest.approx(4.321)
    assert depth_to_metres(raw[..., None], "16UC1").shape == (2, 3)  # HxWx1 is one channel


@pytest.mark.parametrize("data, encoding, match", [
    (np.ones((4, 4), np.float32), "mono16", "unknown depth encoding 'mono16'"),
    (np.ones((4, 4), np.float32), "16UC1", "16UC1 depth must be uint16"),
    (np.ones((4, 4), np.uint16), "32FC1", "32FC1 depth must be float"),
    (np.ones((4, 4, 3), np.float32), "32FC1", "HxW with one channel"),
    (np.ones((0, 4), np.float32), "32FC1", "HxW with one channel"),
])
def test_bad_depth_is_refused_with_a_message(data, encoding, match):
    with pytest.raises(DepthError, match=match):
        depth_to_metres(data, encoding)


@pytest.mark.parametrize("bad", [np.zeros((6, 8), np.uint16)])
def test_all_invalid_depth_is_an_error(bad):
    with pytest.raises(DepthError, match="no valid reading"):
        sensor_depth(bad, "16UC1", (8, 6))
    with pytest.raises(DepthError, match="no valid reading"):
        sensor_depth(np.full((6, 8), np.nan, np.float32), "32FC1", (8, 6))
    with pytest.raises(DepthError, match="no valid reading"):
        sensor_depth(np.full((6, 8), np.inf, np.float32), "32FC1", (8, 6))


def test_half_resolution_depth_is_scaled_by_nearest_without_blending_edges():
    rng = np.random.default_rng(1)
    small = rng.uniform(1.0, 5.0, (24, 32)).astype(np.float32)
    small[:, 16:] = 9.0  # a depth edge
    big = scale_depth(small, (64, 48))
    assert big.shape == (48, 64)
    # each colour pixel takes the depth pixel containing its centre: a 2x2 block per depth pixel
    assert np.array_equal(big, np.repeat(np.repeat(small, 2, axis=0), 2, axis=1))
    assert set(np.unique(big)) <= set(np.unique(small))  # nothing interpolated
    # a larger depth image (2x) is sampled, not averaged
    down = scale_depth(big, (32, 24))
    assert np.array_equal(down, small)
    assert scale_depth(small, (32, 24)) is small


def test_depth_of_another_aspect_is_refused():
    assert same_aspect((424, 240), (848, 480)) and same_aspect((320, 240), (640, 480))
    assert not same_aspect((848, 480), (1280, 720))
    with pytest.raises(DepthError, match=r"depth image 848x480 .* does not have the colour image's aspect ratio"):
        sensor_depth(np.ones((480, 848), np.float32), "32FC1", (1280, 720))


def test_intrinsics_unproject_as_depth_image_proc_does():
    K = Intrinsics(500.0, 480.0, 319.5, 239.5, 640, 480)
    u, v, z = np.array([0.0, 319.5, 600.0]), np.array([10.0, 239.5, 400.0]), np.array([2.0, 3.0, 0.5])
    pts = K.unproject(u, v, z)
    assert np.allclose(pts[:, 0], (u - 319.5) * z / 500.0, rtol=0, atol=1e-15)
    assert np.allclose(pts[:, 1], (v - 239.5) * z / 480.0, rtol=0, atol=1e-15)
    assert np.array_equal(pts[:, 2], z)
    assert np.allclose(K.project(pts), np.stack([u, v], 1), atol=1e-12)


def test_camera_info_K_scales_with_the_image_by_pixel_centres():
    K_full = [600.0, 0.0, 639.5, 0.0, 610.0, 359.5, 0.0, 0.0, 1.0]
    full = Intrinsics.from_K(K_full, (1280, 720))
    half = Intrinsics.from_K(K_full, (1280, 720), image_size=(640, 360))
    assert (half.fx, half.fy, half.width, half.height) == (300.0, 305.0, 640, 360)
    assert half.cx == pytest.approx(319.5) and half.cy == pytest.approx(179.5)
    # a 3D point lands at the same place in both images, pixel-centre convention x' = (x + 0.5) s - 0.5
    P = np.array([[0.3, -0.2, 2.0], [-1.0, 0.4, 5.0]])
    assert np.allclose(half.project(P), (full.project(P) + 0.5) * 0.5 - 0.5, atol=1e-12)
    assert full.scaled_to((1280, 720)) is full
    with pytest.raises(IntrinsicsError, match="another aspect ratio"):
        full.scaled_to((640, 480))


def test_camera_info_problems_are_named():
    with pytest.raises(IntrinsicsError, match="not calibrated"):
        Intrinsics.from_K([0.0] * 9, (640, 480))
    with pytest.raises(IntrinsicsError, match="has 4 numbers"):
        Intrinsics.from_K([1.0, 2.0, 3.0, 4.0], (640, 480))
    with pytest.raises(IntrinsicsError, match="not a pinhole camera matrix"):
        Intrinsics.from_K([500, 0, 320, 0, 500, 240, 1, 0, 1], (640, 480))
    with pytest.raises(IntrinsicsError, match="focal lengths must be positive"):
        Intrinsics.from_K([-500, 0, 320, 0, 500, 240, 0, 0, 1], (640, 480))
    with pytest.raises(IntrinsicsError, match="non-finite"):
        Intrinsics.from_K([np.nan, 0, 320, 0, 500, 240, 0, 0, 1], (640, 480))
    # a camera_info without a size (0x0) describes the colour image
    k = Intrinsics.from_K([500, 0, 320, 0, 500, 240, 0, 0, 1], (0, 0), image_size=(640, 480))
    assert k.size == (640, 480) and k.fx == 500.0


def test_intrinsics_parameter_and_precedence():
    p = Intrinsics.from_parameter((400, 410, 320, 240), (640, 480))
    assert (p.fx, p.fy, p.cx, p.cy, p.size) == (400.0, 410.0, 320.0, 240.0, (640, 480))
    with pytest.raises(IntrinsicsError, match="needs 4 numbers"):
        Intrinsics.from_parameter((400, 410, 320), (640, 480))
    info_K = [500, 0, 319.5, 0, 500, 239.5, 0, 0, 1]
    # the explicit parameter wins over the camera_info
    assert resolve_intrinsics((640, 480), parameter=(400, 410, 320, 240), camera_info_K=info_K).fx == 400.0
    assert resolve_intrinsics((640, 480), camera_info_K=info_K, camera_info_size=(640, 480)).fx == 500.0
    assert resolve_intrinsics((320, 240), camera_info_K=info_K, camera_info_size=(640, 480)).fx == 250.0
    # P (the rectified camera, as depth_image_proc and the markers use it) before K, unless all zero
    P = [520, 0, 330, 0, 0, 515, 250, 0, 0, 0, 1, 0]
    assert resolve_intrinsics((640, 480), camera_info_K=info_K, camera_info_P=P).cx == 330.0
    assert resolve_intrinsics((640, 480), camera_info_K=info_K, camera_info_P=[0.0] * 12).cx == 319.5
    assert Intrinsics.from_P(P, (640, 480), image_size=(320, 240)).fx == 260.0
    with pytest.raises(IntrinsicsError, match="P has 9 numbers"):
        Intrinsics.from_P(info_K, (640, 480))
    with pytest.raises(IntrinsicsError,
                       match=r"camera 'front' has no intrinsics: no camera_info .* camera.front.intrinsics"):
        resolve_intrinsics((640, 480), camera="front")


def test_missing_geometry_names_what_a_camera_lacks():
    assert missing_geometry("front", depth_topic="front/depth", has_camera_info=True) == []
    gaps = missing_geometry("side")
    assert len(gaps) == 2
    assert "no camera.side.depth_topic" in gaps[0] and "no camera.side.intrinsics" in gaps[1]
    only_intr = missing_geometry("side", depth_topic="side/depth")
    assert len(only_intr) == 1 and "intrinsics" in only_intr[0]
    assert missing_geometry("side", intrinsics=(1, 1, 0, 0)) == [missing_geometry("side")[0]]
    assert missing_geometry("side", vggt_heads=True) == []  # VGGT gives both
