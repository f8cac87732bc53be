"""Per-camera mask propagation (vggts_ros.propagation): it follows known motions within
a tolerance derived from its accuracy, says when it has lost an object and why, and
catches up late cross-view results."""


import cv2
import numpy as np
import pytest

from vggts_ros.metrics import iou
from vggts_ros.propagation import (CameraPropagator, DenseCameraPropagator, PropagationConfig, make_propagator,
                                   warp_mask)
from vggts_ros.scenes import floor_texture, plain_texture, random_texture
from vggts_ros.sequences import load_sequence

W, H = 640, 480
SIDE = 120  # the object: a textured square this many pixels wide


def _affine(angle_deg: float, tx: float, ty: float, scale: float = 1.0, center=(SIDE / 2, SIDE / 2)) -> np.ndarray:
    """3x3: object pixel -> frame pixel, rotation and scale about the object's centre, then
    the centre moved to (tx, ty)."""
    A = cv2.getRotationMatrix2D(center, angle_deg, scale)
    A[:, 2] += np.array([tx, ty]) - np.array(center)
    return np.vstack([A, [0.0, 0.0, 1.0]])


class Stage:
    """A textured background and textured square objects posed by known transforms; the
    ground-truth mask of each object is its square through its transform, minus what
    objects drawn after it cover."""

    def __init__(self, seed: int = 0, plain: bool = False, noise: float = 1.5):
        rng = np.random.default_rng(seed)
        self.background = cv2.resize(floor_texture(rng, 512), (W, H), interpolation=cv2.INTER_LINEAR)
        self.textures = [plain_texture(rng, (SIDE, SIDE)) if plain else random_texture(rng, (SIDE, SIDE), 60, 8)
                         for _ in range(2)]
        self.noise = noise
        self.rng = np.random.default_rng([seed, 1])
        self.square = np.ones((SIDE, SIDE), bool)

    def frame(self, poses):
        """``poses``: a 3x3 per object (None = not drawn), drawn in order (later in front)."""
        img = self.background.astype(np.float32).copy()
        masks = []
        for tex, P in zip(self.textures, poses):
            if P is None:
                masks.append(np.zeros((H, W), bool))
                continue
            warped = cv2.warpAffine(tex, P[:2], (W, H), flags=cv2.INTER_LINEAR).astype(np.float32)
            m = warp_mask(self.square, P, (H, W))
            img[m] = warped[m]
            for prev in masks:
                prev &= ~m
            masks.append(m)
        img += self.rng.normal(0.0, self.noise, img.shape)
        return np.clip(img, 0, 255).astype(np.uint8), masks


def _corner_error(fit: np.ndarray, truth: np.ndarray, box) -> float:
    x0, y0, x1, y1 = box
    c = np.float64([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])[None]
    return float(np.abs(cv2.perspectiveTransform(c, fit)[0] - cv2.perspectiveTransform(c, truth)[0]).max())


def _iou_floor(side: float, err: float) -> float:
    """Lowest IoU of a side x side square against itself shifted by ``err`` pixels along
    both axes (the worst case of a corner error ``err``)."""
    inter = (side - err) ** 2
    return inter / (2 * side * side - inter)


