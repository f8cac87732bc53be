"""PipelineConfig.geometry_heads: VGGT's camera and depth heads on the pipeline's first pass
(test-tiny preset, deterministic weights). With the option on, the masks are exactly those
with it off, no extra aggregator pass runs, and each result carries its target's and its
source's geometry in frame pixels: the heads' outputs on the first pass's own views."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from test_pipeline import MASK_A, MASK_B, SOURCE, CallCounter, noise
from vggts_ros import transforms
from vggts_ros.config import PipelineConfig
from vggts_ros.geometry.camera import view_geometries
from vggts_ros.pipeline import VGGTSegmentor
from vggts_ros.types import TargetView

TARGETS = [TargetView(noise(150, 200, 1), role="exo", name="exo1"),
           TargetView(noise(128, 128, 2), role="ego", name="ego")]


@pytest.fixture(scope="module")
def segs():
    off = VGGTSegmentor.deterministic("test-tiny", PipelineConfig(), device="cpu")
    on = VGGTSegmentor.deterministic("test-tiny", PipelineConfig(geometry_heads=True), device="cpu")
    return off, on


def _run(seg):
    counter = CallCounter(aggregator=seg.backbone.aggregator, **(
        {"camera_head": seg.backbone.camera_head} if seg.backbone.camera_head is not None else {}))
    try:
        results = seg.segment_objects(SOURCE, [MASK_A, MASK_B], TARGETS)
    finally:
        counter.close()
    return results, counter.counts


@pytest.fixture(scope="module")
def runs(segs):
    return [_run(s) for s in segs]


def test_masks_unchanged_and_no_extra_aggregator_pass(segs, runs):
    off, on = segs
    shared = off.backbone.state_dict()
    on_state = on.backbone.state_dict()
    assert all(torch.equal(v, on_state[k]) for k, v in shared.items()), "the track path's weights moved"
    (res_off, n_off), (res_on, n_on) = runs
    # two objects with different source squares: two first passes, both features passes batched
    assert n_off["aggregator"] == n_on["aggregator"] == 3
    assert n_on["camera_head"] == 2  # once per first pass, on its tokens
    for per_off, per_on in zip(res_off, res_on):
        for a, b in zip(per_off, per_on):
            assert np.array_equal(a.mask, b.mask) and np.array_equal(a.logits, b.logits)
            assert np.array_equal(a.target_points, b.target_points) and np.array_equal(a.source_points, b.source_points)
            assert a.score == b.score
            assert a.geometry is None and a.source_geometry is None
            assert b.geometry is not None and b.source_geometry is not None
            assert "geometry" in b.timings and "geometry" not in a.timings


def test_geometry_is_the_heads_on_the_first_pass_views(segs, runs):
    """Recomputed from the first pass's views built here (source square, letterboxed
    targets) through the backbone and view_geometries: the same numbers."""
    _, on = segs
    results, _ = runs[1]
    size = on.image_size
    letterboxes = [transforms.letterbox(t.image.shape[:2], size) for t in TARGETS]
    for o, mask in enumerate((MASK_A, MASK_B)):
        square = transforms.prepare_source(SOURCE, mask, size).square
        images = [square.image(SOURCE)] + [lb.image(t.image) for lb, t in zip(letterboxes, TARGETS)]
        with torch.inference_mode():
            geo = on.backbone(on.images_to_tensor(images), geometry=True).geometry
        expected = view_geometries(geo.pose_encoding[0], geo.depth[0, ..., 0], geo.depth_conf[0],
                                   [square] + letterboxes)
        got = [results[o][0].source_geometry] + [r.geometry for r in results[o]]
        assert all(r.source_geometry is got[0] for r in results[o])
        for g, e, hw in zip(got, expected, [SOURCE.shape[:2]] + [t.image.shape[:2] for t in TARGETS]):
            assert g.depth.shape == g.depth_conf.shape == hw and g.depth.dtype == np.float32
            assert g.K.shape == (3, 3) and g.T_cam_from_ref.shape == (4, 4) and g.scale == "relative"
            for name in ("depth", "depth_conf", "K", "T_cam_from_ref", "extrinsic", "pose_encoding"):
                assert np.array_equal(getattr(g, name), getattr(e, name), equal_nan=True), name
        src = got[0]
        np.testing.assert_allclose(src.T_cam_from_ref, np.eye(4), atol=1e-12)
        # the source frame (160x120) is seen through its 120x120 square: columns outside are NaN
        x1, _, x2, _ = square.box
        shown = ~np.isnan(src.depth)
        assert shown[:, x1:x2].all() and not shown[:, :x1].any() and not shown[:, x2:].any()
        for g in got[1:]:  # letterboxed targets: every frame pixel is seen, the padding never
            assert np.isfinite(g.depth).all() and (g.depth > 0).all() and (g.depth_conf > 1).all()


def test_option_needs_a_backbone_with_the_heads(segs):
    off, _ = segs
    with pytest.raises(ValueError, match="BackboneConfig.geometry_heads"):
        VGGTSegmentor(off.backbone, off.head, PipelineConfig(geometry_heads=True))
