"""Click to mask (weight-free): points and/or a box on a bundled scene's image give the
object's mask; a click on background is refused with a message."""

import cv2
import numpy as np
import pytest

from vggts_ros.click_mask import ClickMaskError, mask_from_clicks
from vggts_ros.metrics import iou
from vggts_ros.scenes import synthetic_scene, textureless_scene


@pytest.fixture(scope="module")
def scene():
    return synthetic_scene(0)


def inner_point(mask):
    """The object pixel farthest from its outline (where a person would click)."""
    d = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    y, x = np.unravel_index(np.argmax(d), d.shape)
    return float(x), float(y)


def bbox(mask):
    ys, xs = np.nonzero(mask)
    return xs.min(), ys.min(), xs.max(), ys.max()


@pytest.mark.parametrize("camera", ["ego", "exo1", "exo2"])
def test_box_gives_the_object(scene, camera):
    for oid in scene.object_ids:
        gt = scene.mask(camera, oid)
        mask = mask_from_clicks(scene.image(camera), box=bbox(gt))
        assert mask.dtype == bool and mask.shape == gt.shape
        assert iou(gt, mask) >= 0.95, (camera, oid)


def test_one_point_gives_the_object(scene):
    for oid in scene.object_ids:
        gt = scene.mask("exo1", oid)
        assert iou(gt, mask_from_clicks(scene.image("exo1"), [inner_point(gt)])) >= 0.95, oid
    plain = textureless_scene(0)  # a flat-coloured box, clicked in the source camera
    gt = plain.mask("ego", 1)
    assert iou(gt, mask_from_clicks(plain.image("ego"), [inner_point(gt)])) >= 0.95


def test_point_and_box_together_and_negative_points(scene):
    gt = scene.mask("ego", 1)
    x0, y0, x1, y1 = bbox(gt)
    box = (x0 - 10, y0 - 10, x1 + 10, y1 + 10)
    with_point = mask_from_clicks(scene.image("ego"), [inner_point(gt)], box=box)
    assert iou(gt, with_point) >= 0.95
    # a negative click inside the box keeps that spot out of the mask
    cx, cy = inner_point(gt)
    cut = mask_from_clicks(scene.image("ego"), [(cx, cy)], labels=[0], box=box)
    assert not cut[int(cy), int(cx)]


@pytest.mark.parametrize("camera", ["ego", "exo1"])
def test_click_on_background_is_refused(scene, camera):
    everything = np.zeros(scene.image(camera).shape[:2], bool)
    for oid in scene.object_ids:
        everything |= scene.mask(camera, oid)
    d = cv2.distanceTransform((~everything).astype(np.uint8), cv2.DIST_L2, 5)
    y, x = np.unravel_index(np.argmax(d), d.shape)  # the floor, as far from every box as can be
    with pytest.raises(ClickMaskError, match=r"look like background: .*click on an object, or give a box"):
        mask_from_clicks(scene.image(camera), [(float(x), float(y))])


def test_results_repeat_exactly(scene):
    gt = scene.mask("exo2", 2)
    a = mask_from_clicks(scene.image("exo2"), [inner_point(gt)])
    b = mask_from_clicks(scene.image("exo2"), [inner_point(gt)])
    assert np.array_equal(a, b)


@pytest.mark.parametrize("kwargs, message", [
    (dict(), "at least one point on the object"),
    (dict(points=[(5, 5)], labels=[0]), "at least one point on the object"),
    (dict(points=[(5000, 5)]), "outside the 640x360 image"),
    (dict(points=[(5, 5)], labels=[1, 0]), "1 points but 2 labels"),
    (dict(points=[(5, 5)], labels=[2]), "labels must be 1 (object) or 0"),
    (dict(box=(10, 10, 11, 40)), "smaller than 4x4"),
    (dict(box=(1, 2, 3)), "box must be (x0, y0, x1, y1)"),
])
def test_bad_clicks_are_named(scene, kwargs, message):
    with pytest.raises(ClickMaskError) as err:
        mask_from_clicks(scene.image("exo1"), **kwargs)
    assert message in str(err.value)
