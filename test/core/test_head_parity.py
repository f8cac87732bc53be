"""The Union Segmentation Head computes the reference function (fixture ``vggts_head.pt``)."""

import json

import pytest
import torch

from conftest import assert_close_ref, fixture_path, load_fixture
from helpers.head_fixture import fixture_features, head_config
from vggts_ros.config import HeadConfig
from vggts_ros.models.deterministic import fill_deterministic, weight_sums
from vggts_ros.models.union_head import UnionSegmentationHead, sample_point_features


@pytest.fixture(scope="module")
def fx():
    return load_fixture("vggts_head.pt")


@pytest.fixture(scope="module")
def head(fx):
    model = UnionSegmentationHead(head_config(fx)).eval()
    return fill_deterministic(model, fx["weight_seed"])


@pytest.fixture(scope="module")
def passes(fx, head):
    feat = fixture_features(fx)
    with torch.no_grad():
        ctx = head.encode(feat, fx["src_points"], fx["tar_points"], fx["src_masks"])
        full0, low0 = head.decode(ctx)
        full1, low1 = head.decode(ctx, low0)
    return full0, low0, full1, low1


def test_weight_sums(fx, head):
    ours = weight_sums(head)
    assert sorted(ours) == sorted(fx["weight_sums"])
    for key, ref in fx["weight_sums"].items():
        assert ours[key] == pytest.approx(ref, rel=1e-12, abs=1e-12), key


def test_src_points_feat(fx):
    feat = fixture_features(fx)
    size = fx["config"]["img_size"]
    out = sample_point_features(feat[:, 0], fx["src_points"], (size, size))
    assert_close_ref(out, fx["src_points_feat"], "src_points_feat")


def test_pass0(fx, passes):
    full0, low0, _, _ = passes
    assert_close_ref(full0, fx["pass0_pred"], "pass0_pred")
    assert_close_ref(low0, fx["pass0_low_res"], "pass0_low_res")


def test_pass1_refinement(fx, passes):
    _, _, full1, low1 = passes
    assert_close_ref(full1, fx["pass1_pred"], "pass1_pred")
    assert_close_ref(low1, fx["pass1_low_res"], "pass1_low_res")


def test_forward_and_predict(fx, head, passes):
    """The one-shot forward (stored point features, refinement from the stored pass-0
    logits, NumPy mask) and ``predict`` agree with the cached encode/decode path; inputs
    are left untouched. The fixture's pass 1 was made with fresh point features, i.e.
    ``identity="per_pass"`` (the accumulating default is tested in
    test_refinement_semantics.py)."""
    feat = fixture_features(fx)
    spf = fx["src_points_feat"].clone()
    with torch.no_grad():
        full1, low1 = head(
            feat,
            fx["src_points"],
            fx["tar_points"],
            fx["src_masks"].numpy(),
            prev_low_res=fx["pass0_low_res"],
            src_points_feat=spf,
        )
        one = slice(0, 1)  # predict() on the first pair only, to keep the test short
        full_p, low_p = head.predict(
            feat[one], fx["src_points"][one], fx["tar_points"][one], fx["src_masks"][one], refine_iterations=1,
            identity="per_pass",
        )
    assert torch.equal(spf, fx["src_points_feat"])
    assert_close_ref(full1, fx["pass1_pred"], "forward pass1")
    assert_close_ref(low1, fx["pass1_low_res"], "forward pass1 low")
    assert_close_ref(full_p, fx["pass1_pred"][one], "predict pass1")
    assert_close_ref(low_p, fx["pass1_low_res"][one], "predict pass1 low")


def test_full_size_keys_and_shapes():
    ref = json.loads(fixture_path("vggts_head_state_dict.json").read_text())
    with torch.device("meta"):
        model = UnionSegmentationHead(HeadConfig())
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert sorted(ours) == sorted(ref)
    bad = [k for k in ref if ours[k] != list(ref[k])]
    assert not bad, f"shape mismatch: {bad}"


def test_rejects_wrong_feature_size(fx, head):
    feat = fixture_features(fx)[..., :-1, :-1]
    with pytest.raises(ValueError, match="feat_map"):
        head(feat, fx["src_points"], fx["tar_points"], fx["src_masks"])


def test_float64_head(fx, head):
    """A ``.double()`` head computes in float64 end to end (no float32 casts on the way) and
    gives the reference logits (no float64 reference here: the float32 fixture tolerance)."""
    head64 = UnionSegmentationHead(head_config(fx)).eval()
    head64.load_state_dict(head.state_dict())
    head64 = head64.double()
    feat = fixture_features(fx).double()
    with torch.no_grad():
        ctx = head64.encode(feat, fx["src_points"].double(), fx["tar_points"].double(), fx["src_masks"])
        full0, low0 = head64.decode(ctx)
        full1, low1 = head64.decode(ctx, low0)
    for name, value in (("pass0_pred", full0), ("pass0_low_res", low0), ("pass1_pred", full1), ("pass1_low_res", low1)):
        assert value.dtype == torch.float64, f"{name}: {value.dtype}"
        assert_close_ref(value, fx[name], f"float64 {name}")
    assert ctx.tokens.dtype == ctx.src_map.dtype == ctx.sa_pe.dtype == torch.float64
