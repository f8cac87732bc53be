"""Two-process DDP training under torchrun (gloo): both ranks end with identical weights,
only rank 0 writes, and resuming continues the epoch and learning-rate schedule."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vggts_ros.training.toydata import write_shapes_dataset

LR = 3e-3


def _torchrun() -> list:
    exe = Path(sys.executable).with_name("torchrun")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "torch.distributed.run"]


def _train(data: Path, out: Path, epochs: int) -> dict:
    cmd = _torchrun() + [
        "--standalone", "--nproc_per_node", "2", "-m", "vggts_ros.training.cli", "train",
        "--preset", "smoke", "--vggt-checkpoint", "none", "--data", "self", "--data-root", str(data),
        "--out", str(out), "--epochs", str(epochs), "--batch-size", "2", "--lr", str(LR), "--workers", "0",
        "--device", "cpu", "--no-progress",
        "--set", "optim.lr_drops=[2]", "--set", "optim.steps_per_epoch=2", "--set", "data.adaptive_prompts=warp",
        "--set", "data.first_pass_points=20", "--set", "data.outlier_k=4",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return json.loads((out / "train_summary.json").read_text())


def test_two_process_training_and_resume(tmp_path):
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    data = tmp_path / "data"
    write_shapes_dataset(str(data), n_images=6, n_objects=2, seed=3, background="plain")
    out = tmp_path / "run"

    first = _train(data, out, epochs=2)
    assert first["world_size"] == 2 and first["start_epoch"] == 1
    digests = first["rank_weight_digests"]
    assert len(digests) == 2 and digests[0] == digests[1], "ranks disagree on the weights"
    assert [e["epoch"] for e in first["epochs"]] == [1, 2]
    assert [e["lr"] for e in first["epochs"]] == [pytest.approx(LR)] * 2
    assert first["epochs"][-1]["next_lr"] == pytest.approx(LR * 0.1)
    assert all(e["steps"] == 2 for e in first["epochs"])
    ck = sorted(p.name for p in (out / "ckpts").iterdir())
    assert ck == ["epoch_1.pth", "epoch_2.pth"], "only rank 0 writes, once per epoch"
    e2 = torch.load(str(out / "ckpts" / "epoch_2.pth"), map_location="cpu", weights_only=True)
    assert e2["epoch"] == 2 and e2["scheduler"]["last_epoch"] == 2
    e1_bytes = (out / "ckpts" / "epoch_1.pth").read_bytes()

    second = _train(data, out, epochs=3)  # --resume auto: newest checkpoint in --out
    assert second["start_epoch"] == 3 and second["resumed_from"].endswith("epoch_2.pth")
    assert [e["epoch"] for e in second["epochs"]] == [3]
    assert second["epochs"][0]["lr"] == pytest.approx(LR * 0.1), "the decayed rate continues after resuming"
    d2 = second["rank_weight_digests"]
    assert d2[0] == d2[1] and d2[0] != digests[0]
    e3 = torch.load(str(out / "ckpts" / "epoch_3.pth"), map_location="cpu", weights_only=True)
    assert e3["epoch"] == 3 and e3["scheduler"]["last_epoch"] == 3
    assert e3["optimizer"]["param_groups"][0]["lr"] == pytest.approx(LR * 0.1)
    assert (out / "ckpts" / "epoch_1.pth").read_bytes() == e1_bytes
    steps = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if '"tag": "epoch"' in l]
    assert [s["epoch"] for s in steps] == [1, 2, 3]
