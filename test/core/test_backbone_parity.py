"""Parity of the VGGT backbone with the reference implementation (fixtures in ``reference_dir()``).

Models are built from the config stored in each fixture, filled with the documented
deterministic weight rule, checked key by key against the fixture's ``weight_sums``, and
only then compared output by output.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from helpers import parity_tolerances as tol
from conftest import assert_close_ref, load_fixture
from vggts_ros.config import AggregatorConfig, from_dict
from vggts_ros.models.aggregator import Aggregator
from vggts_ros.models.backbone import VGGTBackbone, backbone_config_from_dict
from vggts_ros.models.deterministic import fill_deterministic, weight_sums
from vggts_ros.models.heads.track_modules.blocks import CorrBlock


def _images(seed: int, frames: int, height: int, width: int) -> torch.Tensor:
    return torch.rand((1, frames, 3, height, width), generator=torch.Generator().manual_seed(int(seed)))


# The generated weights are the fixture's bit for bit on every CPU (deterministic.py), so
# their float64 sums agree to summation-order rounding; one float32 ulp on one value of a
# tensor already moves its sum by ~1e-8.
WEIGHT_SUM_REL = 1e-12


def check_weight_sums(model: torch.nn.Module, expected: dict, what: str) -> None:
    """Same key set, then the same per-tensor sums (a shape or order mismatch changes them)."""
    got = weight_sums(model)
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    if missing or extra:
        pytest.fail(f"{what}: state-dict keys differ from the reference; missing {missing[:10]}, extra {extra[:10]}")
    bad = [
        f"{k}: {got[k]!r} != {expected[k]!r}"
        for k in sorted(expected)
        if abs(got[k] - expected[k]) > WEIGHT_SUM_REL * max(1.0, abs(expected[k]))
    ]
    if bad:
        pytest.fail(f"{what}: deterministic weights differ for {len(bad)} key(s): {bad[:5]}")


# ----------------------------------------------------------------------------- aggregator


@pytest.fixture(scope="module")
def dinov2_fixture():
    return load_fixture("aggregator_dinov2.pt")


@pytest.fixture(scope="module")
def dinov2_aggregator(dinov2_fixture):
    model = Aggregator(from_dict(AggregatorConfig, dinov2_fixture["config"])).eval()
    fill_deterministic(model, dinov2_fixture["weight_seed"])
    return model


def test_aggregator_weight_sums(dinov2_fixture, dinov2_aggregator):
    check_weight_sums(dinov2_aggregator, dinov2_fixture["weight_sums"], "aggregator_dinov2")


def test_aggregator_tokens_all_layers(dinov2_fixture, dinov2_aggregator):
    check_weight_sums(dinov2_aggregator, dinov2_fixture["weight_sums"], "aggregator_dinov2")
    cases = dinov2_fixture["cases"]
    assert cases, "fixture has no cases"
    for n, case in enumerate(cases):
        images = _images(case["image_seed"], case["S"], case["H"], case["W"])
        with torch.no_grad():
            tokens, start = dinov2_aggregator(images)
        what = f"case {n} ({case['S']} frames {case['H']}x{case['W']})"
        assert start == case["patch_start_idx"], f"{what}: patch_start_idx"
        assert len(tokens) == len(case["tokens"]), f"{what}: number of layers"
        for layer, (ours, ref) in enumerate(zip(tokens, case["tokens"])):
            assert_close_ref(ours, ref, f"{what} layer {layer}")


def test_aggregator_float64(dinov2_fixture, dinov2_aggregator):
    """A ``.double()`` aggregator (DINOv2 patch embed, RoPE, QK norm) runs in float64 and
    gives the reference tokens (the fixture has no float64 run: its float32 tolerance)."""
    model = Aggregator(from_dict(AggregatorConfig, dinov2_fixture["config"])).eval()
    model.load_state_dict(dinov2_aggregator.state_dict())
    model = model.double()
    case = dinov2_fixture["cases"][-1]
    images = _images(case["image_seed"], case["S"], case["H"], case["W"]).double()
    with torch.no_grad():
        tokens, _ = model(images)
    for layer, (ours, ref) in enumerate(zip(tokens, case["tokens"])):
        assert ours.dtype == torch.float64, f"layer {layer}: {ours.dtype}"
        assert_close_ref(ours, ref, f"float64 layer {layer}")


# ----------------------------------------------------------------------------- tiny track model


@pytest.fixture(scope="module")
def track_fixture():
    return load_fixture("vggt_track_tiny.pt")


@pytest.fixture(scope="module")
def track_model(track_fixture):
    """The tiny backbone, built and filled once (float32), weights verified."""
    model = VGGTBackbone(backbone_config_from_dict(track_fixture["config"])).eval()
    fill_deterministic(model, track_fixture["weight_seed"])
    check_weight_sums(model, track_fixture["weight_sums"], "vggt_track_tiny")
    return model


def _run_track_model(fx, model, dtype: torch.dtype):
    """Run the tiny backbone once in ``dtype`` (on a copy when casting: the cast is in place)."""
    if dtype != torch.float32:
        model = copy.deepcopy(model).to(dtype)
    _, frames, _, fh, fw = fx["feature_shape"]
    stride = model.track_head.feature_extractor.down_ratio
    images = _images(fx["image_seed"], frames, fh * stride, fw * stride)
    with torch.no_grad():
        out = model(images.to(dtype), fx["query_points"].to(dtype), return_tokens=True)
    return {"model": model, "out": out}


@pytest.fixture(scope="module")
def track_run(track_fixture, track_model):
    return _run_track_model(track_fixture, track_model, torch.float32)


@pytest.fixture(scope="module")
def track_run64(track_fixture, track_model):
    if "float64" not in track_fixture:
        pytest.fail("vggt_track_tiny.pt has no 'float64' entry (regenerate the reference fixtures)")
    return _run_track_model(track_fixture, track_model, torch.float64)


def test_track_weight_sums(track_fixture, track_run):
    check_weight_sums(track_run["model"], track_fixture["weight_sums"], "vggt_track_tiny")


def _check_features(feats, fx, ref, sample_tol: float, sum_tol: float, what: str) -> None:
    assert list(feats.shape) == list(fx["feature_shape"]), what
    flat = feats.flatten()
    tol.assert_within(flat[fx["feature_sample_index"]], ref["feature_sample"], sample_tol, f"{what} feature sample")
    got_sum, got_abs = float(flat.double().sum()), float(flat.double().abs().sum())
    ref_sum, ref_abs = float(ref["feature_sum"]), float(ref["feature_abs_sum"])
    assert abs(got_abs - ref_abs) <= sum_tol, f"{what} feature abs-sum {got_abs} != {ref_abs} (tolerance {sum_tol:.3g})"
    assert abs(got_sum - ref_sum) <= sum_tol, f"{what} feature sum {got_sum} != {ref_sum} (tolerance {sum_tol:.3g})"


def test_track_features(track_fixture, track_run):
    fx = track_fixture
    f64 = fx.get("float64")
    sample_tol = tol.value_tolerance(fx["feature_sample"], None if f64 is None else f64["feature_sample"])
    sum_tol = tol.sum_tolerance(fx, f64)
    _check_features(track_run["out"].features, fx, fx, sample_tol, sum_tol, "float32")


def test_track_features_float64(track_fixture, track_run64):
    fx, ref = track_fixture, track_fixture["float64"]
    feats = track_run64["out"].features
    assert feats.dtype == torch.float64, "a .double() backbone must give float64 features"
    _check_features(
        feats, fx, ref, tol.f64_tolerance(ref["feature_sample"]), tol.f64_tolerance(ref["feature_abs_sum"]), "float64"
    )


def test_track_last_layer_tokens(track_fixture, track_run):
    """The sample uses the fixture's feature sample indices, wrapped to the token tensor's size."""
    sample = track_fixture["last_layer_tokens_sample"]
    last = track_run["out"].tokens[-1].flatten()
    index = track_fixture["feature_sample_index"][: sample.numel()] % last.numel()
    assert_close_ref(last[index], sample, "last-layer token sample")


def test_track_coords_vis_conf(track_fixture, track_run):
    """Float32: every iteration within its own data-derived tolerance (parity_tolerances)."""
    fx = track_fixture
    out = track_run["out"]
    ref_iters = fx["coord_preds"]
    f64 = fx.get("float64")
    tols = (
        tol.coord_tolerances(ref_iters, f64["coord_preds"]) if f64 is not None else [tol.COORD_FLOOR_PX] * len(ref_iters)
    )
    assert len(out.coord_iters) == len(ref_iters)
    for i, (ours, ref) in enumerate(zip(out.coord_iters, ref_iters)):
        assert ours.shape == ref.shape, f"iteration {i}: shape {tuple(ours.shape)} != {tuple(ref.shape)}"
        tol.assert_within(ours, ref, tols[i], f"iteration {i} coordinates (px)")
    assert torch.equal(out.coords, out.coord_iters[-1])
    for key in ("vis", "conf"):
        t = tol.value_tolerance(fx[key], None if f64 is None else f64[key])
        tol.assert_within(getattr(out, key), fx[key], t, key)


def test_track_coords_vis_conf_float64(track_fixture, track_run64):
    """Float64: the reference's float64 run, every iteration to 1e-6 px."""
    ref = track_fixture["float64"]
    out = track_run64["out"]
    assert len(out.coord_iters) == len(ref["coord_preds"])
    for i, (ours, r) in enumerate(zip(out.coord_iters, ref["coord_preds"])):
        assert ours.dtype == torch.float64, f"iteration {i}: {ours.dtype}"
        tol.assert_within(ours, r, tol.F64_COORD_TOL_PX, f"float64 iteration {i} coordinates (px)")
    for key in ("vis", "conf"):
        value = getattr(out, key)
        assert value.dtype == torch.float64, key
        tol.assert_within(value, ref[key], tol.f64_track_score_tolerance(ref[key]), f"float64 {key}")