def test_follows_a_translated_and_rotated_textured_box():
    # 30 frames, 3 px/frame right, 1.5 px/frame down, 1 degree/frame. The tolerance on
    # the fitted transform, at the object's corners, after k steps:
    # * Lucas-Kanade takes each window's motion as a translation; the rotation moves the
    #   window's edges (7 px from its centre) 7 * sin(1 deg) = 0.12 px against its centre,
    #   and the estimate of the centre's motion is off by at most half that: 0.061 px per
    #   step, the same way for every point (a bias, so it adds up linearly over k steps);
    # * the noise of one fit (sensor noise 1.5 grey levels, ~50 points, the corners
    #   outside the points' spread): within 0.75 px (seen: up to 0.7 px).
    # So: error(k) <= 0.75 + 0.061 k px. The mask is the anchor warped once, so its IoU is
    # at least that of the square shifted by error(k) plus half a pixel of rasterisation
    # on each side.
    stage = Stage(0)
    pose = lambda k: _affine(1.0 * k, 200 + 3.0 * k, 180 + 1.5 * k)
    img0, (gt0, _) = stage.frame([pose(0), None])
    pts0 = np.float32([[230, 150], [200, 180], [170, 210]])  # target points of the "cross-view result"
    prop = CameraPropagator(PropagationConfig(max_age=None))
    first = prop.start(1, img0, 0.0, gt0, pts0)
    assert first.good and first.steps == 0 and first.path == "cross_view" and np.array_equal(first.mask, gt0)
    box = (0, 0, SIDE, SIDE)
    worst = 0.0
    for k in range(1, 31):
        img, (gt, _) = stage.frame([pose(k), None])
        r = prop.update(img, k / 10)[1]
        truth = pose(k) @ np.linalg.inv(pose(0))  # anchor frame -> frame k
        assert r.good and r.reason == "" and r.steps == k
        assert r.age == pytest.approx(k / 10) and r.path.startswith("propagated(age=")
        tol = 0.75 + 0.061 * k
        err = _corner_error(r.transform @ pose(0), truth @ pose(0), box)
        worst = max(worst, err / tol)
        assert err <= tol, (k, err, tol)
        moved = cv2.perspectiveTransform(pts0[None].astype(np.float64), truth)[0]
        assert np.abs(r.points - moved).max() <= tol and r.visible.all()
        assert iou(gt, r.mask) >= _iou_floor(SIDE, tol + 1.0), (k, iou(gt, r.mask))
        assert r.kept >= 0.5
    assert worst > 0.1  # the comparison is not vacuous


def test_a_late_result_catches_up_and_a_future_one_waits():
    stage = Stage(1)
    pose = lambda k: _affine(0.5 * k, 250 + 4.0 * k, 200 - 1.0 * k)
    frames = [stage.frame([pose(k), None]) for k in range(12)]
    prop = CameraPropagator(PropagationConfig(max_age=None))
    for k in range(11):
        assert prop.update(frames[k][0], k / 10) == {}  # nothing tracked yet
    # a result computed on frame 2 arrives while the camera is at frame 10: it is carried
    # to frame 10 at once, through the camera's frames 3..10 (its recent history)
    r = prop.start(7, frames[2][0], 0.2, frames[2][1][0])
    assert r.stamp == pytest.approx(1.0) and r.age == pytest.approx(0.8) and r.good
    truth = pose(10) @ np.linalg.inv(pose(2))
    assert _corner_error(r.transform @ pose(2), truth @ pose(2), (0, 0, SIDE, SIDE)) <= 1.0
    assert iou(frames[10][1][0], r.mask) >= _iou_floor(SIDE, 2.0)
    # a result on frame 11, which the camera has not delivered yet, waits for it
    waiting = prop.start(8, frames[11][0], 1.1, frames[11][1][0])
    assert waiting.steps == 0 and waiting.stamp == pytest.approx(1.1)
    out = prop.update(frames[11][0], 1.1)
    assert out[8].steps == 0 and np.array_equal(out[8].mask, frames[11][1][0])
    assert out[7].steps == 2 and out[7].good


def test_object_leaving_the_view_is_not_good():
    # It slides out to the right at 15 px/frame. While it is whole in the image the track
    # is good; once less than a quarter of it is inside, it is not, and says why.
    stage = Stage(2)
    pose = lambda k: _affine(0.0, 420 + 15.0 * k, 240)
    img0, (gt0, _) = stage.frame([pose(0), None])
    prop = CameraPropagator(PropagationConfig(max_age=None))
    prop.start(1, img0, 0.0, gt0)
    seen_bad = False
    for k in range(1, 22):
        img, (gt, _) = stage.frame([pose(k), None])
        r = prop.update(img, k / 10)[1]
        inside = gt.sum() / SIDE ** 2
        if inside == 1.0:
            assert r.good, (k, r.reason)
        if inside < 0.2:
            assert not r.good, k
            assert "left the image" in r.reason or "points kept" in r.reason, r.reason
            seen_bad = True
    assert seen_bad


