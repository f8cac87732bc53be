"""The inference pipeline reproduces the reference ego->exo run (fixture ``pipeline_ego2exo.pt``).

Networks, float32 tolerances and the work shared between tests: see
``pipeline_fixture.py``. Every stage from the target crop on is fed the stored reference
inputs of that stage; the first pass is the end-to-end run's own (its view and points are
the reference's, checked first). ``final_low_res`` holds the head with fresh point
features per pass (``accumulate_point_identity=False``); ``eval_loop`` holds it as the
reference evaluation loop runs it (accumulating point identity, the pipeline's default).
The end-to-end run (default settings) is compared with ``eval_loop`` on logits.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from helpers import parity_tolerances as ptol
from conftest import assert_close_ref
from helpers.pipeline_fixture import (assert_close, assert_image, assert_points, drift_tolerance, logit_tolerance,
                              module_fixtures, network_logits, np_, reference_order, run_end_to_end,
                              traced_first_pass)
from vggts_ros import prompts, transforms
from vggts_ros.pipeline import Tracks, VGGTSegmentor
from vggts_ros.types import TargetView


pipe, segs, seg, seg64 = module_fixtures("pipeline_ego2exo.pt")


@pytest.fixture(scope="module")
def source(seg, pipe):
    return seg.prepare_source(np_(pipe["ego_image"]), np_(pipe["ego_mask"]) > 0, need_first=True)


@pytest.fixture(scope="module")
def crop_features(seg, pipe):
    with torch.inference_mode():
        return seg.backbone_features([np_(pipe["source_crop_image"]), np_(pipe["target_crop_image"])])


@pytest.fixture(scope="module")
def end_to_end(seg, pipe):
    """The default pipeline, ego -> exo: (result, trace)."""
    view = TargetView(np_(pipe["exo_image"]), role="exo", name="exo")
    return run_end_to_end(seg, pipe["ego_image"], pipe["ego_mask"], view)


@pytest.fixture(scope="module")
def first_pass(end_to_end, pipe):
    """The end-to-end run's first pass (its own ego view and K-means points: the
    reference's pixels and points, checked by test_source_view_and_first_points), with the
    points in the reference's order."""
    return traced_first_pass(end_to_end[1], False, pipe["first_pass_source_points"])


@pytest.fixture(scope="module")
def final_low_res(seg, crop_features, pipe):
    """The head on the reference crops' features and prompts, ``refine_iterations=1``:
    ``{"eval_loop": accumulating point identity (the default), "fresh": per pass}``."""
    assert seg.accumulate_point_identity and seg.cfg.refine_iterations == 1
    fresh = VGGTSegmentor(seg.backbone, seg.head, seg.cfg, accumulate_point_identity=False)
    args = (crop_features, np_(pipe["source_points"]), [np_(pipe["target_points"])], np_(pipe["source_crop_mask"]))
    with torch.inference_mode():
        return {"eval_loop": seg.decode(*args)[1], "fresh": fresh.decode(*args)[1]}


def reference_target(seg, pipe):
    """The reference's target crop window (``crop_meta``)."""
    m = dict(pipe["crop_meta"])
    return transforms.Window((m["ori_h"], m["ori_w"]), (m["x1"], m["y1"], m["x2"], m["y2"]), (m["H"], m["W"]))


# ------------------------------------------------------------------------ stages
def test_seeds_and_sizes(pipe, seg):
    assert seg.image_size == pipe["ego_letterbox"].shape[0] == pipe["target_crop_image"].shape[0]


def test_source_view_and_first_points(source, pipe):
    # A square ego source is resized (the same pixels as the reference's letterbox of it).
    assert source.view.square.whole_frame
    assert_image(source.view.image, pipe["ego_letterbox"], "source view")
    assert np.array_equal(source.view.mask, np_(pipe["ego_mask_letterbox"]))
    assert_points(source.first_points, pipe["first_pass_source_points"], "first_pass_source_points", ordered=False)