# ----------------------------------------------------------------------------- correlation modes


def test_window_correlation_matches_volume():
    """The low-memory correlation lookup computes the same values as the reference volume."""
    gen = torch.Generator().manual_seed(3)
    fmaps = torch.randn(1, 2, 16, 37, 29, generator=gen)
    targets = torch.randn(1, 2, 5, 16, generator=gen)
    coords = torch.rand(1, 2, 5, 2, generator=gen) * torch.tensor([28.0, 36.0]) - 1.0  # some near/over borders
    volume = CorrBlock(fmaps, num_levels=4, radius=3, mode="volume").corr_sample(targets, coords)
    window = CorrBlock(fmaps, num_levels=4, radius=3, mode="window").corr_sample(targets, coords)
    assert volume.shape == (1, 2, 5, 4 * 49)
    assert_close_ref(window, volume, "window vs volume correlation", rel=1e-5)
    # Spot-check one tap against a direct evaluation: integer position, level 0, zero offset.
    c = torch.tensor([[[[7.0, 11.0]]]]).expand(1, 2, 1, 2)
    corr = CorrBlock(fmaps, num_levels=1, radius=3).corr_sample(targets[:, :, :1], c)
    centre = corr[0, 0, 0, 24]  # middle of the 7x7 window
    direct = (targets[0, 0, 0] * fmaps[0, 0, :, 11, 7]).sum() / math.sqrt(16)
    assert torch.allclose(centre, direct, atol=1e-5)


