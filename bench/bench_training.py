"""Training smoke benchmark: the CPU smoke configuration of test/training/test_training.py, with
its loss/IoU curve and timings.

    .venv/bin/python bench/bench_training.py [--epochs 18] [--threads 2] [--out DIR]
    .venv/bin/python bench/bench_training.py --full-head   # one step of the 518-px head too

Prints per epoch: mean train loss, train IoU, held-out IoU (other images, COCO RLE),
learning rate and median seconds per step (features read from the cache after epoch 1),
plus the backbone's seconds per pair. With ``--full-head``: forward+backward time of one
training step of the full-size head (518 px, 128 channels, batch 2, one half refined) on
random features, the part of a real step that is not the frozen backbone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from vggts_ros.training.config import smoke_config  # noqa: E402
from vggts_ros.training.toydata import write_shapes_dataset  # noqa: E402
from vggts_ros.training.trainer import Trainer  # noqa: E402


def smoke(args) -> dict:
    base = Path(args.out or tempfile.mkdtemp(prefix="vggts_bench_train_"))
    t0 = time.perf_counter()
    write_shapes_dataset(str(base / "train"), n_images=24, n_objects=2, seed=1, background="plain")
    val = write_shapes_dataset(str(base / "val"), n_images=8, n_objects=2, seed=2, png_pairs=False, coco=True,
                               background="plain")
    cfg = smoke_config(str(base / "run"), str(base / "train"),
                       {"run.feature_cache": str(base / "cache"), "optim.epochs": args.epochs, "run.seed": args.seed})
    cfg.eval_data = dataclasses.replace(cfg.data, root=val["root"], coco=val["coco"])
    trainer = Trainer(cfg)
    trainer.setup()
    before = trainer.evaluate().mean_iou()
    t_fit = time.perf_counter()
    summary = trainer.fit()
    fit_s = time.perf_counter() - t_fit
    print(f"held-out IoU of the untrained head: {before:.3f}")
    print("epoch  loss    train-IoU  held-out-IoU  lr       s/step")
    for e in summary["epochs"]:
        print(f"{e['epoch']:5d}  {e['loss']:.3f}  {e['iou']:9.3f}  {e['eval_overall_iou']:12.3f}  {e['lr']:.1e}  "
              f"{e['seconds_per_step']:.3f}")
    steps = sum(e["steps"] for e in summary["epochs"])
    result = {
        "heldout_iou_before": round(before, 4),
        "heldout_iou_after": round(summary["epochs"][-1]["eval_overall_iou"], 4),
        "loss_first_epoch": round(summary["epochs"][0]["loss"], 4),
        "loss_last_epoch": round(summary["epochs"][-1]["loss"], 4),
        "steps": steps, "batch_size": cfg.optim.batch_size,
        "median_seconds_per_step_cached": round(sorted(e["seconds_per_step"] for e in summary["epochs"][1:])[
            len(summary["epochs"][1:]) // 2], 4) if len(summary["epochs"]) > 1 else None,
        "seconds_per_step_epoch1_with_backbone": round(summary["epochs"][0]["seconds_per_step"], 4),
        "backbone_seconds_per_pair": round(summary["backbone_seconds_per_pair"] or 0.0, 4),
        "fit_seconds": round(fit_s, 1), "total_seconds": round(time.perf_counter() - t0, 1),
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result, indent=2))
    return result


def full_head_step(batch: int = 2) -> float:
    from vggts_ros.config import HeadConfig
    from vggts_ros.models.union_head import UnionSegmentationHead
    from vggts_ros.training.losses import segmentation_loss
    from vggts_ros.training.trainer import HeadTrainStep

    torch.manual_seed(0)
    head = UnionSegmentationHead(HeadConfig())
    step = HeadTrainStep(head)
    opt = torch.optim.AdamW(head.parameters(), lr=5e-5, weight_decay=1e-4)
    feats = torch.randn(batch, 2, 128, 259, 259)
    pts = torch.rand(batch, 5, 2) * 517
    mask = (torch.rand(batch, 518, 518) > 0.7).float()
    t0 = time.perf_counter()
    logits = step(feats, pts, pts, mask, n_plain=batch - batch // 2, refine_time=1)
    loss = segmentation_loss(logits, mask)["loss"]
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
    opt.step()
    seconds = time.perf_counter() - t0
    print(f"full-size head training step (518 px, batch {batch}): {seconds:.2f} s")
    return seconds


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=18)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", help="working directory (default: a temporary one)")
    p.add_argument("--full-head", action="store_true", help="also time one step of the full-size head")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    smoke(args)
    if args.full_head:
        full_head_step()
    return 0


if __name__ == "__main__":
    sys.exit(main())
