"""Cameras from VGGT's pose encoding, unprojection, and the way back from network pixels to
a camera frame's pixels (vggts_ros.geometry.camera), on synthetic pinhole cameras with
exactly known intrinsics, poses and 3D points, in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vggts_ros import transforms
from vggts_ros.geometry import camera as C

F64 = torch.float64


def rodrigues(axis, angle) -> np.ndarray:
    a = np.asarray(axis, np.float64)
    a = a / np.linalg.norm(a)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


def quaternion_xyzw(axis, angle) -> np.ndarray:
    a = np.asarray(axis, np.float64)
    a = a / np.linalg.norm(a)
    return np.concatenate([a * math.sin(angle / 2), [math.cos(angle / 2)]])


def pinhole(fx, fy, cx, cy) -> np.ndarray:
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])


def project(K: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Camera points [N, 3] -> pixels [N, 2]."""
    p = X @ K.T
    return p[:, :2] / p[:, 2:]


def encode(R, t, K, hw) -> np.ndarray:
    """A camera as VGGT's 9 numbers, written from the definitions (not the code under test)."""
    h, w = hw
    fov_h = 2 * math.atan((h / 2) / K[1, 1])
    fov_w = 2 * math.atan((w / 2) / K[0, 0])
    return np.concatenate([t, quaternion_xyzw(*R), [fov_h, fov_w]])


CAMERAS = [  # ((axis, angle), t) camera-from-world
    (([0.2, -1.0, 0.3], 0.7), np.array([0.3, -0.1, 2.0])),
    (([1.0, 0.5, 0.0], -1.9), np.array([-1.0, 0.4, 0.5])),
    (([0.0, 0.0, 1.0], 0.0), np.zeros(3)),
]


def test_pose_encoding_to_cameras_on_known_cameras():
    hw = (126, 182)
    Ks = [pinhole(150.0, 140.0, 91.0, 63.0), pinhole(90.0, 95.0, 91.0, 63.0), pinhole(300.0, 300.0, 91.0, 63.0)]
    enc = np.stack([encode(rot, t, K, hw) for (rot, t), K in zip(CAMERAS, Ks)])
    E, K = C.pose_encoding_to_cameras(torch.from_numpy(enc), hw)
    assert E.dtype == F64 and E.shape == (3, 3, 4) and K.shape == (3, 3, 3)
    for i, ((rot, t), K_true) in enumerate(zip(CAMERAS, Ks)):
        np.testing.assert_allclose(E[i, :, :3].numpy(), rodrigues(*rot), rtol=0, atol=1e-14)
        np.testing.assert_allclose(E[i, :, 3].numpy(), t, rtol=0, atol=0)
        # principal point at (W/2, H/2) of the network input; focal lengths from the fields of view
        np.testing.assert_allclose(K[i].numpy(), K_true, rtol=1e-13, atol=1e-12)
    # any nonzero multiple of a quaternion, its negative included, is the same rotation
    scaled = enc.copy()
    scaled[:, 3:7] *= np.array([[-2.5], [0.3], [7.0]])
    E2, _ = C.pose_encoding_to_cameras(torch.from_numpy(scaled), hw)
    np.testing.assert_allclose(E2.numpy(), E.numpy(), rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match=r"\[\.\.\., 9\]"):
        C.pose_encoding_to_cameras(torch.zeros(3, 8, dtype=F64), hw)


def test_unprojection_inverts_projection():
    """Depth maps of known cameras: every pixel's camera point reprojects onto that pixel,
    and world points go back to the camera points through the extrinsics."""
    gen = torch.Generator().manual_seed(3)
    h, w = 30, 40
    depth = 0.5 + 4 * torch.rand(2, h, w, generator=gen, dtype=F64)
    Ks = np.stack([pinhole(35.0, 33.0, 20.0, 15.0), pinhole(50.0, 50.0, 19.5, 14.5)])
    E = np.stack([np.concatenate([rodrigues(*rot), t[:, None]], axis=1) for rot, t in CAMERAS[:2]])
    cam = C.depth_to_camera_points(depth, torch.from_numpy(Ks))
    world = C.unproject_depth(depth, torch.from_numpy(E), torch.from_numpy(Ks))
    v, u = np.mgrid[0:h, 0:w]
    for i in range(2):
        pts = cam[i].reshape(-1, 3).numpy()
        np.testing.assert_allclose(pts[:, 2], depth[i].reshape(-1).numpy(), rtol=0, atol=0)
        np.testing.assert_allclose(project(Ks[i], pts), np.stack([u.ravel(), v.ravel()], 1), rtol=0, atol=1e-11)
        back = world[i].reshape(-1, 3).numpy() @ E[i, :, :3].T + E[i, :, 3]
        np.testing.assert_allclose(back, pts, rtol=0, atol=1e-13)