def test_textureless_object_is_not_good_from_the_start():
    stage = Stage(3, plain=True, noise=0.0)
    img0, (gt0, _) = stage.frame([_affine(0, 300, 240), None])
    prop = CameraPropagator()
    r = prop.start(1, img0, 0.0, gt0)
    assert not r.good and "too few trackable points" in r.reason and "textureless" in r.reason
    r = prop.update(stage.frame([_affine(0, 303, 240), None])[0], 0.1)[1]
    assert not r.good and "too few trackable points" in r.reason


def test_empty_result_stays_empty_and_good():
    # the cross-view step did not find the object: nothing to move and nothing lost
    stage = Stage(4)
    img0, _ = stage.frame([_affine(0, 300, 240), None])
    prop = CameraPropagator(PropagationConfig(max_age=0.25))
    r = prop.start(1, img0, 0.0, np.zeros((H, W), bool))
    assert r.good and not r.mask.any()
    r = prop.update(stage.frame([_affine(0, 305, 240), None])[0], 0.2)[1]
    assert r.good and not r.mask.any()
    r = prop.update(stage.frame([_affine(0, 310, 240), None])[0], 0.3)[1]
    assert not r.good and "deadline" in r.reason


def test_occlusion_by_another_tracked_object():
    # Object 2 slides over object 1 from the left (drawn in front) until it covers it
    # whole. The overlap goes to object 2 (its points there are tracked, object 1's were
    # lost there); once its points are gone under object 2 it is predicted behind it:
    # good, "occluded by" object 2, nothing of it in sight.
    stage = Stage(5)
    p1 = _affine(0.0, 360, 240)
    p2 = lambda k: _affine(0.0, 150 + 12.0 * k, 242)
    img0, (gt1, gt2) = stage.frame([p1, p2(0)])
    prop = CameraPropagator(PropagationConfig(max_age=None))
    prop.start(1, img0, 0.0, gt1)
    prop.start(2, img0, 0.0, gt2)
    partly = []
    for k in range(1, 19):
        img, (gt1, gt2) = stage.frame([p1, p2(k)])
        out = prop.update(img, k / 10)
        assert out[2].good and iou(gt2, out[2].mask) >= _iou_floor(SIDE, 2.0), k
        covered = 1 - gt1.sum() / SIDE ** 2
        if 0.25 <= covered <= 0.75 and out[1].good:
            partly.append(iou(gt1, out[1].mask))
            assert not (out[1].mask & out[2].mask).any()  # the overlap was given to object 2
        if covered >= 0.9:
            assert out[1].good and out[1].occluded_by == 2 and out[1].kept == 0.0, (k, out[1].reason)
            assert out[1].hidden >= 0.9 and not (out[1].mask & out[2].mask).any(), k
    assert partly and min(partly) >= 0.8, partly


def test_deadline_and_shrinking_fit():
    stage = Stage(6)
    img0, (gt0, _) = stage.frame([_affine(0, 320, 240), None])
    prop = CameraPropagator(PropagationConfig(max_age=0.5))
    prop.start(1, img0, 0.0, gt0)
    for k in range(1, 8):
        r = prop.update(stage.frame([_affine(0, 320 + k, 240), None])[0], k / 10)[1]
        assert r.good == (k <= 5), (k, r.reason)
    assert "over the deadline 0.50 s" in r.reason
    # shrinking to a third of its size in 8 frames: beyond max_scale_change (x2.5 area)
    prop = CameraPropagator(PropagationConfig(max_age=None))
    prop.start(1, img0, 0.0, gt0)
    reasons = []
    for k in range(1, 9):
        r = prop.update(stage.frame([_affine(0, 320, 240, scale=1 - 0.66 * k / 8), None])[0], k / 10)[1]
        reasons.append(r.reason)
    assert reasons[0] == "" and any("degenerate fit" in x or "points kept" in x for x in reasons[-3:]), reasons


