"""Temporal VGGT-S training machinery on a tiny CPU run: clips are decoded frame by frame
through the memory, the loss falls, the zero-initialised gate opens, the memory modules'
weights go to their own strictly loaded file and the fine-tuned head keeps the
``main_exp.pth`` layout; the plain arm of the evidence run gets exactly the same steps.

The margin test trains memory modules on a frozen per-frame head and asserts, through
``vggts evaluate --clips``, that they beat that head on the held-out frames where the
object is more than half occluded (docs/temporal.md: the margins it reached over
seeds and CPU instruction sets).
"""

import json

import pytest
import torch

from vggts_ros.models.temporal import load_temporal
from vggts_ros.models.union_head import UnionSegmentationHead
from vggts_ros.training.config import smoke_head
from vggts_ros.training.temporal_train import ClipTrainer, TemporalTrainConfig, main, smoke_temporal_config
from vggts_ros.training.toydata import write_shapes_dataset

SIZE = 56


def _arm(tmp_path, name, train, val, use_memory):
    over = {"optim.epochs": 3, "optim.lr_drops": [10], "clips.frames": 3, "model.img_size": SIZE,
            "run.feature_cache": str(tmp_path / "cache"), "eval_data.root": val, "eval_data.fixed_pairs": True,
            "eval_data.adaptive_prompts": "warp", "eval_data.first_pass_points": 20, "eval_data.outlier_k": 4,
            "eval_data.limit": 4, "run.log_every": 0}
    cfg = smoke_temporal_config(str(tmp_path / name), train, use_memory=use_memory, overrides=over)
    trainer = ClipTrainer(cfg)
    trainer.setup()
    return trainer, trainer.fit()


def test_clip_training_runs_and_writes_strict_weights(tmp_path):
    train = write_shapes_dataset(str(tmp_path / "train"), n_images=8, n_objects=2, seed=1, background="plain")["root"]
    val = write_shapes_dataset(str(tmp_path / "val"), n_images=2, n_objects=2, seed=2, background="plain")["root"]
    trainer, summary = _arm(tmp_path, "temporal", train, val, True)
    trainer.close()
    losses = [e["loss"] for e in summary["epochs"]]
    print("\ntemporal smoke: loss per epoch", [round(x, 3) for x in losses], "gate", summary["epochs"][-1]["gate"])
    assert summary["steps"] == 3 * trainer.steps_per_epoch >= 9 and losses[-1] < 0.85 * losses[0]
    assert summary["epochs"][-1]["gate"] > 0  # the memory path is being used
    assert 0.0 <= summary["epochs"][-1]["eval_overall_iou"] <= 1.0

    out = tmp_path / "temporal"
    tm = load_temporal(out / "temporal.pth", smoke_head(SIZE))
    assert all(torch.equal(a, b.cpu()) for a, b in zip(tm.state_dict().values(), trainer.temporal.state_dict().values()))
    head = UnionSegmentationHead.from_pretrained(str(out / "head.pth"), cfg=smoke_head(SIZE))
    assert all(torch.equal(a, b.cpu()) for a, b in zip(head.state_dict().values(), trainer.head.state_dict().values()))
    ckpt = torch.load(str(out / "ckpts" / "epoch_3.pth"), map_location="cpu", weights_only=True)
    assert set(ckpt) == {"model", "temporal", "temporal_config", "optimizer", "scheduler", "epoch"}
    cfg = TemporalTrainConfig.load(str(out / "config.json"))
    assert cfg.mode.use_memory and cfg.clips.frames == 3
    assert {json.loads(line)["tag"] for line in (out / "metrics.jsonl").read_text().splitlines()} == {"epoch"}

    # the baseline arm: the same clips, batches and number of steps, no memory modules
    plain, plain_summary = _arm(tmp_path, "plain", train, val, False)
    plain.close()
    assert plain.temporal is None and plain_summary["steps"] == summary["steps"]
    assert not (tmp_path / "plain" / "temporal.pth").exists()


def test_config_overrides_and_cli_errors(tmp_path, capsys):
    cfg = smoke_temporal_config(str(tmp_path), "/data")
    again = cfg.override(["temporal.memory_frames=2", "clips.blur_sigma=[1, 2]", "mode.use_memory=false",
                          "optim.lr=1e-3"])
    assert again.temporal.memory_frames == 2 and again.clips.blur_sigma == (1.0, 2.0)
    assert not again.mode.use_memory and again.base.optim.lr == 1e-3
    path = tmp_path / "c.json"
    again.save(str(path))
    assert TemporalTrainConfig.load(str(path)).to_dict() == again.to_dict()
    for bad, match in ((["clips.frames=1"], "clips.frames"), (["temporal.nope=1"], "no key"),
                       (["mode.use_memory=false", "mode.train_head=false"], "nothing to train"),
                       (["optim.lr=0"], "optim.lr")):
        with pytest.raises(ValueError, match=match):
            cfg.override(bad)
    assert main(["--preset", "smoke", "--out", str(tmp_path / "o")]) == 2
    assert "no training data" in capsys.readouterr().err
    assert main(["--preset", "smoke", "--data-root", str(tmp_path), "--set", "clips.frames=0"]) == 2


