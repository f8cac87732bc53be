"""Marker contents for RViz/Foxglove: points on the viewing rays land on their pixels."""

import numpy as np
import pytest

from vggts_ros.markers import (
    ObjectPointsView, camera_info_fields, nominal_intrinsics, pixels_to_rays, projected_point_markers,
    rays_to_pixels,
)
from vggts_ros.scenes import synthetic_scene
from vggts_ros.visualize import color_of


def test_markers_project_back_onto_the_pixels():
    scene = synthetic_scene(0)
    K = scene.cameras["exo1"].K  # a real camera matrix
    rng = np.random.default_rng(0)
    xy = rng.uniform([0, 0], [639, 359], size=(5, 2))
    vis = np.array([1, 1, 0, 1, 0.2])
    specs = projected_point_markers([ObjectPointsView(3, xy, vis, "mug")], K, depth=2.0)
    points, text = specs
    assert (points.kind, points.id, text.kind, text.id, text.text) == ("points", 6, "text", 7, "mug")
    assert np.allclose(rays_to_pixels(points.positions, K), xy[vis >= 0.5])
    assert np.allclose(points.positions[:, 2], 2.0)
    assert points.color[:3] == pytest.approx(tuple(c / 255 for c in color_of(3)))
    assert text.positions[0, 1] < points.positions[:, 1].min()  # label above the points


def test_invisible_objects_have_no_markers_and_labels_default():
    K = nominal_intrinsics(640, 480)
    specs = projected_point_markers([ObjectPointsView(1, [[10, 10]], [0.0]),
                                     ObjectPointsView(2, [[100, 50], [120, 60]], [1, 1])], K)
    assert [s.id for s in specs] == [4, 5] and specs[1].text == "object 2"
    with pytest.raises(ValueError, match="2 points but 1 visibilities"):
        projected_point_markers([ObjectPointsView(1, [[1, 2], [3, 4]], [1])], K)


def test_nominal_camera_info():
    K = nominal_intrinsics(640, 360, hfov_deg=90)
    assert K[0, 0] == pytest.approx(320) and K[0, 2] == pytest.approx(319.5) and K[1, 2] == pytest.approx(179.5)
    info = camera_info_fields(640, 360, K)
    assert info["k"] == K.reshape(-1).tolist() and info["p"][3] == 0 and len(info["d"]) == 5
    assert np.allclose(pixels_to_rays([[319.5, 179.5]], K), [[0, 0, 1]])
    with pytest.raises(ValueError, match="positive focal"):
        camera_info_fields(10, 10, np.zeros((3, 3)))
