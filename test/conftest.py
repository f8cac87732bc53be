"""Shared fixtures. Parity tests read the reference fixture directory from
``VGGTS_REFERENCE_DIR`` (default: the copy shipped in ``test/fixtures/reference``)."""

import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
DEFAULT_REFERENCE_DIR = HERE / "fixtures" / "reference"


def reference_dir() -> Path:
    return Path(os.environ.get("VGGTS_REFERENCE_DIR", str(DEFAULT_REFERENCE_DIR)))


@pytest.fixture(scope="session")
def ref_dir() -> Path:
    path = reference_dir()
    if not path.is_dir():
        pytest.fail(f"reference fixture directory {path} does not exist (VGGTS_REFERENCE_DIR)")
    return path


def load_fixture(name: str):
    import torch

    path = reference_dir() / name
    if not path.is_file():
        pytest.fail(f"reference fixture {path} is missing")
    return torch.load(str(path), map_location="cpu", weights_only=False)


def assert_close_ref(actual, expected, what: str, rel: float = 1e-4):
    """The fixtures' tolerance: max|a-b| <= rel * max(1, max|b|)."""
    import torch

    actual = torch.as_tensor(actual).double()
    expected = torch.as_tensor(expected).double()
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    err = (actual - expected).abs().max().item() if expected.numel() else 0.0
    bound = rel * max(1.0, expected.abs().max().item() if expected.numel() else 0.0)
    assert err <= bound, f"{what}: max abs error {err:.3g} > {bound:.3g}"