def test_two_process_clip_training(tmp_path):
    """``torchrun`` with 2 processes (gloo): both ranks end with the same head and memory
    weights, rank 0 alone writes the checkpoints and the temporal file."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    data = tmp_path / "data"
    write_shapes_dataset(str(data), n_images=4, n_objects=2, seed=3, background="plain")
    out = tmp_path / "run"
    exe = Path(sys.executable).with_name("torchrun")
    cmd = ([str(exe)] if exe.is_file() else [sys.executable, "-m", "torch.distributed.run"]) + [
        "--standalone", "--nproc_per_node", "2", "-m", "vggts_ros.training.temporal_train", "--preset", "smoke",
        "--data-root", str(data), "--out", str(out), "--set", f"model.img_size={SIZE}", "--set", "clips.frames=3",
        "--set", "optim.epochs=2", "--set", "optim.batch_size=2", "--set", "optim.steps_per_epoch=2",
        "--set", "run.log_every=0"]
    proc = subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 4
    digests = summary["rank_weight_digests"]
    assert len(digests) == 2 and digests[0] == digests[1], "ranks disagree on the weights"
    assert sorted(p.name for p in (out / "ckpts").iterdir()) == ["epoch_1.pth", "epoch_2.pth"]
    load_temporal(out / "temporal.pth", smoke_head(SIZE))


# ------------------------------------------------------------------------------ margin
# The cheapest setup found where memory reliably helps (docs/temporal.md): amodal
# truth, video-like motion, 5-frame clips at 56 px; stage A trains the per-frame head on
# the clips (x0.1 for its last 2 epochs), stage B trains only the memory modules on that
# frozen head (no teacher forcing, carried mask fused into the logits), so the plain arm
# is the stage-A head itself and the memory is all that differs.
MARGIN_SEED = 0
MARGIN = 0.015  # occluded-frame IoU, temporal minus plain; lowest seen +0.038 (21 runs, seeds 0-8, 3 ISAs; docs/temporal.md)
CLIP_SETTINGS = {"model.img_size": SIZE, "clips.frames": 5, "clips.truth": "amodal", "clips.scale": [0.9, 1.1],
                 "clips.rotate_deg": 6.0, "clips.shift": 0.06, "run.log_every": 0}


def margin_run(base, seed=MARGIN_SEED, train_images=16, val_images=16, stage_a=16, stage_b=12):
    """Stage A, stage B, then ``vggts evaluate --clips`` on held-out clips: its JSON."""
    from vggts_ros.cli import main as vggts_main

    train = write_shapes_dataset(str(base / "train"), n_images=train_images, n_objects=2, seed=1,
                                 background="plain")["root"]
    val = write_shapes_dataset(str(base / "val"), n_images=val_images, n_objects=2, seed=2,
                               background="plain")["root"]
    common = dict(CLIP_SETTINGS, **{"run.seed": seed, "run.feature_cache": str(base / "cache")})
    plain = smoke_temporal_config(str(base / "plain"), train, use_memory=False, overrides=dict(
        common, **{"optim.epochs": stage_a, "optim.lr_drops": [stage_a - 2]}))
    ClipTrainer(plain).fit()
    temporal = smoke_temporal_config(str(base / "temporal"), train, use_memory=True, overrides=dict(
        common, **{"optim.epochs": stage_b, "optim.lr_drops": [stage_b - 2], "mode.temporal_seed": seed,
                   "mode.train_head": False, "mode.teacher_forcing": 0.0, "temporal.fuse_logits": True,
                   "model.init_head": str(base / "plain" / "head.pth")}))
    ClipTrainer(temporal).fit()
    # the plain arm is the run's init_head (the frozen stage-A head); no head.pth was written
    assert not (base / "temporal" / "head.pth").exists()
    rc = vggts_main(["evaluate", "--clips", "--temporal-weights", str(base / "temporal"), "--data-root", val,
                     "--seed", "1000", "--out", str(base / "eval")])
    assert rc == 0
    return json.loads((base / "eval" / "eval.json").read_text())


def test_memory_beats_the_per_frame_head_on_occluded_frames(tmp_path):
    report = margin_run(tmp_path)
    s = report["summary"]
    print("\nheld-out IoU (frames):", {arm: {g: (round(v["iou"], 3), v["frames"]) for g, v in groups.items()}
                                      for arm, groups in s.items()})
    assert s["plain"]["occluded"]["frames"] >= 20  # enough occluded frames to mean something
    assert s["plain"]["overall"]["iou"] >= 0.05, "stage A did not leave the all-background solution"
    margin = s["temporal"]["occluded"]["iou"] - s["plain"]["occluded"]["iou"]
    assert margin >= MARGIN, f"occluded-frame IoU: plain {s['plain']['occluded']['iou']:.3f}, temporal " \
                             f"{s['temporal']['occluded']['iou']:.3f} (margin {margin:+.3f} < {MARGIN})"
