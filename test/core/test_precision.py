"""Precision modes (vggts_ros.precision): TF32 flags, autocast per part, float64 runs."""

import pytest
import torch

from vggts_ros import precision
from vggts_ros.precision import PRECISION_MODES, autocast, configure_tf32, model_dtype, precision_context


@pytest.fixture
def tf32_flags():
    """Save and restore the process-wide TF32 flags around a test."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def flags():
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


@pytest.mark.parametrize("bad", ["fp32", "FLOAT32", "", "half", None, 32])
def test_unknown_mode_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="precision mode") as info:
        with precision_context(bad, "cpu"):
            pass
    assert "float32" in str(info.value) and "release" in str(info.value)
    with pytest.raises(ValueError, match="precision mode"):
        model_dtype(bad)


def test_unknown_part_is_a_clear_error():
    with pytest.raises(ValueError, match="part 'tracker'"):
        autocast("float32", "cpu", "tracker")


def test_float32_on_cuda_turns_tf32_off_and_restores(tf32_flags):
    """The flags are plain PyTorch settings, so their handling is checked without a GPU."""
    configure_tf32(True)
    with precision_context("float32", "cuda") as p:
        assert flags() == (False, False)
        assert p.dtype == torch.float32
    assert flags() == (True, True)
    with precision_context("float32", torch.device("cuda", 0)):
        assert flags() == (False, False)
    assert flags() == (True, True)


def test_tf32_is_an_opt_in(tf32_flags):
    configure_tf32(False)
    with precision_context("tf32", "cuda"):
        assert flags() == (True, True)
    assert flags() == (False, False)


def test_release_uses_pytorch_default_flags(tf32_flags):
    configure_tf32(True)
    with precision_context("release", "cuda"):
        assert flags() == (False, True)
    assert flags() == (True, True)


def test_flags_restored_after_an_error(tf32_flags):
    configure_tf32(True)
    with pytest.raises(RuntimeError, match="boom"):
        with precision_context("float32", "cuda"):
            raise RuntimeError("boom")
    assert flags() == (True, True)


@pytest.mark.parametrize("mode", PRECISION_MODES)
def test_cpu_leaves_flags_alone(tf32_flags, mode):
    for state in (True, False):
        configure_tf32(state)
        with precision_context(mode, "cpu"):
            assert flags() == (state, state)


def _matmul_dtype(mode, part, device="cpu"):
    a = torch.ones(4, 4)
    with autocast(mode, device, part):
        return (a @ a).dtype


def test_autocast_per_part():
    # bf16: the backbone only; release reproduces *CUDA* autocast, a no-op on CPU.
    assert _matmul_dtype("bf16", "backbone") == torch.bfloat16
    assert _matmul_dtype("bf16", "head") == torch.float32
    for mode in ("float32", "tf32", "release", "float64"):
        for part in ("backbone", "head"):
            assert _matmul_dtype(mode, part) == torch.float32, (mode, part)


def test_float32_disables_an_outer_autocast():
    a = torch.ones(4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with autocast("float32", "cpu", "head"):
            assert (a @ a).dtype == torch.float32


def test_release_plan_is_bf16_around_backbone_and_head():
    p = precision.plan("release")
    assert p.backbone_autocast == torch.bfloat16 and p.head_autocast == torch.bfloat16
    assert p.autocast_device == "cuda"


def test_model_dtype():
    assert model_dtype("float64") == torch.float64
    for mode in ("float32", "tf32", "bf16", "release"):
        assert model_dtype(mode) == torch.float32


def test_float64_mode_runs_backbone_and_head_in_float64():
    """to_precision(..., "float64"): every output of the backbone (tokens, features,
    tracks) and of the head is float64, and agrees with the float32 run to float32 rounding."""
    from vggts_ros.config import AggregatorConfig, BackboneConfig, HeadConfig, TrackHeadConfig
    from vggts_ros.models.backbone import VGGTBackbone
    from vggts_ros.models.deterministic import fill_deterministic
    from vggts_ros.models.union_head import UnionSegmentationHead

    agg = AggregatorConfig(img_size=56, embed_dim=32, depth=24, num_heads=2, patch_embed="conv")
    cfg = BackboneConfig(agg, TrackHeadConfig(features=16, iters=2, corr_levels=3, hidden_size=32))
    gen = torch.Generator().manual_seed(5)
    images = torch.rand(1, 2, 3, 56, 56, generator=gen)
    queries = torch.rand(1, 3, 2, generator=gen) * 55
    head_cfg = HeadConfig(img_size=28, sa_tokens=7, embed_dim=16, blocks=1, num_heads=2)
    outs = {}
    for mode in ("float32", "float64"):
        backbone = precision.to_precision(fill_deterministic(VGGTBackbone(cfg).eval(), 1), mode)
        head = precision.to_precision(fill_deterministic(UnionSegmentationHead(head_cfg).eval(), 2), mode)
        with torch.no_grad(), precision_context(mode, "cpu"):
            with autocast(mode, "cpu", "backbone"):
                out = backbone(images.to(model_dtype(mode)), queries, return_tokens=True)
            with autocast(mode, "cpu", "head"):
                feats = torch.nn.functional.interpolate(out.features[0], size=(14, 14))[None]
                mask = torch.zeros(1, 28, 28)
                mask[:, 5:15, 8:20] = 1
                full, low = head.predict(feats, queries / 2, queries / 2, mask, refine_iterations=1)
        outs[mode] = [out.tokens[-1], out.features, *out.coord_iters, out.vis, out.conf, full, low]
    for i, (a, b) in enumerate(zip(outs["float32"], outs["float64"])):
        assert a.dtype == torch.float32 and b.dtype == torch.float64, (i, a.dtype, b.dtype)
        err = (a.double() - b).abs().max().item()
        assert err <= 1e-3 * max(1.0, b.abs().max().item()), (i, err)
