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