def test_tracker_builds_no_host_tensors_per_iteration(monkeypatch):
    """CUDA hygiene: a host-built tensor (``torch.tensor([...], device=...)``) inside the
    iteration loop would synchronise the stream on every level of every iteration. Count
    them: 1 and 4 iterations must build the same number."""
    from vggts_ros.models.heads.track_modules import BaseTrackerPredictor

    tracker = BaseTrackerPredictor(stride=2, corr_levels=3, corr_radius=2, latent_dim=16, hidden_size=32, depth=2).eval()
    gen = torch.Generator().manual_seed(0)
    fmaps = torch.randn(1, 2, 16, 20, 24, generator=gen)
    queries = torch.rand(1, 3, 2, generator=gen) * 40
    counts = {}
    real_tensor = torch.tensor

    for iters in (1, 4):
        calls = []

        def counting(*args, **kwargs):
            calls.append(1)
            return real_tensor(*args, **kwargs)

        monkeypatch.setattr(torch, "tensor", counting)
        with torch.no_grad():
            coords, _, _ = tracker(queries, fmaps, iters=iters)
        monkeypatch.setattr(torch, "tensor", real_tensor)
        assert len(coords) == iters
        counts[iters] = len(calls)
    assert counts[1] == counts[4], f"host tensors built: {counts} (1 vs 4 iterations)"
