"""Shared by the pipeline parity tests (``pipeline_ego2exo.pt``, ``pipeline_exo2ego.pt``).

Networks: the backbone of ``vggt_track_tiny.pt`` (its config and weight seed) and the
full-size head (the ``vggts_head.pt`` config at the image size and ``sa_tokens`` named in
the pipeline fixture's note, weight seed ``head_weight_seed``), both filled with the
fixtures' deterministic rule and checked key by key before any output is compared.

**Float32 tolerances** (``parity_tolerances.py``). The tracker amplifies float32 rounding
(~30x per iteration), so a float32 first pass is only reproducible across CPUs to about the
size of the stored float32-vs-float64 drift ``d = |ref32 - ref64|`` (README "Added keys").
Our float32 run and the reference's are both within about ``d`` of the exact value, so they
are compared with ``DRIFT_FACTOR * d`` (2 for the two runs, 1 for margin). What depends on
the first pass downstream (the end-to-end logits) gets the same treatment: that factor times
the logit change the stored drift causes. Float64 runs are compared to 1e-6 px / 1e-9
relative (``F64_*``).

**Shared work** (the suite's cost is a few full-size head decodes and backbone passes):
the networks are built and filled once per session (both pipeline fixtures name the same
ones; each fixture's weight fingerprints are still checked), the float64 segmentor casts a
copy of them, and the first-pass stage tests read the tracks of the end-to-end run
(:func:`run_end_to_end`) instead of running that backbone pass a second time.
"""

from __future__ import annotations

import copy
import dataclasses
import re

import numpy as np
import pytest
import torch

from helpers import parity_tolerances as ptol
from conftest import load_fixture
from vggts_ros.config import HeadConfig, PipelineConfig
from vggts_ros.models.backbone import VGGTBackbone, backbone_config_from_dict
from vggts_ros.models.deterministic import fill_deterministic, weight_sums
from vggts_ros.pipeline import VGGTSegmentor

COORD_TOL = 1e-2  # px, stages that do not depend on the tracker (README "Tolerances")


def np_(x) -> np.ndarray:
    return x.numpy() if torch.is_tensor(x) else np.asarray(x)


def check_weight_sums(model, expected, what):
    got = weight_sums(model)
    assert sorted(got) == sorted(expected), f"{what}: state-dict keys differ from the reference"
    bad = [k for k in expected if abs(got[k] - expected[k]) > 1e-6 * max(1.0, abs(expected[k]))]
    assert not bad, f"{what}: deterministic weights differ for {bad[:5]}"


def sorted_rows(a) -> np.ndarray:
    a = np.asarray(a, np.float64).reshape(-1, 2)
    return a[np.lexsort(a.T[::-1])]


def assert_points(actual, expected, what, ordered=True, tol=COORD_TOL):
    a, e = np.asarray(actual, np.float64).reshape(-1, 2), np_(expected).astype(np.float64).reshape(-1, 2)
    if not ordered:
        a, e = sorted_rows(a), sorted_rows(e)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    err = np.abs(a - e).max()
    assert err <= tol, f"{what}: max error {err:.3g} px > {tol:.3g}"


def assert_image(actual, expected, what, tol=1):
    """uint8 views: cv2's area resampling may round differently by one level across builds."""
    a, e = np.asarray(actual).astype(np.int64), np_(expected).astype(np.int64)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    assert np.abs(a - e).max() <= tol, f"{what}: differs by {np.abs(a - e).max()}"


def assert_close(actual, expected, what, tol):
    a, e = torch.as_tensor(actual).double(), torch.as_tensor(expected).double()
    assert a.shape == e.shape, f"{what}: shape {tuple(a.shape)} != {tuple(e.shape)}"
    err = (a - e).abs().max().item()
    assert err <= tol, f"{what}: max abs error {err:.3g} > {tol:.3g}"


def drift_tolerance(float32, float64) -> float:
    """``DRIFT_FACTOR`` times the stored float32-vs-float64 drift (module docstring)."""
    return max(ptol.DRIFT_FACTOR * ptol.drift(float32, float64), ptol.COORD_FLOOR_PX)