def test_bad_input_is_refused_and_changes_nothing():
    stage = Stage(7)
    img0, (gt0, _) = stage.frame([_affine(0, 320, 240), None])
    prop = CameraPropagator()
    prop.start(1, img0, 0.0, gt0)
    prop.update(img0, 0.0)
    with pytest.raises(ValueError, match="does not match its frame"):
        prop.start(2, img0, 0.0, gt0[:100])
    with pytest.raises(ValueError, match="older than the previous frame"):
        prop.update(img0, -0.1)
    with pytest.raises(ValueError, match="this camera's frames are 640x480"):
        prop.update(img0[:240, :320], 0.1)
    with pytest.raises(ValueError, match="HxW or HxWx3"):
        prop.update(np.zeros((4, 4, 2), np.uint8), 0.1)
    assert prop.keys == [1] and prop.stamp == 0.0
    for bad, words in ((dict(method="sift"), "method"), (dict(window=4), "odd"), (dict(model="spline"), "model"),
                       (dict(max_age=0), "max_age"), (dict(min_kept=1.5), "fractions"),
                       (dict(occluded=0.0), "occluded and behind"), (dict(behind=1.5), "occluded and behind"),
                       (dict(reanchor=-1.0), "reanchor")):
        with pytest.raises(ValueError, match=words):
            PropagationConfig(**bad)
    prop.drop(1)
    assert prop.keys == [] and prop.current(1) is None


def test_follows_the_moving_sequences():
    # On the bundled moving scenes (walking ego camera, panning exo1, still exo2) boxes 1
    # and 2 never leave the view nor hide: after 1 s of propagation from the true mask
    # they are still found (IoU >= 0.9) in every camera, with one propagator per camera.
    seq = load_sequence("moving:0/1.1s")
    for cam in seq.cameras:
        img, masks = seq.view(0, cam)
        prop = make_propagator()
        for oid, m in masks.items():
            prop.start(oid, img, 0.0, m)
        for i in range(1, len(seq)):
            img, gt = seq.view(i, cam)
            out = prop.update(img, seq.stamp(i))
        for oid in (1, 2):
            assert out[oid].good and iou(gt[oid], out[oid].mask) >= 0.9, (cam, oid, iou(gt[oid], out[oid].mask))


def test_dense_alternative_has_the_same_interface():
    stage = Stage(8)
    pose = lambda k: _affine(0.0, 250 + 3.0 * k, 240)
    img0, (gt0, _) = stage.frame([pose(0), None])
    prop = make_propagator(PropagationConfig(method="dense", max_age=None))
    assert isinstance(prop, DenseCameraPropagator)
    prop.start(1, img0, 0.0, gt0, np.float32([[250, 240]]))
    for k in range(1, 6):
        img, (gt, _) = stage.frame([pose(k), None])
        r = prop.update(img, k / 10)[1]
    assert r.good and iou(gt, r.mask) > 0.8 and abs(r.points[0, 0] - 265) < 3.0


def test_a_box_passing_behind_another_is_found_again():
    # Object 1 slides right at 8 px/frame behind a static textured panel (drawn in front,
    # not tracked). Hidden, its track is not good ("too few points kept") and coasts at
    # its last velocity (for up to ``coast`` = 2 s); once it comes out, its anchor-frame
    # corners match again and the track is good, following it, without any new
    # cross-view result.
    stage = Stage(9)
    panel = _affine(0.0, 330, 240, scale=1.1)  # 132 px wide, in front of the path
    pose = lambda k: _affine(0.0, 130 + 8.0 * k, 240)
    img0, (gt0, _) = stage.frame([pose(0), panel])
    prop = CameraPropagator(PropagationConfig(max_age=None))
    prop.start(1, img0, 0.0, gt0)
    hidden_seen, found_again = False, None
    for k in range(1, 50):
        img, (gt, _) = stage.frame([pose(k), panel])
        r = prop.update(img, k / 10)[1]
        visible = gt.sum() / SIDE ** 2
        if visible == 0:
            hidden_seen = True
            assert not r.good and "too few points kept" in r.reason
        if hidden_seen and visible == 1.0 and found_again is None and r.good:
            found_again = k
        if found_again is not None and visible == 1.0:
            assert r.good and iou(gt, r.mask) >= _iou_floor(SIDE, 3.0), (k, iou(gt, r.mask))
    assert hidden_seen and found_again is not None
    # it is found again within a few frames of coming out whole
    first_whole = next(k for k in range(60) if 130 + 8.0 * k - SIDE / 2 >= 330 + 66)  # its left edge past the panel
    assert found_again <= first_whole + 3, (found_again, first_whole)