def test_first_pass_float32(first_pass, pipe):
    """Float32 tracks within twice the reference's own float32-vs-float64 drift."""
    f64 = pipe["first_pass_float64"]
    assert first_pass.coords.shape == (2,) + tuple(pipe["first_pass_projected_518"].shape)
    clipped = np.clip(first_pass.coords[1], 0, 517)
    tol = drift_tolerance(pipe["first_pass_projected_518"], f64["projected_518"])
    assert tol < ptol.DRIFT_FACTOR * 1.0, f"stored drift {tol / ptol.DRIFT_FACTOR:.3g} px is not float32 rounding"
    assert_points(clipped, pipe["first_pass_projected_518"], "first-pass projections", tol=tol)
    assert_close(first_pass.vis[1], pipe["first_pass_vis"], "visibility", drift_tolerance(pipe["first_pass_vis"], f64["vis"]))
    assert_close(first_pass.conf[1], pipe["first_pass_conf"], "confidence", drift_tolerance(pipe["first_pass_conf"], f64["conf"]))
    # Frame 0 tracks stay at the query points.
    assert_points(first_pass.coords[0], pipe["first_pass_source_points"], "frame-0 tracks")


def test_first_pass_float64(seg64, source, pipe):
    """``precision="float64"``: the reference's float64 first pass to 1e-6 px, fed the
    pipeline's own source view and K-means points (in the reference's order)."""
    f64 = pipe["first_pass_float64"]
    queries = source.first_points[reference_order(source.first_points, pipe["first_pass_source_points"])]
    lb = transforms.letterbox(pipe["exo_image"].shape[:2], seg64.image_size)
    with torch.inference_mode():
        feats = seg64.backbone_features([source.view.image, lb.image(np_(pipe["exo_image"]))])
        tracks = seg64.track(feats, [queries])[0]
    assert feats.dtype == torch.float64 and tracks.coords.dtype == np.float64
    clipped = np.clip(tracks.coords[1], 0, seg64.image_size - 1)
    assert_points(clipped, f64["projected_518"], "float64 projections", tol=ptol.F64_COORD_TOL_PX)
    assert_close(tracks.vis[1], f64["vis"], "float64 visibility", ptol.f64_tolerance(f64["vis"]))
    assert_close(tracks.conf[1], f64["conf"], "float64 confidence", ptol.f64_tolerance(f64["conf"]))


def test_target_crop_stages(seg, source, pipe):
    exo = np_(pipe["exo_image"])
    projected = np_(pipe["first_pass_projected_518"])
    n = len(projected)
    tracks = Tracks(
        coords=np.stack([np_(pipe["first_pass_source_points"]), projected]),
        vis=np.stack([np.ones(n, np.float32), np_(pipe["first_pass_vis"])]),
        conf=np.stack([np.ones(n, np.float32), np_(pipe["first_pass_conf"])]),
    )
    src = dataclasses.replace(source, first_points=np_(pipe["first_pass_source_points"]))
    target = seg.cropped_target(exo, transforms.letterbox(exo.shape[:2], seg.image_size), tracks, 1, src)
    st = target.stages
    assert_points(st["projected"], pipe["projected_exo_pixels"], "projected_exo_pixels")
    assert_points(st["kept"], pipe["kept_points"], "kept_points")
    assert float(st["box_size"]) == pytest.approx(float(pipe["box_size"]), abs=1e-4)
    assert int(st["crop_size"]) == int(pipe["crop_size"])
    assert target.transform == reference_target(seg, pipe)
    assert_image(target.image, pipe["target_crop_image"], "target_crop_image")
    assert_points(st["crop_points"], pipe["crop_points"], "crop_points")
    assert_points(target.prompts, pipe["target_points"], "target_points")
    # Each prompt is paired with the mean source point of its cluster: inside the source mask box.
    ys, xs = np.nonzero(np_(pipe["ego_mask"]))
    assert target.source_points.shape == (len(pipe["target_points"]), 2)
    assert (target.source_points[:, 0] >= xs.min() - 1).all() and (target.source_points[:, 0] <= xs.max() + 1).all()
    assert (target.source_points[:, 1] >= ys.min() - 1).all() and (target.source_points[:, 1] <= ys.max() + 1).all()
    assert ((target.visibility >= 0) & (target.visibility <= 1)).all()


def test_source_crop_stages(source, pipe):
    assert_image(source.crop_image, pipe["source_crop_image"], "source_crop_image")
    assert np.array_equal(source.crop_mask, np_(pipe["source_crop_mask"]))
    assert_points(source.prompts, pipe["source_points"], "source_points", ordered=False)


def test_features(crop_features, pipe):
    flat = crop_features.flatten()
    assert_close_ref(flat[pipe["feature_sample_index"]], pipe["feature_sample"], "feature sample")


