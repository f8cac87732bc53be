"""Offline robots: a repo-id checkpoint is taken from the local Hugging Face cache, and
without it the error comes at once (no download retries) naming the option to use."""

import socket

import numpy as np
import pytest

pytest.importorskip("huggingface_hub", reason="huggingface_hub is not installed")

from vggts_ros.checkpoint import CheckpointError, resolve_checkpoint

PROXIES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy")


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty hub cache of our own; no proxy; connections are recorded."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    for name in PROXIES:
        monkeypatch.delenv(name, raising=False)
    attempts = []
    real = socket.create_connection

    def recording(address, *args, **kwargs):
        attempts.append(address)
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", recording)
    return tmp_path / "hub", attempts


def test_offline_flag_fails_without_any_connection(hub, monkeypatch):
    cache, attempts = hub
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError) as err:
        resolve_checkpoint("facebook/VGGT-1B", "model.pt")
    text = str(err.value)
    assert "HF_HUB_OFFLINE is set" in text and str(cache) in text
    assert "--vggt-checkpoint" in text and "https://huggingface.co/facebook/VGGT-1B/resolve/main/model.pt" in text
    assert attempts == []


def test_cached_file_is_used_without_network(hub, monkeypatch):
    cache, attempts = hub
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    repo = cache / "models--zbbhhh--VGGT-S"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    snap = repo / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    (snap / "main_exp.pth").write_bytes(b"weights")
    assert resolve_checkpoint("zbbhhh/VGGT-S", "main_exp.pth") == snap / "main_exp.pth"
    assert attempts == []
    # another file of the same repo is not in the cache: the unreachable endpoint is named
    with pytest.raises(CheckpointError, match="cannot be reached"):
        resolve_checkpoint("zbbhhh/VGGT-S", "other.pth")


def test_unreachable_endpoint_fails_after_one_probe(hub, monkeypatch):
    cache, attempts = hub
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    port = closed_port()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(CheckpointError) as err:
        resolve_checkpoint("zbbhhh/VGGT-S", "main_exp.pth")
    assert f"http://127.0.0.1:{port} cannot be reached" in str(err.value)
    assert "--head-checkpoint" in str(err.value)
    assert attempts == [("127.0.0.1", port)]


def test_segment_with_default_checkpoints_offline(hub, tmp_path, monkeypatch, capsys):
    import cv2

    from vggts_ros.cli import main

    _, attempts = hub
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    rng = np.random.default_rng(0)
    cv2.imwrite(str(tmp_path / "s.png"), rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    mask = np.zeros((64, 64), np.uint8)
    mask[20:40, 20:40] = 255
    cv2.imwrite(str(tmp_path / "m.png"), mask)
    rc = main(["segment", "--source", str(tmp_path / "s.png"), "--source-mask", str(tmp_path / "m.png"),
               "--target", str(tmp_path / "s.png"), "--out", str(tmp_path / "out"), "--device", "cpu",
               "--backend", "vggts"])  # auto would pick the weight-free backend: ask for the published model
    err = capsys.readouterr().err
    assert rc == 2
    assert "vggts segment: error: model.pt of Hugging Face repo 'facebook/VGGT-1B'" in err
    assert "--vggt-checkpoint" in err and "Traceback" not in err
    assert "--backend geometric" in err  # and how to do without any download
    assert len(attempts) == 1