def test_relative_pose_maps_reference_camera_points():
    X = np.random.default_rng(0).normal(size=(20, 3)) + [0, 0, 5]
    E = [np.concatenate([rodrigues(*rot), t[:, None]], axis=1) for rot, t in CAMERAS]
    T = C.relative_pose(torch.from_numpy(np.stack(E)), torch.from_numpy(E[0])).numpy()
    in_ref = X @ E[0][:, :3].T + E[0][:, 3]
    for i in range(3):
        in_cam = X @ E[i][:, :3].T + E[i][:, 3]
        np.testing.assert_allclose(in_ref @ T[i, :3, :3].T + T[i, :3, 3], in_cam, rtol=0, atol=1e-13)
    np.testing.assert_allclose(T[0], np.eye(4), rtol=0, atol=1e-15)
    inv = C.invert_pose(torch.from_numpy(T[1])).numpy()
    np.testing.assert_allclose(inv @ T[1], np.eye(4), rtol=0, atol=1e-15)


# ---------------------------------------------------------------------------------------
# Network view -> frame
# ---------------------------------------------------------------------------------------
def _views():
    frame = (180, 320)
    mask = np.zeros(frame, np.uint8)
    mask[60:120, 200:260] = 1
    square = transforms.square_around_mask_mean(mask, 126)
    zoom = transforms.window_around_mask(square.mask(mask), 2.0)
    return {
        "resize": transforms.resize((200, 200), 126),
        "letterbox": transforms.letterbox(frame, 126),
        "letterbox_tall": transforms.letterbox((320, 180), 126),
        "crop": transforms.square_around_points(frame, [[150, 50], [190, 110]], 90, 126),
        "square": square,
        "chain": transforms.Chain(square, zoom),
    }


VIEWS = _views()


