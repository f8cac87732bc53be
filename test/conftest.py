"""Shared fixtures. Parity tests read the reference fixture directory from
``VGGTS_REFERENCE_DIR`` (default: the copy shipped in ``test/fixtures/reference``).

A *seed set* (``test/fixtures/reference_seed1``, ``..._seed2``: made by
``scripts/make_reference_fixtures.py --no-copy`` with other seeds, marked by a
``seed_set.json``) holds only the files that depend on the seed; the others (``prompts.pt``,
the state-dict key lists) come from the shipped set."""

import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
DEFAULT_REFERENCE_DIR = HERE / "fixtures" / "reference"
SEED_SET_MARKER = "seed_set.json"
SEED_SET_DIRS = tuple(sorted((HERE / "fixtures").glob("reference_seed*")))


def reference_dir() -> Path:
    return Path(os.environ.get("VGGTS_REFERENCE_DIR", str(DEFAULT_REFERENCE_DIR)))


@pytest.fixture(scope="session")
def ref_dir() -> Path:
    path = reference_dir()
    if not path.is_dir():
        pytest.fail(f"reference fixture directory {path} does not exist (VGGTS_REFERENCE_DIR)")
    return path


def fixture_path(name: str) -> Path:
    """The selected set's file ``name``; a seed set's missing files are the shipped set's."""
    path = reference_dir() / name
    if not path.is_file() and (reference_dir() / SEED_SET_MARKER).is_file():
        return DEFAULT_REFERENCE_DIR / name
    return path


def load_fixture(name: str):
    import torch

    path = fixture_path(name)
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


REPO_ROOT = HERE.parent


def pytest_configure(config):
    # Child processes started by tests (nodes, CLIs) must run this source tree, not an
    # older installed copy.
    parts = [str(REPO_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(parts))
    # Keep this run's DDS traffic to itself: a domain of its own, discovery on loopback.
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    # Tests never download weights; a repo id must fail fast with the offline message.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # On a 2-core machine shared by the test process and the node processes it starts,
    # multi-threaded OpenMP turns small ops into spin-wait contests (seen: 100x slower).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    except ImportError:
        pass


def pytest_sessionfinish(session, exitstatus):
    # A run in which nothing passed proves nothing: fail it (CI must not go green on an
    # empty or fully skipped suite).
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or exitstatus != 0:
        return
    if not reporter.stats.get("passed"):
        session.exitstatus = 1


# Test groups (directories) and the ``ros`` marker: ``pytest -m "not ros" test`` runs what
# needs no ROS installation (rclpy, the generated interfaces over DDS).
ROS_DIRS = ("node",)


def pytest_collection_modifyitems(config, items):
    for item in items:
        rel = Path(str(item.fspath)).resolve().relative_to(HERE)
        if rel.parts and rel.parts[0] in ROS_DIRS:
            item.add_marker(pytest.mark.ros)
