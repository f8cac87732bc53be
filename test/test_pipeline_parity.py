"""The inference pipeline reproduces the reference ego->exo run (fixture ``pipeline_ego2exo.pt``).

Networks: the backbone of ``vggt_track_tiny.pt`` (its config and weight seed) and the
full-size head (the ``vggts_head.pt`` config at the image size and ``sa_tokens`` named in
the pipeline fixture's note, weight seed ``head_weight_seed``), both filled with the
fixtures' deterministic rule and checked key by key before any output is compared.

Every stage is fed the stored reference inputs of that stage; the end-to-end run is
compared by IoU because the reference K-means sampler returns its points in arbitrary
order, which the tracker (its points attend to each other) turns into small differences.

The stored ``final_low_res`` is the head with the point-identity embedding added once per
pass (a fresh point-feature tensor per pass). The pipeline's default reproduces the
reference *evaluation loop* instead, whose in-place update adds it once more per
refinement; the stage test therefore uses ``accumulate_point_identity=False``, and the
end-to-end test the default (see ``test_pipeline.py::test_refinement_matches_eval_loop``).
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import assert_close_ref, load_fixture
from vggts_ros import crops
from vggts_ros.config import HeadConfig, PipelineConfig
from vggts_ros.models.backbone import VGGTBackbone, backbone_config_from_dict
from vggts_ros.models.deterministic import fill_deterministic, weight_sums
from vggts_ros.models.union_head import UnionSegmentationHead
from vggts_ros.pipeline import TargetInput, Tracks, VGGTSegmentor, letterbox_to_frame
from vggts_ros.types import TargetView

COORD_TOL = 1e-2


def np_(x) -> np.ndarray:
    return x.numpy() if torch.is_tensor(x) else np.asarray(x)


def check_weight_sums(model, expected, what):
    got = weight_sums(model)
    assert sorted(got) == sorted(expected), f"{what}: state-dict keys differ from the reference"
    bad = [k for k in expected if abs(got[k] - expected[k]) > 1e-6 * max(1.0, abs(expected[k]))]
    assert not bad, f"{what}: deterministic weights differ for {bad[:5]}"


def assert_points(actual, expected, what, ordered=True):
    a, e = np.asarray(actual, np.float64).reshape(-1, 2), np_(expected).astype(np.float64).reshape(-1, 2)
    if not ordered:
        a, e = a[np.lexsort(a.T[::-1])], e[np.lexsort(e.T[::-1])]
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    err = np.abs(a - e).max()
    assert err <= COORD_TOL, f"{what}: max error {err:.3g} px"


def assert_image(actual, expected, what):
    a, e = np.asarray(actual).astype(np.int64), np_(expected).astype(np.int64)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    assert np.abs(a - e).max() <= 1, f"{what}: differs by {np.abs(a - e).max()}"


# ------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def pipe():
    return load_fixture("pipeline_ego2exo.pt")


@pytest.fixture(scope="module")
def track_fx():
    return load_fixture("vggt_track_tiny.pt")


@pytest.fixture(scope="module")
def head_fx():
    return load_fixture("vggts_head.pt")


def head_config(pipe, head_fx) -> HeadConfig:
    """The ``vggts_head.pt`` config with the image size / sa_tokens named in the note."""
    match = re.search(r"img_size\s*=?\s*(\d+)\D+sa_tokens\s*=?\s*(\d+)", str(pipe["note"]))
    assert match, f"cannot read the head size from the fixture note: {pipe['note']!r}"
    size, sa_tokens = int(match.group(1)), int(match.group(2))
    assert size == pipe["ego_letterbox"].shape[0], "head img_size differs from the letterbox size"
    known = {f.name for f in dataclasses.fields(HeadConfig)}
    cfg = {k: v for k, v in head_fx["config"].items() if k in known}
    cfg.update(img_size=size, sa_tokens=sa_tokens)
    return HeadConfig(**cfg)


@pytest.fixture(scope="module")
def networks(pipe, track_fx, head_fx):
    backbone = fill_deterministic(VGGTBackbone(backbone_config_from_dict(track_fx["config"])).eval(), track_fx["weight_seed"])
    check_weight_sums(backbone, track_fx["weight_sums"], "backbone")
    head = fill_deterministic(UnionSegmentationHead(head_config(pipe, head_fx)).eval(), pipe["head_weight_seed"])
    check_weight_sums(head, pipe["head_weight_sums"], "head")
    return backbone, head


@pytest.fixture(scope="module")
def seg(networks):
    backbone, head = networks
    return VGGTSegmentor(backbone, head, PipelineConfig(), device="cpu")


@pytest.fixture(scope="module")
def crop_features(seg, pipe):
    with torch.inference_mode():
        return seg.backbone_features([np_(pipe["source_crop_image"]), np_(pipe["target_crop_image"])])


@pytest.fixture(scope="module")
def end_to_end(seg, pipe):
    view = TargetView(np_(pipe["exo_image"]), role="exo", name="exo")
    return seg.segment(np_(pipe["ego_image"]), np_(pipe["ego_mask"]), [view])[0]


# ------------------------------------------------------------------------ stages
def test_seeds_and_sizes(pipe, track_fx, seg):
    assert pipe["weight_seed"] == track_fx["weight_seed"]
    assert seg.image_size == pipe["ego_letterbox"].shape[0] == pipe["target_crop_image"].shape[0]


def test_first_pass(seg, pipe):
    with torch.inference_mode():
        feats = seg.backbone_features([np_(pipe["ego_letterbox"]), np_(pipe["exo_letterbox"])])
        tracks = seg.track(feats, [np_(pipe["first_pass_source_points"])])[0]
    assert tracks.coords.shape == (2,) + tuple(pipe["first_pass_projected_518"].shape)
    assert_points(tracks.coords[1], pipe["first_pass_projected_518"], "first-pass projections")
    assert_close_ref(tracks.vis[1], pipe["first_pass_vis"], "first-pass visibility")
    assert_close_ref(tracks.conf[1], pipe["first_pass_conf"], "first-pass confidence")
    # Frame 0 tracks stay at the query points.
    assert_points(tracks.coords[0], pipe["first_pass_source_points"], "frame-0 tracks")


def test_target_crop_stages(seg, pipe):
    exo = np_(pipe["exo_image"])
    _, lb = crops.letterbox(exo, seg.image_size)
    projected = np_(pipe["first_pass_projected_518"])
    n = len(projected)
    tracks = Tracks(
        coords=np.stack([np_(pipe["first_pass_source_points"]), projected]),
        vis=np.stack([np.ones(n, np.float32), np_(pipe["first_pass_vis"])]),
        conf=np.stack([np.ones(n, np.float32), np_(pipe["first_pass_conf"])]),
    )
    _, lb_src = crops.letterbox(np_(pipe["ego_image"]), seg.image_size)
    src_frame = letterbox_to_frame(np_(pipe["first_pass_source_points"]), lb_src)
    target, st = seg.cropped_target(exo, lb, tracks, 1, src_frame)
    assert_points(st["projected"], pipe["projected_exo_pixels"], "projected_exo_pixels")
    assert_points(st["kept"], pipe["kept_points"], "kept_points")
    assert float(st["box_size"]) == pytest.approx(float(pipe["box_size"]), abs=1e-4)
    assert int(st["crop_size"]) == int(pipe["crop_size"])
    assert target.crop.as_dict() == {k: int(v) for k, v in dict(pipe["crop_meta"]).items()}
    assert_image(target.image, pipe["target_crop_image"], "target_crop_image")
    assert_points(st["crop_points"], pipe["crop_points"], "crop_points")
    assert_points(target.prompts, pipe["target_points"], "target_points")
    # Each prompt is paired with the mean source point of its cluster: inside the source mask box.
    ys, xs = np.nonzero(np_(pipe["ego_mask"]))
    assert target.source_points.shape == (len(pipe["target_points"]), 2)
    assert (target.source_points[:, 0] >= xs.min() - 1).all() and (target.source_points[:, 0] <= xs.max() + 1).all()
    assert (target.source_points[:, 1] >= ys.min() - 1).all() and (target.source_points[:, 1] <= ys.max() + 1).all()
    assert ((target.visibility >= 0) & (target.visibility <= 1)).all()


def test_source_crop_stages(seg, pipe):
    src = seg.prepare_source(np_(pipe["ego_letterbox"]), np_(pipe["ego_mask_letterbox"]), need_direct=False)
    assert_image(src.crop_image, pipe["source_crop_image"], "source_crop_image")
    assert_image(src.crop_mask, pipe["source_crop_mask"], "source_crop_mask")
    assert_points(src.prompts, pipe["source_points"], "source_points", ordered=False)
    assert_points(src.first_points, pipe["first_pass_source_points"], "first_pass_source_points", ordered=False)


def test_features(crop_features, pipe):
    flat = crop_features.flatten()
    assert_close_ref(flat[pipe["feature_sample_index"]], pipe["feature_sample"], "feature sample")


def test_final_low_res(seg, crop_features, pipe):
    # Same networks and recipe; only the point-identity behaviour differs (module docstring).
    stage = VGGTSegmentor(seg.backbone, seg.head, seg.cfg, accumulate_point_identity=False)
    assert stage.cfg.refine_iterations == 1
    with torch.inference_mode():
        _, low = stage.decode(
            crop_features, np_(pipe["source_points"]), [np_(pipe["target_points"])], np_(pipe["source_crop_mask"])
        )
    assert_close_ref(low, pipe["final_low_res"], "final_low_res")


def test_recovery(seg, pipe):
    size = seg.image_size
    logits = F.interpolate(pipe["final_low_res"].float(), size=(size, size), mode="bilinear", align_corners=False)[0, 0]
    meta = crops.CropMeta.from_dict(pipe["crop_meta"])
    target = TargetInput(
        image=np_(pipe["target_crop_image"]), prompts=np_(pipe["target_points"]), frame_hw=tuple(pipe["exo_mask"].shape),
        crop=meta, source_points=np.zeros((5, 2), np.float32), visibility=np.ones(5, np.float32),
        confidence=np.ones(5, np.float32),
    )
    frame, points = seg.recover(logits, target)
    mask = frame.numpy() > 0
    ref = np_(pipe["final_mask"]) > 0
    assert mask.shape == ref.shape
    assert (mask != ref).sum() == 0, f"{(mask != ref).sum()} pixels differ from final_mask"
    assert bool((frame[:, : meta.x1] == -32).all()) and bool((frame[:, meta.x2 :] == -32).all())
    assert_points(points, pipe["final_points"], "final_points")


# ------------------------------------------------------------------------ end to end
def test_end_to_end_mask(end_to_end, pipe):
    ref = np_(pipe["final_mask"]) > 0
    mask = end_to_end.mask
    assert mask.shape == ref.shape and mask.dtype == np.bool_
    iou = (mask & ref).sum() / max(1, (mask | ref).sum())
    assert iou >= 0.98, f"IoU with the reference final_mask is {iou:.4f}"


def test_end_to_end_outputs(end_to_end, pipe):
    r = end_to_end
    h, w = pipe["exo_image"].shape[:2]
    assert r.logits.shape == (h, w) and r.logits.dtype == np.float32
    assert np.array_equal(r.mask, r.logits > 0)
    assert r.target_points.shape == r.source_points.shape == tuple(pipe["final_points"].shape)
    # Prompt order follows K-means on slightly different projections; compare as sets.
    a = np.sort(r.target_points, axis=0)
    e = np.sort(np_(pipe["final_points"]), axis=0)
    assert np.abs(a - e).max() < 2.0, "recovered target points far from the reference"
    sh, sw = pipe["ego_image"].shape[:2]
    assert (r.source_points >= 0).all() and (r.source_points[:, 0] < sw).all() and (r.source_points[:, 1] < sh).all()
    for arr in (r.visibility, r.confidence):
        assert arr.shape == (len(r.target_points),) and ((arr >= 0) & (arr <= 1)).all()
    assert 0.0 < r.score <= 1.0
    assert {"first_pass", "features", "head", "recover", "total"} <= set(r.timings)
