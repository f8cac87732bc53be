"""The inference pipeline reproduces the reference exo->ego run (fixture ``pipeline_exo2ego.pt``).

The reference recipe (``extract_point_x2g.py``, ``dataloader.py`` ``exo_src``/``ego_tar``,
the evaluation loop of ``main_exp/hybrid.py``): the 960x540 exo source is cut to the
short-side square around the mask's mean x and resized (never letterboxed); 5 K-means
points of that square are tracked into the resized 704x704 ego view and, clipped, are the
head's target prompts; the source crop is the R=2 zoom within the square; the head runs
as the evaluation loop runs it (accumulating point identity); the ego logits are resized
back to 704. Networks, float32 tolerances and the work shared between tests:
``pipeline_fixture.py`` (the first-pass tests read the end-to-end run's own first pass).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from helpers import parity_tolerances as ptol
from conftest import assert_close_ref
from helpers.pipeline_fixture import (assert_close, assert_image, assert_points, drift_tolerance,
                                     float32_logit_tolerance, float64_model_logits, module_fixtures, network_logits,
                                     np_, reference_order, run_end_to_end, traced_first_pass)
from vggts_ros.pipeline import Tracks, is_cropped
from vggts_ros.types import TargetView

pytestmark = pytest.mark.parity_sets  # CI runs these beside the other ROS-free tests (.ci/run)


pipe, segs, seg, seg64 = module_fixtures("pipeline_exo2ego.pt")


@pytest.fixture(scope="module")
def source(seg, pipe):
    return seg.prepare_source(np_(pipe["exo_image"]), np_(pipe["exo_mask"]) > 0, need_first=False, need_direct=True)


@pytest.fixture(scope="module")
def features(seg, pipe):
    with torch.inference_mode():
        return seg.backbone_features([np_(pipe["source_crop_image"]), np_(pipe["ego_resized"])])


@pytest.fixture(scope="module")
def end_to_end(seg, pipe):
    """The default pipeline, exo -> ego: (result, trace)."""
    return run_end_to_end(seg, pipe["exo_image"], pipe["exo_mask"], TargetView(np_(pipe["ego_image"]), role="ego"))


@pytest.fixture(scope="module")
def end_to_end64(seg64, pipe):
    """The pipeline with ``precision="float64"``, exo -> ego: (result, trace with both
    backbone passes' features). Machine-independent to far below the tolerances used."""
    view = TargetView(np_(pipe["ego_image"]), role="ego")
    return run_end_to_end(seg64, pipe["exo_image"], pipe["exo_mask"], view, keep_features=True)


@pytest.fixture(scope="module")
def first_pass(end_to_end, pipe):
    """The end-to-end run's first pass (its own source square and K-means points: the
    reference's pixels and points, checked by the stage tests), in the reference's order."""
    return traced_first_pass(end_to_end[1], True, pipe["first_pass_source_points"])


@pytest.fixture(scope="module")
def final_low_res(seg, features, pipe):
    """The head on the reference's features input and prompts (default: accumulating)."""
    with torch.inference_mode():
        return seg.decode(features, np_(pipe["source_points"]), [np_(pipe["target_points"])],
                          np_(pipe["source_crop_mask"]))[1]


def reference_tracks(pipe) -> Tracks:
    n = len(pipe["target_points"])
    return Tracks(coords=np.stack([np_(pipe["first_pass_source_points"]), np_(pipe["target_points"])]),
                  vis=np.stack([np.ones(n, np.float32), np_(pipe["first_pass_vis"])]),
                  conf=np.stack([np.ones(n, np.float32), np_(pipe["first_pass_conf"])]))


# ------------------------------------------------------------------------ stages
def test_source_square(source, pipe):
    h, w = pipe["exo_image"].shape[:2]
    assert source.view.square.box[1::2] == (0, h) and source.view.square.box[2] - source.view.square.box[0] == h
    assert_image(source.view.image, pipe["source_square"], "source_square")
    assert np.array_equal(source.view.mask, np_(pipe["source_square_mask"])), "source_square_mask"


def test_first_pass_source_points(source, pipe):
    assert_points(source.direct_points, pipe["first_pass_source_points"], "first_pass_source_points", ordered=False)


def test_ego_target_view(seg, source, pipe):
    view = TargetView(np_(pipe["ego_image"]), role="ego")
    assert not is_cropped(view)
    target = seg.direct_target(view.image, reference_tracks(pipe), 1, source)
    assert_image(target.image, pipe["ego_resized"], "ego_resized")
    assert_points(target.prompts, pipe["target_points"], "target prompts = clipped tracks")


def test_first_pass_float32(first_pass, pipe):
    """Float32 tracks within twice the reference's own float32-vs-float64 drift."""
    f64 = pipe["first_pass_float64"]
    clipped = np.clip(first_pass.coords[1], 0, 517)
    tol = drift_tolerance(pipe["target_points"], f64["target_points"])
    assert tol < ptol.DRIFT_FACTOR * 1.0, f"stored drift {tol / ptol.DRIFT_FACTOR:.3g} px is not float32 rounding"
    assert_points(clipped, pipe["target_points"], "target_points", tol=tol)
    assert_close(first_pass.vis[1], pipe["first_pass_vis"], "visibility", drift_tolerance(pipe["first_pass_vis"], f64["vis"]))
    assert_close(first_pass.conf[1], pipe["first_pass_conf"], "confidence", drift_tolerance(pipe["first_pass_conf"], f64["conf"]))


def test_first_pass_float64(seg64, end_to_end64, pipe):
    """``precision="float64"``: the reference's float64 first pass to 1e-6 px, from the
    float64 pipeline's own first backbone pass (its source view, the reference's pixels),
    the tracker fed its K-means points in the reference's order (in another order the
    float64 tracks differ by ~1e-7 px: its attention over the points sums in that order
    and the iterations amplify it)."""
    f64 = pipe["first_pass_float64"]
    _, trace = end_to_end64
    src, feats = trace["sources"][0], trace["features"][0]
    queries = src.direct_points[reference_order(src.direct_points, pipe["first_pass_source_points"])]
    with torch.inference_mode():
        tracks = seg64.track(feats, [queries])[0]
    assert feats.dtype == torch.float64 and tracks.coords.dtype == np.float64
    clipped = np.clip(tracks.coords[1], 0, seg64.image_size - 1)
    assert_points(clipped, f64["target_points"], "float64 target points", tol=ptol.F64_COORD_TOL_PX)
    assert_close(tracks.vis[1], f64["vis"], "float64 visibility", ptol.f64_track_score_tolerance(f64["vis"]))
    assert_close(tracks.conf[1], f64["conf"], "float64 confidence", ptol.f64_track_score_tolerance(f64["conf"]))


def test_source_crop(source, pipe):
    assert_image(source.crop_image, pipe["source_crop_image"], "source_crop_image")
    assert np.array_equal(source.crop_mask, np_(pipe["source_crop_mask"])), "source_crop_mask"
    assert_points(source.prompts, pipe["source_points"], "source_points", ordered=False)


def test_features(features, pipe):
    assert_close_ref(features.flatten()[pipe["feature_sample_index"]], pipe["feature_sample"], "feature sample")


def test_final_low_res(final_low_res, pipe):
    assert_close_ref(final_low_res, pipe["final_low_res"], "final_low_res")  # 1e-4 relative


def test_recovery(seg, source, pipe):
    target = seg.direct_target(np_(pipe["ego_image"]), reference_tracks(pipe), 1, source)
    frame, points = seg.recover(network_logits(pipe["final_low_res"], seg.image_size), target)
    assert frame.shape == pipe["final_mask"].shape
    assert np.array_equal(frame.numpy() > 0, np_(pipe["final_mask"]) > 0), "final_mask"
    assert_points(points, pipe["final_points"], "final_points")


# ------------------------------------------------------------------------ end to end
# No discrete choice on this path (the prompts are the clipped tracks, the ego view is
# resized whole): the float64 run is compared with the reference's float64 first pass
# exactly and with its logits within what the float32-vs-float64 prompt drift moves them;
# the float32 run with the reference within the drift, and with the float64 model at its
# own prompts to float32 rounding.
def test_end_to_end_float64(seg64, end_to_end64, pipe):
    """The float64 pipeline, machine-independent: its prompts and final points are the
    reference's float64 tracks exactly; its logits are the reference's within what the
    prompt change from the reference's float32 tracks moves them (computed in float64) plus
    the fixtures' float32 tolerance."""
    result, trace = end_to_end64
    src, target = trace["sources"][0], trace["targets"][0][0]
    want = np.clip(np_(pipe["first_pass_float64"]["target_points"]), 0, seg64.image_size - 1)
    assert_points(target.prompts, want, "float64 prompts", ordered=False, tol=ptol.COORD_FLOOR_PX)
    assert_points(result.target_points, want * 704 / 518, "final points", ordered=False, tol=ptol.COORD_FLOOR_PX)
    assert np.array_equal(result.mask, result.logits > 0)
    logits = torch.from_numpy(result.logits).double()
    at_ref_prompts = float64_model_logits(seg64, trace["features"][-1], src,
                                          dataclasses.replace(target, prompts=np_(pipe["target_points"])))
    expected = target.transform.logits_to_frame(network_logits(pipe["final_low_res"], seg64.image_size))
    scale = max(1.0, float(expected.abs().max()))
    moved = float((at_ref_prompts - logits).abs().max())
    assert moved < 0.1 * scale, f"the float64 prompts move the logits by {moved:.3g}: not float32 drift"
    assert_close(logits, expected, "float64 end-to-end logits", moved + ptol.REL_FLOOR * scale)


def test_end_to_end_float32(seg64, end_to_end, end_to_end64, pipe):
    """The float32 pipeline: prompts and final points within the stored float32 drift of the
    reference's (continuous in the tracks), logits those of the float64 model at this run's
    own prompts to float32 rounding."""
    result, trace = end_to_end
    src, target = trace["sources"][0], trace["targets"][0][0]
    f64 = pipe["first_pass_float64"]["target_points"]
    tol = drift_tolerance(pipe["target_points"], f64)
    assert_points(target.prompts, pipe["target_points"], "target prompts", ordered=False, tol=tol)
    assert_points(result.target_points, pipe["final_points"], "final_points", ordered=False, tol=tol * 704 / 518)
    logits64 = float64_model_logits(seg64, end_to_end64[1]["features"][-1], src, target)
    assert_close(result.logits, logits64, "float32 end-to-end logits vs float64 model", float32_logit_tolerance(logits64))
    assert np.array_equal(result.mask, result.logits > 0)


def test_end_to_end_source_points(source, end_to_end, pipe):
    """The reported source points are the tracked K-means points of the square, in exo pixels."""
    result, _ = end_to_end
    expected = source.view.square.points_to_frame(np_(pipe["first_pass_source_points"]))
    assert_points(result.source_points, expected, "source points", ordered=False)
    assert (expected[:, 0] >= source.view.square.box[0]).all() and (expected[:, 0] < source.view.square.box[2]).all()