def head_config(pipe, head_fx) -> HeadConfig:
    """The ``vggts_head.pt`` config with the image size / sa_tokens named in the note."""
    match = re.search(r"img_size\s*=?\s*(\d+)\D+sa_tokens\s*=?\s*(\d+)", str(pipe["note"]))
    assert match, f"cannot read the head size from the fixture note: {pipe['note']!r}"
    known = {f.name for f in dataclasses.fields(HeadConfig)}
    cfg = {k: v for k, v in head_fx["config"].items() if k in known}
    cfg.update(img_size=int(match.group(1)), sa_tokens=int(match.group(2)))
    return HeadConfig(**cfg)


_NETWORKS: dict = {}


def build_networks(pipe):
    """(backbone, head) of a pipeline fixture in float32, weights checked key by key.

    Built once per session for each (seeds, head config) and shared: callers must not
    change them in place (:func:`segmentors` casts a copy to float64). The fingerprints
    are checked on every call, for this fixture's stored sums."""
    from vggts_ros.models.union_head import UnionSegmentationHead

    track_fx, head_fx = load_fixture("vggt_track_tiny.pt"), load_fixture("vggts_head.pt")
    assert pipe["weight_seed"] == track_fx["weight_seed"]
    cfg = head_config(pipe, head_fx)
    key = (int(track_fx["weight_seed"]), int(pipe["head_weight_seed"]), repr(track_fx["config"]), repr(cfg))
    if key not in _NETWORKS:
        backbone = VGGTBackbone(backbone_config_from_dict(track_fx["config"])).eval()
        fill_deterministic(backbone, track_fx["weight_seed"])
        head = fill_deterministic(UnionSegmentationHead(cfg).eval(), pipe["head_weight_seed"])
        _NETWORKS[key] = backbone, head
    backbone, head = _NETWORKS[key]
    check_weight_sums(backbone, track_fx["weight_sums"], "backbone")
    check_weight_sums(head, pipe["head_weight_sums"], "head")
    return backbone, head


def segmentors(pipe):
    """``(seg, seg64)``: the default float32 pipeline on the fixture's networks, and a
    ``precision="float64"`` one on a copy (the float64 cast is in place)."""
    backbone, head = build_networks(pipe)
    seg = VGGTSegmentor(backbone, head, PipelineConfig(), device="cpu")
    seg64 = VGGTSegmentor(copy.deepcopy(backbone), copy.deepcopy(head), PipelineConfig(precision="float64"),
                          device="cpu")
    assert seg.backbone.dtype == torch.float32 and next(seg.head.parameters()).dtype == torch.float32
    return seg, seg64


def module_fixtures(file_name: str):
    """The module fixtures every pipeline parity module starts from: ``pipe`` (the
    fixture file's contents) and the float32 / float64 segmentors ``seg`` / ``seg64`` on
    its networks. Bind them as module globals: ``pipe, segs, seg, seg64 = module_fixtures(...)``."""

    @pytest.fixture(scope="module", name="pipe")
    def pipe_fixture():
        return load_fixture(file_name)

    @pytest.fixture(scope="module", name="segs")
    def segs_fixture(pipe):
        return segmentors(pipe)

    @pytest.fixture(scope="module", name="seg")
    def seg_fixture(segs):
        return segs[0]

    @pytest.fixture(scope="module", name="seg64")
    def seg64_fixture(segs):
        return segs[1]

    return pipe_fixture, segs_fixture, seg_fixture, seg64_fixture


def run_end_to_end(seg, source_image, source_mask, view, keep_features: bool = False):
    """One default ``_run`` for one object and one target: (result, trace) where the trace
    holds the pipeline's own sources, first-pass tracks and target inputs, and with
    ``keep_features`` the output of each backbone pass (``trace["features"]``: first pass,
    features pass), recorded as the pipeline computed them."""
    trace: dict = {}
    if keep_features:
        compute = seg.backbone_features

        def recording(*args, **kwargs):
            out = compute(*args, **kwargs)
            trace.setdefault("features", []).append(out)
            return out

        seg.backbone_features = recording
    try:
        with torch.inference_mode():
            result = seg._run(np_(source_image), [np_(source_mask) > 0], [view], trace)[0][0]
    finally:
        if keep_features:
            del seg.backbone_features  # the class's method again
    return result, trace


