"""Oriented boxes: quaternions, fitting around surface points, comparing boxes."""

import math

import numpy as np
import pytest

from vggts_ros.geometry.boxes import (OrientedBox, compare_boxes, fit_box, matrix_from_quaternion,
                                      min_area_rectangle, quaternion_from_matrix)


def rotation(rng):
    q = rng.normal(size=4)
    return matrix_from_quaternion(q / np.linalg.norm(q))


def rot_z(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def surface(box: OrientedBox, faces, n=40):
    """Points and outward normals on the given faces ((axis, sign) pairs) of ``box``, a grid of n x n each."""
    pts, nrm = [], []
    g = np.linspace(-0.5, 0.5, n)
    a, b = np.meshgrid(g, g)
    for axis, sign in faces:
        local = np.zeros((n * n, 3))
        others = [i for i in range(3) if i != axis]
        local[:, axis] = sign * 0.5 * box.size[axis]
        local[:, others[0]] = a.ravel() * box.size[others[0]]
        local[:, others[1]] = b.ravel() * box.size[others[1]]
        pts.append(box.center + local @ box.rotation.T)
        normal = np.zeros(3)
        normal[axis] = sign
        nrm.append(np.tile(box.rotation @ normal, (n * n, 1)))
    return np.concatenate(pts), np.concatenate(nrm)


def test_quaternion_round_trip_and_convention():
    rng = np.random.default_rng(0)
    for _ in range(50):
        R = rotation(rng)
        q = quaternion_from_matrix(R)
        assert q[3] >= 0 and np.linalg.norm(q) == pytest.approx(1.0)
        assert np.allclose(matrix_from_quaternion(q), R, atol=1e-12)
    # 90 degrees about z is (0, 0, sin 45, cos 45) in (x, y, z, w) order
    assert np.allclose(quaternion_from_matrix(rot_z(math.pi / 2)), [0, 0, math.sqrt(0.5), math.sqrt(0.5)])
    assert np.allclose(quaternion_from_matrix(np.eye(3)), [0, 0, 0, 1])
    # 180 degrees about x (w = 0 branch)
    assert np.allclose(np.abs(quaternion_from_matrix(np.diag([1.0, -1.0, -1.0]))), [1, 0, 0, 0])


def test_min_area_rectangle_of_a_rotated_rectangle_is_exact():
    rng = np.random.default_rng(2)
    d = np.array([math.cos(0.4), math.sin(0.4)])
    p = np.array([-d[1], d[0]])
    pts = rng.uniform(-0.5, 0.5, (500, 1)) * 3.0 * d + rng.uniform(-0.5, 0.5, (500, 1)) * 1.0 * p
    corners = np.array([[1.5, 0.5], [-1.5, 0.5], [-1.5, -0.5], [1.5, -0.5]]) @ np.stack([d, p])
    centre, direction, (long_side, short_side) = min_area_rectangle(np.concatenate([pts, corners]) + [2.0, -1.0])
    assert np.allclose(centre, [2.0, -1.0], atol=1e-9)
    assert long_side == pytest.approx(3.0) and short_side == pytest.approx(1.0)
    assert abs(direction @ d) == pytest.approx(1.0)


@pytest.mark.parametrize("yaw", [0.0, 0.3, 1.1])
def test_fit_box_from_three_visible_faces_is_exact(yaw):
    rng = np.random.default_rng(3)
    truth = OrientedBox(np.array([0.2, -0.1, 2.5]), np.array([0.5, 0.3, 0.12]), rotation(rng) @ rot_z(yaw))
    pts, normals = surface(truth, [(2, 1), (0, -1), (1, 1)])
    for kwargs in ({"normals": normals}, {"up": truth.rotation[:, 2]}):
        box = fit_box(pts, **kwargs)
        c = compare_boxes(box, truth)
        assert c["center_error"] < 1e-9 and c["size_error"] < 1e-9 and c["angle_deg"] < 1e-5, kwargs
        assert np.linalg.det(box.rotation) == pytest.approx(1.0)
        assert box.size[0] >= box.size[1]  # x is the longer side across z


def test_square_footprint_gets_its_true_axes():
    # A square footprint has an isotropic covariance (no principal axes across it); the
    # normals and the minimum-area rectangle still give the box's own axes.
    truth = OrientedBox(np.array([0.0, 0.0, 3.0]), np.array([0.3, 0.3, 0.5]), rot_z(0.6))
    pts, normals = surface(truth, [(2, 1), (0, 1), (1, -1), (0, -1), (1, 1)])
    for kwargs in ({"normals": normals}, {"up": [0.0, 0.0, 1.0]}):
        c = compare_boxes(fit_box(pts, **kwargs), truth)
        assert c["size_error"] < 1e-9 and c["angle_deg"] < 1e-5, kwargs


def test_noisy_edges_do_not_tilt_the_axes():
    rng = np.random.default_rng(4)
    truth = OrientedBox(np.array([0.0, 0.0, 3.0]), np.array([0.4, 0.3, 0.2]), rotation(rng))
    pts, normals = surface(truth, [(2, 1), (0, 1), (1, 1)])
    # a fifth of the normals blended across edges (as a depth image gives at a crease)
    k = len(normals) // 5
    normals[:k] = normals[:k] + rng.normal(0, 0.7, (k, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    box = fit_box(pts, normals=normals)
    assert compare_boxes(box, truth)["angle_deg"] < 0.5


def test_trim_ignores_a_few_stray_points():
    rng = np.random.default_rng(5)
    truth = OrientedBox(np.zeros(3), np.array([1.0, 0.6, 0.4]), np.eye(3))
    pts = rng.uniform(-0.5, 0.5, (5000, 3)) * truth.size
    stray = np.concatenate([pts, [[3.0, 0, 0], [0, -2.0, 0], [0, 0, 4.0]]])
    assert compare_boxes(fit_box(stray, up=[0, 0, 1]), truth)["size_error"] > 1.0
    assert compare_boxes(fit_box(stray, up=[0, 0, 1], trim=0.005), truth)["size_error"] < 0.02


def test_compare_boxes_ignores_axis_labels():
    truth = OrientedBox(np.array([1.0, 2.0, 3.0]), np.array([0.5, 0.3, 0.1]), np.eye(3))
    relabelled = OrientedBox(truth.center.copy(), np.array([0.3, 0.1, 0.5]),
                             np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    c = compare_boxes(relabelled, truth)
    assert c["size_error"] == 0.0 and c["center_error"] == 0.0 and c["angle_deg"] == pytest.approx(0.0, abs=1e-6)
    bigger = OrientedBox(truth.center + [0.0, 0.0, 0.1], truth.size * [1.2, 1.0, 1.0], truth.rotation)
    c = compare_boxes(bigger, truth)
    assert c["size_error"] == pytest.approx(0.2) and c["center_error"] == pytest.approx(0.1)


def test_box_transform_and_corners():
    rng = np.random.default_rng(6)
    box = OrientedBox(np.array([0.1, 0.2, 0.3]), np.array([1.0, 2.0, 3.0]), rotation(rng))
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = rotation(rng), [1.0, -2.0, 0.5]
    moved = box.transformed(T)
    assert np.allclose(moved.corners(), box.corners() @ T[:3, :3].T + T[:3, 3], atol=1e-12)
    assert np.allclose(np.ptp((box.corners() - box.center) @ box.rotation, axis=0), box.size)


def test_fit_box_refuses_nothing():
    with pytest.raises(ValueError, match="at least one point"):
        fit_box(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="all finite"):
        fit_box(np.array([[0.0, np.nan, 1.0]] * 5))
    with pytest.raises(ValueError, match="non-zero 3-vector"):
        fit_box(np.ones((5, 3)), up=[0, 0, 0])
