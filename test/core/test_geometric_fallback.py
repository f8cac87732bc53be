"""Geometric backend on hard cases: textureless objects and wide baselines are found by
the scene-homography + colour fallback, and every empty mask says why."""

import numpy as np
import pytest

from vggts_ros.geometric import GeometricSegmentor
from vggts_ros.metrics import iou
from vggts_ros.scenes import tall_scene, textureless_scene, wall_scene
from vggts_ros.types import TargetView


@pytest.fixture(scope="module")
def seg():
    return GeometricSegmentor()


@pytest.fixture(scope="module")
def plain_only():
    return GeometricSegmentor(fallback=False)


@pytest.fixture(scope="module")
def textureless():
    return textureless_scene(0)


def test_textureless_box_is_found_by_the_fallback(seg, plain_only, textureless):
    scene = textureless
    src, mask = scene.image("ego"), scene.mask("ego", 1)
    before = plain_only.segment(src, mask, scene.target_views())
    after = seg.segment(src, mask, scene.target_views())
    for name, old, new in zip(scene.targets, before, after):
        # without the fallback: an empty mask, with the reason
        assert not old.mask.any() and old.path == ""
        assert "object" in old.reason and ("matches" in old.reason or "features" in old.reason), old.reason
        # with it: the box, from the scene's homography and its colour
        assert new.path == "scene_homography+colour" and new.reason == ""
        assert iou(scene.mask(name, 1), new.mask) >= 0.9, name
        assert 0 < new.score < 0.5  # ranked below matched features where masks overlap
        assert new.visibility.sum() >= 1 and np.isfinite(new.target_points).all()
        assert new.timings["fallback"] > 0


def test_painted_wall_is_found(seg, plain_only):
    """A long flat-coloured panel, cut by the source image's border, found in full."""
    scene = wall_scene(1)
    src, mask = scene.image("ego"), scene.mask("ego", 1)
    for name, old, new in zip(scene.targets, plain_only.segment(src, mask, scene.target_views()),
                              seg.segment(src, mask, scene.target_views())):
        assert not old.mask.any() and old.reason
        assert new.path == "scene_homography+colour" and iou(scene.mask(name, 1), new.mask) >= 0.9


def test_textured_objects_keep_their_feature_path(seg, textureless):
    scene = textureless
    (res,) = seg.segment(scene.image("ego"), scene.mask("ego", 2), scene.target_views()[:1])
    assert res.path == "object_features" and "fallback" not in res.timings
    assert iou(scene.mask("exo1", 2), res.mask) >= 0.9


def test_tall_box_at_a_wide_baseline(seg, plain_only):
    scene = tall_scene(0)
    view = [TargetView(scene.image("exo1"), "exo", "exo1")]
    (old,) = plain_only.segment(scene.image("ego"), scene.mask("ego", 2), view)
    (new,) = seg.segment(scene.image("ego"), scene.mask("ego", 2), view)
    assert not old.mask.any() and old.reason
    assert new.path == "scene_homography+colour"
    assert iou(scene.mask("exo1", 2), new.mask) >= 0.9


def test_colour_model_that_cannot_separate_says_so(textureless):
    """An object whose colours are as likely in its surroundings is left empty, with the
    measured distance in the reason (forced here by an unreachable threshold)."""
    strict = GeometricSegmentor(min_colour_distance=1.01)
    scene = textureless
    (res,) = strict.segment(scene.image("ego"), scene.mask("ego", 1), scene.target_views()[:1])
    assert not res.mask.any() and res.path == ""
    assert "fallback: its colours are not distinct from its surroundings (distance" in res.reason


@pytest.mark.parametrize("case", ["featureless", "tiny", "outside"])
def test_every_empty_mask_has_a_reason(seg, textureless, case):
    scene = textureless
    src, mask = scene.image("ego"), scene.mask("ego", 1)
    targets = scene.target_views()[:1]
    if case == "featureless":
        src = np.full_like(src, 90)
    elif case == "tiny":
        ys, xs = np.nonzero(mask)
        mask = np.zeros_like(mask)
        mask[ys[0], xs[0]] = True
    else:  # a target that shows only sky-coloured noise: nothing matches anywhere
        rng = np.random.default_rng(0)
        targets = [TargetView(rng.integers(0, 255, (200, 300, 3), dtype=np.uint8), "exo", "noise")]
    (res,) = seg.segment(src, mask, targets)
    assert not res.mask.any()
    assert res.reason, case
