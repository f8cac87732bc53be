"""View transforms (``vggts_ros.transforms``): forward and inverse maps agree with each other
and with the pixels they move, on square and non-square frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vggts_ros import transforms
from vggts_ros.transforms import Chain, Letterbox, Window

SIZE = 126
FRAMES = [(90, 160), (160, 90), (100, 100), (540, 960)]


def noise(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def disc(hw, centre, radius):
    yy, xx = np.mgrid[: hw[0], : hw[1]]
    return ((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 <= radius**2).astype(np.uint8)


def all_transforms(hw):
    h, w = hw
    mask = disc(hw, (w * 0.7, h * 0.4), min(h, w) * 0.15)
    pts = np.array([[w * 0.6, h * 0.5], [w * 0.8, h * 0.3], [w * 0.65, h * 0.45]])
    square = transforms.square_around_mask_mean(mask, SIZE)
    zoom = transforms.window_around_mask(square.mask(mask), 2.0)
    return {
        "resize": transforms.resize(hw, SIZE),
        "letterbox": transforms.letterbox(hw, SIZE),
        "square_around_mask_mean": square,
        "square_around_points": transforms.square_around_points(hw, pts, int(min(h, w) * 0.6), SIZE),
        "source_crop": Chain(square, zoom),
    }


CASES = [(hw, name) for hw in FRAMES for name in all_transforms(hw)]


@pytest.mark.parametrize("hw,name", CASES, ids=[f"{h}x{w}-{n}" for (h, w), n in CASES])
def test_points_round_trip(hw, name):
    t = all_transforms(hw)[name]
    rng = np.random.default_rng(1)
    frame_pts = rng.uniform(0, 1, (20, 2)) * [hw[1] - 1, hw[0] - 1]
    back = t.points_to_frame(t.points(frame_pts, clip=False))
    assert np.abs(back - frame_pts).max() < 1e-9
    view_pts = rng.uniform(0, 1, (20, 2)) * [t.view_hw[1] - 1, t.view_hw[0] - 1]
    assert np.abs(t.points(t.points_to_frame(view_pts), clip=False) - view_pts).max() < 1e-9
    # Clipping keeps points inside the view / the frame.
    far = np.array([[-50.0, -50.0], [1e5, 1e5]])
    v = t.points(far)
    assert (v >= 0).all() and (v[:, 0] <= t.view_hw[1] - 1).all() and (v[:, 1] <= t.view_hw[0] - 1).all()
    f = t.points_to_frame(far, clip=True)
    assert (f >= 0).all() and (f[:, 0] <= hw[1] - 1).all() and (f[:, 1] <= hw[0] - 1).all()


@pytest.mark.parametrize("hw,name", CASES, ids=[f"{h}x{w}-{n}" for (h, w), n in CASES])
def test_pixels_follow_the_points(hw, name):
    """A bright dot at a frame point lands where ``points`` says, and the view mask of a
    disc maps back onto the disc (mask -> logits -> frame)."""
    t = all_transforms(hw)[name]
    h, w = hw
    image = np.zeros((h, w, 3), np.uint8)
    centre = np.array([[w * 0.7, h * 0.4]])
    r = max(3.0, min(h, w) * 0.08)
    dot = disc(hw, centre[0], r)
    image[dot > 0] = 255
    view = t.image(image)
    assert view.shape == tuple(t.view_hw) + (3,)
    ys, xs = np.nonzero(view[..., 0] > 127)
    expected = t.points(centre, clip=False)[0]
    tol = 1.0 + 0.5 * max(t.view_hw[1] / w, t.view_hw[0] / h)  # pixel-index vs pixel-centre convention + rounding
    assert abs(xs.mean() - expected[0]) < tol and abs(ys.mean() - expected[1]) < tol

    view_mask = t.mask(dot)
    assert view_mask.dtype == np.uint8 and set(np.unique(view_mask)) <= {0, 1}
    logits = torch.from_numpy(view_mask.astype(np.float32) * 20 - 10)
    frame = t.logits_to_frame(logits)
    assert frame.shape == (h, w)
    back = frame.numpy() > 0
    iou = (back & (dot > 0)).sum() / max(1, (back | (dot > 0)).sum())
    assert iou > 0.8, f"disc mapped back with IoU {iou:.3f}"


def test_window_outside_is_filled_and_inside_is_resized():
    hw = (90, 160)
    win = transforms.square_around_points(hw, [[120.0, 40.0]], 60, SIZE)
    assert win.box == (90, 10, 150, 70) and win.scale == (SIZE / 60, SIZE / 60)
    frame = win.logits_to_frame(torch.ones(1, 1, SIZE, SIZE), fill=-7.0)
    assert bool((frame[:, :90] == -7).all()) and bool((frame[:, 150:] == -7).all()) and torch.allclose(frame[10:70, 90:150], torch.ones(60, 60))
    whole = transforms.resize((100, 100), SIZE).logits_to_frame(torch.full((SIZE, SIZE), 3.0))
    assert whole.shape == (100, 100) and torch.allclose(whole, torch.full((100, 100), 3.0))


def test_letterbox_geometry():
    lb = transforms.letterbox((540, 960), 518)
    assert lb.content_hw == (294, 518)  # 291.4 rounded to a multiple of 14
    img = lb.image(noise(540, 960))
    assert img.shape == (518, 518, 3) and (img[294:] == 114).all()
    assert (lb.mask(np.ones((540, 960), np.uint8))[294:] == 0).all()
    # The reference's long-side mapping (kept for ego->exo): x and y scaled by 960/518.
    pts = np.array([[517.0, 293.0], [600.0, -3.0]])
    s = 960 / 518
    assert np.allclose(lb.reference_points_to_frame(pts), [[517 * s, 539], [517 * s, 0]], atol=1e-9)
    # Logits of the content only come back; the padding is dropped.
    logits = torch.zeros(518, 518)
    logits[294:] = 100.0
    assert float(lb.logits_to_frame(logits).abs().max()) == 0.0


def test_square_around_mask_mean_is_clip_exo_mean():
    """Reference ``clip_exo_mean`` on 960x540: left = min(max(int(mean x) - 270, 0), 420)."""
    for x0, x1, left in ((10, 40, 0), (400, 520, 189), (900, 960, 420)):
        mask = np.zeros((540, 960), np.uint8)
        mask[200:260, x0:x1] = 1
        win = transforms.square_around_mask_mean(mask, 518)
        mid = int(np.nonzero(mask)[1].mean())
        assert win.box == (min(max(mid - 270, 0), 420), 0, min(max(mid - 270, 0), 420) + 540, 540) and win.box[0] == left
    tall = np.zeros((200, 100), np.uint8)
    tall[150:190, 10:20] = 1
    assert transforms.square_around_mask_mean(tall, SIZE).box == (0, 100, 100, 200)
    assert transforms.square_around_mask_mean(np.ones((80, 80)), SIZE).whole_frame


def test_prepare_source_square_and_zoom():
    """The source recipe: square view, zoom on the mask within it, the crop chain maps the
    zoom's pixels back into the frame."""
    h, w = 90, 160
    mask = np.zeros((h, w), np.uint8)
    mask[40:50, 120:135] = 1
    image = noise(h, w)
    src = transforms.prepare_source(image, mask, SIZE, 2.0)
    assert src.square.box == (70, 0, 160, 90)  # int(mean x) = 127; 127 - 45 = 82 clamped to 160 - 90
    assert np.array_equal(src.image, src.square.image(image)) and np.array_equal(src.mask, src.square.mask(mask))
    assert isinstance(src.crop, Chain) and src.crop.outer is src.square
    zoom = src.crop.inner
    assert zoom.box[2] - zoom.box[0] == zoom.box[3] - zoom.box[1] == SIZE // 2  # int(126 / 2) covers the object
    assert np.array_equal(src.crop_image, src.crop.image(image))
    assert np.array_equal(src.crop_mask, zoom.mask(src.mask))
    ys, xs = np.nonzero(src.crop_mask)
    back = src.crop.points_to_frame(np.stack([xs, ys], 1))
    assert back[:, 0].min() >= 120 - 1 and back[:, 0].max() <= 135 and back[:, 1].min() >= 40 - 1 and back[:, 1].max() <= 50


def test_tiny_object_survives_the_source_view():
    mask = np.zeros((600, 800), np.uint8)
    mask[301, 403] = 1  # vanishes under nearest resizing 600 -> 126
    src = transforms.prepare_source(np.zeros((600, 800, 3), np.uint8), mask, SIZE)
    assert src.mask.sum() == 1 and src.crop_mask.any()
    ys, xs = np.nonzero(src.mask)
    assert np.abs(src.square.points_to_frame([[xs[0], ys[0]]]) - [[403, 301]]).max() < 600 / SIZE


def test_windows_must_lie_inside_the_frame():
    with pytest.raises(ValueError, match="not inside"):
        Window((10, 10), (0, 0, 11, 10), (5, 5))
    assert isinstance(transforms.letterbox((10, 20), 28), Letterbox)