@pytest.mark.parametrize("name", sorted(VIEWS))
def test_known_points_project_through_the_view(name):
    """A pinhole frame camera K seen through a view is the camera A K of the view. Known
    3D points project to view pixels with A K; intrinsics_to_frame gives K back, and the
    view pixels mapped by A^-1 are the points' frame pixels."""
    view = VIEWS[name]
    H, W = view.frame_hw
    K_frame = pinhole(0.9 * W, 0.85 * W, W / 2 + 3.5, H / 2 - 2.25)
    X = np.random.default_rng(1).uniform([-1, -0.6, 2], [1, 0.6, 6], size=(50, 3))
    A = C.view_affine(view)
    K_view = A @ K_frame
    p_view = project(K_view, X)
    K_back = C.intrinsics_to_frame(torch.from_numpy(K_view), view)
    np.testing.assert_allclose(K_back, K_frame, rtol=1e-14, atol=1e-12)
    p_frame = project(K_back, X)
    np.testing.assert_allclose(p_frame, project(K_frame, X), rtol=0, atol=1e-10)
    back = np.linalg.solve(A, np.concatenate([p_view, np.ones((50, 1))], 1).T).T[:, :2]
    np.testing.assert_allclose(back, p_frame, rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    "view,scale",
    [
        (transforms.Window((300, 400), (100, 20, 352, 272), (126, 126)), 0.5),  # crop window, 2x2 blocks
        (transforms.letterbox((224, 504), 126), 0.25),  # letterbox, 4x4 blocks, 56 content rows
        (transforms.resize((252, 252), 126), 0.5),
    ],
)
def test_affine_is_where_the_image_resampling_puts_pixels(view, scale):
    """On integer-ratio views the area resampling averages whole pixel blocks, so a linear
    ramp image comes out exactly as the ramp at ``A^-1`` of each view pixel: the affine
    is the one the network's input images are made with (the points' index scaling
    ``u' = s u`` would be off by ``(1 - s) / 2`` px)."""
    H, W = view.frame_hw
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    ramp_u, ramp_v = view.image(u), view.image(v)
    ch, cw = C.content_hw(view)
    A = C.view_affine(view)
    assert A[0, 0] == A[1, 1] == scale
    vv, uu = np.mgrid[0:ch, 0:cw].astype(np.float64)
    frame_u = (uu - A[0, 2]) / A[0, 0]
    frame_v = (vv - A[1, 2]) / A[1, 1]
    np.testing.assert_allclose(ramp_u[:ch, :cw], frame_u, rtol=0, atol=1e-9)
    np.testing.assert_allclose(ramp_v[:ch, :cw], frame_v, rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", sorted(VIEWS))
def test_depth_resampling_is_exact_on_affine_maps_and_nan_outside(name):
    """A view map that is affine in view pixels is reproduced exactly at every frame pixel
    whose view position is inside the content; frame pixels outside the view are NaN and
    the letterbox padding is never read."""
    view = VIEWS[name]
    h, w = view.view_hw
    ch, cw = C.content_hw(view)
    vv, uu = torch.meshgrid(torch.arange(h, dtype=F64), torch.arange(w, dtype=F64), indexing="ij")
    depth = 2.0 + 0.013 * uu - 0.007 * vv
    depth[ch:, :] = 1e9  # padding (if any) must not leak into the frame
    depth[:, cw:] = 1e9
    out = C.resample_to_frame(depth, view)
    H, W = view.frame_hw
    assert out.shape == (H, W) and out.dtype == F64
    A = C.view_affine(view)
    fu = A[0, 0] * np.arange(W) + A[0, 2]
    fv = A[1, 1] * np.arange(H) + A[1, 2]
    inside = ((fv >= 0) & (fv <= ch - 1))[:, None] & ((fu >= 0) & (fu <= cw - 1))[None, :]
    expected = 2.0 + 0.013 * fu[None, :] - 0.007 * fv[:, None]
    got = out.numpy()
    np.testing.assert_allclose(got[inside], np.broadcast_to(expected, (H, W))[inside], rtol=0, atol=1e-12)
    shown = ~np.isnan(got)
    if isinstance(view, transforms.Letterbox) or (isinstance(view, transforms.Window) and view.whole_frame):
        assert shown.all()
    else:
        x1, y1, x2, y2 = (view.outer if isinstance(view, transforms.Chain) else view).box
        if isinstance(view, transforms.Chain):  # the zoom's box in frame pixels
            zx1, zy1, zx2, zy2 = view.inner.box
            sx, sy = view.outer.scale
            x1, x2 = x1 + zx1 / sx, x1 + zx2 / sx
            y1, y2 = y1 + zy1 / sy, y1 + zy2 / sy
        ys, xs = np.nonzero(shown)
        assert xs.min() >= math.floor(x1) and xs.max() <= math.ceil(x2) - 1
        assert ys.min() >= math.floor(y1) and ys.max() <= math.ceil(y2) - 1
        assert (~shown).any()
    assert np.nanmax(got) < 10.0
    nearest = C.resample_to_frame(depth, view, mode="nearest").numpy()
    assert np.array_equal(np.isnan(nearest), ~shown)
    assert np.nanmax(np.abs(nearest - got)) <= 0.5 * (0.013 + 0.007) + 1e-12


def test_plane_seen_through_a_letterbox_comes_back_in_frame_pixels():
    """End to end on a tilted plane: the network view's exact depth and intrinsics, mapped
    to the frame, unproject onto the plane; the frame depth matches the frame's own
    rendering up to bilinear interpolation of a smooth map."""
    view = transforms.letterbox((360, 640), 126)
    H, W = view.frame_hw
    K_frame = pinhole(500.0, 500.0, W / 2, H / 2)
    n, d = np.array([0.1, -0.2, 1.0]), 4.0  # plane n.X = d

    def render(K, hw):
        vv, uu = np.mgrid[0 : hw[0], 0 : hw[1]].astype(np.float64)
        rays = np.stack([uu, vv, np.ones_like(uu)], -1) @ np.linalg.inv(K).T
        return d / (rays @ n)

    A = C.view_affine(view)
    depth_view = render(A @ K_frame, view.view_hw)
    depth_frame = C.resample_to_frame(torch.from_numpy(depth_view), view).numpy()
    K_back = C.intrinsics_to_frame(A @ K_frame, view)
    np.testing.assert_allclose(K_back, K_frame, rtol=1e-14)
    truth = render(K_frame, (H, W))
    rel = np.abs(depth_frame - truth) / truth
    # interior: bilinear error of a smooth map; the outermost frame pixels (within half a
    # view pixel of the edge, about 2.5 frame px here) take the edge sample's value
    assert rel[3:-3, 3:-3].max() < 2e-5, rel[3:-3, 3:-3].max()
    assert rel.max() < 2e-3, rel.max()
    pts = C.depth_to_camera_points(torch.from_numpy(depth_frame), torch.from_numpy(K_back)).numpy()
    off_plane = np.abs(pts @ n - d) / d  # the frame pixels' points lie on the plane
    assert off_plane[3:-3, 3:-3].max() < 5e-5, off_plane[3:-3, 3:-3].max()


def test_view_geometries_agree_on_a_shared_point():
    """Two cameras of one pass, given as pose encodings, depth maps and their views: a
    3D point seen by both comes out at the same place in the reference camera's frame."""
    hw_net = (126, 126)
    views = [transforms.resize((200, 200), 126), transforms.letterbox((180, 320), 126)]
    Ks_frame = [pinhole(180.0, 180.0, 100.0, 100.0), pinhole(260.0, 260.0, 160.0, 90.0)]
    rot_t = [(([0, 1, 0], 0.0), np.zeros(3)), (([0.1, 1, 0], 0.4), np.array([-0.8, 0.05, 0.3]))]
    X = np.array([[0.2, -0.1, 3.0]])
    encs, depths = [], []
    for view, K_f, (rot, t) in zip(views, Ks_frame, rot_t):
        K_net = C.view_affine(view) @ K_f
        R = rodrigues(*rot)
        enc = encode(rot, t, K_net, hw_net)
        # the head's intrinsics have the principal point at the centre of the network input
        centred = K_net.copy()
        centred[:2, 2] = [hw_net[1] / 2, hw_net[0] / 2]
        encs.append(enc)
        # a fronto-parallel wall through X in each camera: depth = X's depth everywhere
        z = (X @ R.T + t)[0, 2]
        depths.append(np.full(hw_net, z))
        assert np.allclose(C.intrinsics_from_fov(torch.from_numpy(enc[7:]), hw_net).numpy(), centred)
    geo = C.view_geometries(torch.tensor(np.stack(encs)), torch.tensor(np.stack(depths)),
                            torch.ones(2, *hw_net, dtype=F64), views)
    assert [g.depth.shape for g in geo] == [(200, 200), (180, 320)]
    assert all(g.scale == "relative" for g in geo)
    np.testing.assert_allclose(geo[0].T_cam_from_ref, np.eye(4), atol=1e-15)
    np.testing.assert_allclose(geo[1].T_ref_from_cam @ geo[1].T_cam_from_ref, np.eye(4), atol=1e-15)
    seen = []
    for g in geo:
        x_cam = (X @ g.extrinsic[:, :3].T + g.extrinsic[:, 3])[0]
        u, v = project(g.K, x_cam[None])[0]
        ui, vi = int(round(u)), int(round(v))
        ref = g.reference_points()[vi, ui]
        ray_x = (ui - g.K[0, 2]) / g.K[0, 0] * x_cam[2]
        ray_y = (vi - g.K[1, 2]) / g.K[1, 1] * x_cam[2]
        # the pixel's point differs from X only by the pixel rounding along the wall
        expect = np.linalg.solve(g.T_cam_from_ref[:3, :3], np.array([ray_x, ray_y, x_cam[2]]) - g.T_cam_from_ref[:3, 3])
        np.testing.assert_allclose(ref, expect, atol=1e-12)
        seen.append(ref)
    assert np.linalg.norm(seen[0] - seen[1]) < 0.05
    with pytest.raises(ValueError, match="views"):
        C.view_geometries(torch.zeros(3, 9), torch.ones(2, 126, 126), torch.ones(2, 126, 126), views)