def float64_model_logits(seg64, features64, source, target) -> torch.Tensor:
    """The float64 model's frame logits for one target input (its crop and prompts) given
    the float64 features of ``[source zoom, target image]``: the function a float32 run
    computes, evaluated without float32 rounding."""
    with torch.inference_mode():
        full, _ = seg64.decode(features64, source.prompts, [target.prompts], source.crop_mask)
        return seg64.recover(full[0, 0], target)[0].double()


def float32_logit_tolerance(logits64) -> float:
    """Float32 rounding of the features pass and the head (no iterative amplification: the
    tracker is not on this path): the fixtures' relative tolerance ``REL_FLOOR``."""
    return ptol.REL_FLOOR * max(1.0, float(torch.as_tensor(logits64).abs().max()))


def nearest_labels(points, centres) -> np.ndarray:
    """The K-means assignment a set of centres makes: each point's nearest centre."""
    p, c = np.asarray(points, np.float64).reshape(-1, 2), np.asarray(centres, np.float64).reshape(-1, 2)
    return np.argmin(((p[:, None] - c[None]) ** 2).sum(-1), axis=1)


def match_points(points_a, points_b, tol: float):
    """Indices ``m``, a one-to-one pairing of the two sets (the assignment with the least
    total distance; repeated points, e.g. tracks clipped to a border, pair up in any
    order), with every ``|points_a[i] - points_b[m[i]]| <= tol``; None where the two sets do
    not agree point for point."""
    from scipy.optimize import linear_sum_assignment

    a, b = np.asarray(points_a, np.float64).reshape(-1, 2), np.asarray(points_b, np.float64).reshape(-1, 2)
    if a.shape != b.shape:
        return None
    dist = np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1))
    rows, match = linear_sum_assignment(dist)
    if dist[rows, match].max() > tol:
        return None
    return match


def same_partition(points_a, centres_a, points_b, centres_b, tol: float) -> bool:
    """Whether two clusterings of two point sets that agree point for point within ``tol``
    group the points the same way (labels up to renaming)."""
    match = match_points(points_a, points_b, tol)
    if match is None:
        return False
    la, lb = nearest_labels(points_a, centres_a), nearest_labels(points_b, centres_b)[match]
    pairs = set(zip(la.tolist(), lb.tolist()))
    return len(pairs) == len({x for x, _ in pairs}) == len({y for _, y in pairs})


def traced_first_pass(trace, direct: bool, reference_points):
    """The first-pass tracks of an end-to-end ``trace`` (its K-means queries: ``direct``
    points of an uncropped target, else the first-pass points), columns in the order of
    ``reference_points``."""
    src = trace["sources"][0]
    tracks = trace["tracks"][0][1 if direct else 0]
    idx = reference_order(src.direct_points if direct else src.first_points, reference_points)
    return type(tracks)(tracks.coords[:, idx], tracks.vis[:, idx], tracks.conf[:, idx])


def reference_order(ours, reference) -> np.ndarray:
    """Indices ``idx`` with ``ours[idx] == reference`` row for row: the pipeline's K-means
    points are the reference's exactly, possibly listed in another order."""
    ours, ref = np.asarray(ours, np.float64).reshape(-1, 2), np_(reference).astype(np.float64).reshape(-1, 2)
    o, r = np.lexsort(ours.T[::-1]), np.lexsort(ref.T[::-1])
    assert ours.shape == ref.shape and np.array_equal(ours[o], ref[r]), "the query points differ from the reference's"
    idx = np.empty_like(o)
    idx[r] = o
    return idx


def network_logits(low: torch.Tensor, size: int) -> torch.Tensor:
    """The head's upsampling of low-res logits to the network size: ``[size, size]``."""
    x = torch.as_tensor(low).float().reshape(1, 1, *low.shape[-2:])
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)[0, 0]