@pytest.mark.parametrize("key", ["fresh", "eval_loop"])
def test_final_low_res(final_low_res, pipe, key):
    low = final_low_res[key]
    ref = pipe["eval_loop"] if key == "eval_loop" else pipe
    assert_close_ref(low, ref["final_low_res"], "final_low_res")
    # The two semantics are told apart by the comparison.
    other = pipe["final_low_res"] if key == "eval_loop" else pipe["eval_loop"]["final_low_res"]
    assert (low - other).abs().max() > 1e-2


@pytest.mark.parametrize("key", [None, "eval_loop"], ids=["fresh", "eval_loop"])
def test_recovery(seg, pipe, key):
    ref = pipe[key] if key else pipe
    window = reference_target(seg, pipe)
    target = _dummy_target(window, pipe)
    frame, points = seg.recover(network_logits(ref["final_low_res"], seg.image_size), target)
    mask = frame.numpy() > 0
    expected = np_(ref["final_mask"]) > 0
    assert mask.shape == expected.shape
    assert (mask != expected).sum() == 0, f"{(mask != expected).sum()} pixels differ from final_mask"
    x1, _, x2, _ = window.box
    assert bool((frame[:, :x1] == -32).all()) and bool((frame[:, x2:] == -32).all())
    assert_points(points, ref["final_points"], "final_points")


def _dummy_target(window, pipe):
    from vggts_ros.pipeline import TargetInput

    k = len(pipe["target_points"])
    return TargetInput(image=np_(pipe["target_crop_image"]), prompts=np_(pipe["target_points"]), transform=window,
                       source_points=np.zeros((k, 2), np.float32), visibility=np.ones(k, np.float32),
                       confidence=np.ones(k, np.float32))


# ------------------------------------------------------------------------ end to end
def first_pass_drift_tolerance(seg, crop_features, final_low_res, pipe) -> float:
    """``logit_tolerance`` with the target prompts the reference's float64 first pass gives
    (same crop, same features): how much the stored float32-vs-float64 drift moves the logits."""
    lb = transforms.letterbox(pipe["exo_image"].shape[:2], seg.image_size)
    frame64 = lb.reference_points_to_frame(np_(pipe["first_pass_float64"]["projected_518"]))
    kept, _ = prompts.median_outlier_split(frame64, seg.cfg.outlier_k)
    _, prompts64 = prompts.cluster_points(reference_target(seg, pipe).points(frame64[kept]).astype(np.float32),
                                          seg.cfg.prompt_points)
    return logit_tolerance(seg, crop_features, pipe["source_points"], pipe["source_crop_mask"],
                           final_low_res["eval_loop"], prompts64, pipe["eval_loop"]["final_low_res"])


def test_end_to_end_logits(seg, crop_features, final_low_res, end_to_end, pipe):
    """The default pipeline against the reference evaluation loop, on logits in the exo frame."""
    result, trace = end_to_end
    target = trace["targets"][0][0]
    assert target.transform == reference_target(seg, pipe), (
        "the first pass moved the target crop: float32 drift beyond the reference's float32-vs-float64 drift")
    expected = target.transform.logits_to_frame(network_logits(pipe["eval_loop"]["final_low_res"], seg.image_size))
    tol = first_pass_drift_tolerance(seg, crop_features, final_low_res, pipe)
    assert_close(result.logits, expected, "end-to-end logits", tol)
    assert np.array_equal(result.mask, result.logits > 0)


def test_end_to_end_outputs(end_to_end, pipe):
    r, _ = end_to_end
    h, w = pipe["exo_image"].shape[:2]
    assert r.logits.shape == (h, w) and r.logits.dtype == np.float32
    assert r.target_points.shape == r.source_points.shape == tuple(pipe["final_points"].shape)
    # Cluster centres of the projections: within the projections' drift, in exo pixels.
    f64 = pipe["first_pass_float64"]["projected_518"]
    tol = drift_tolerance(pipe["first_pass_projected_518"], f64) * max(h, w) / pipe["exo_letterbox"].shape[0]
    assert_points(r.target_points, pipe["eval_loop"]["final_points"], "final points", ordered=False, tol=tol)
    sh, sw = pipe["ego_image"].shape[:2]
    assert (r.source_points >= 0).all() and (r.source_points[:, 0] < sw).all() and (r.source_points[:, 1] < sh).all()
    for arr in (r.visibility, r.confidence):
        assert arr.shape == (len(r.target_points),) and ((arr >= 0) & (arr <= 1)).all()
    prob = 1 / (1 + np.exp(-r.logits.astype(np.float64)))
    assert r.score == pytest.approx(prob[r.mask].mean(), rel=1e-5)
    assert {"first_pass", "features", "head", "recover", "total"} <= set(r.timings)
