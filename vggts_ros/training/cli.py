"""``vggts train`` and ``vggts evaluate`` (also ``python -m vggts_ros.training.cli ...``).

Examples::

    # paired fine-tuning on Ego-Exo4D from the published head, 4 GPUs
    torchrun --nproc_per_node 4 -m vggts_ros.training.cli train --data egoexo \\
        --data-root /data/egoexo --split train --init-head zbbhhh/VGGT-S --out runs/ft

    # single-image self-training on a COCO-style folder
    vggts train --data self --coco /data/coco/annotations/instances_train2017.json \\
        --images-dir /data/coco/train2017 --out runs/self

    # evaluation, both directions, table + JSON + worst-case overlays
    vggts evaluate --data egoexo --data-root /data/egoexo --split val \\
        --head-checkpoint runs/ft/ckpts/epoch_12.pth --out runs/ft/eval

    # clips: per-frame head vs Temporal VGGT-S, overall / occluded / blurred / rest
    vggts evaluate --clips --data self --data-root /data/val_images \\
        --head-checkpoint runs/plain/head.pth --temporal-weights runs/temporal --out runs/temporal/eval

Every option maps onto :class:`~vggts_ros.training.config.TrainConfig`; ``--set
section.key=value`` reaches the rest, ``--config FILE`` (YAML/JSON) gives a starting point.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

from ..errors import UsageError, run_command
from .arguments import (MODEL_PAIRS, RUN_PAIRS, add_common_arguments, apply_options, base_config, check_data,
                        data_pairs)


def cmd_train(args: argparse.Namespace) -> int:
    from ..checkpoint import CheckpointError
    from .trainer import train

    import dataclasses

    pairs = MODEL_PAIRS + RUN_PAIRS + data_pairs("data") + [
        ("init_head", "model.init_head"), ("epochs", "optim.epochs"), ("lr", "optim.lr"), ("resume", "run.resume"),
    ]
    cfg = apply_options(base_config(args), args, pairs, [])
    if args.eval_root:
        # evaluate on data prepared like the training data, from another root/split
        cfg.eval_data = dataclasses.replace(cfg.data, root=args.eval_root, split=args.eval_split or "val",
                                            fixed_pairs=True, coco=None)
    cfg = apply_options(cfg, args, [], args.sets)
    if args.no_progress:
        cfg.run.progress = False
    check_data(cfg.data)
    if cfg.eval_data is not None:
        check_data(cfg.eval_data)
    try:
        summary = train(cfg)
    except (FileNotFoundError, CheckpointError, ValueError, KeyError) as exc:
        raise UsageError(str(exc)) from exc
    if summary is not None and int(__import__("os").environ.get("RANK", "0")) == 0:
        last = summary["epochs"][-1] if summary["epochs"] else None
        out = {"out_dir": cfg.run.out_dir, "world_size": summary["world_size"], "start_epoch": summary["start_epoch"],
               "epochs_trained": len(summary["epochs"]),
               "last_epoch": last}
        print(json.dumps(out, indent=2, default=str))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import dataclasses

    if args.clips:
        from .clip_eval_command import evaluate_clips_command

        return evaluate_clips_command(args)
    for option in ("temporal_weights", "temporal_head", "frames", "memory_frames", "truth", "seed"):
        if getattr(args, option) is not None:
            raise UsageError(f"--{option.replace('_', '-')} applies to clips: add --clips")
    if args.memory_off:
        raise UsageError("--memory-off applies to clips: add --clips")

    import torch

    from ..checkpoint import CheckpointError
    from .evaluate import evaluate
    from .runtime import (FeatureExtractor, build_backbone, build_dataset, build_head, check_sizes,
                          ensure_projections, load_head_weights, setup_distributed)

    pairs = MODEL_PAIRS + RUN_PAIRS + data_pairs("eval_data") + [
        ("refine", "run.refine_iterations"), ("worst", "run.worst_overlays")]
    cfg = base_config(args)
    if cfg.eval_data is None:  # evaluate what the configuration trained on unless told otherwise
        cfg.eval_data = dataclasses.replace(cfg.data, split=args.split or "val")
    cfg = apply_options(cfg, args, pairs, args.sets)
    if args.no_progress:
        cfg.run.progress = False
    data = cfg.eval_data
    check_data(data)
    head_ckpt = args.head_checkpoint
    if head_ckpt is None and cfg.model.preset == "vggt-1b":
        head_ckpt = "zbbhhh/VGGT-S"
    env = setup_distributed(cfg.run.device)
    try:
        if cfg.run.threads:
            torch.set_num_threads(int(cfg.run.threads))
        backbone = build_backbone(cfg.model, env.device)
        head = build_head(cfg.model, env.device, seed=cfg.run.seed)
        if head_ckpt:
            load_head_weights(head, head_ckpt)
        elif env.is_main:
            print("warning: no --head-checkpoint: evaluating an untrained head", file=sys.stderr)
        check_sizes(backbone, head)
        dataset = build_dataset(data, head.cfg.img_size, train=False, keep_frames=cfg.run.worst_overlays > 0)
        ensure_projections(dataset, backbone, env, cfg.optim.batch_size, progress=cfg.run.progress)
        extractor = FeatureExtractor(backbone, env.device, cfg.run.feature_cache, cfg.run.feature_cache_dtype)
        report = evaluate(head, extractor, dataset, data, batch_size=cfg.optim.batch_size,
                          refine_iterations=cfg.run.refine_iterations, worst_k=cfg.run.worst_overlays, env=env,
                          progress=cfg.run.progress, num_workers=cfg.run.num_workers,
                          identity=cfg.model.point_identity)
    except (FileNotFoundError, CheckpointError, ValueError, KeyError) as exc:
        raise UsageError(str(exc)) from exc
    finally:
        env.close()
    if env.is_main:
        out = args.out or str(Path(cfg.run.out_dir) / "eval")
        paths = report.write(out, name=args.name)
        if args.json:
            Path(args.json).write_text(json.dumps(report.to_json(), indent=2), encoding="utf-8")
        print(report.table())
        print(json.dumps({"written": paths, "seconds": round(report.seconds, 2)}, indent=2))
    return 0


def add_commands(subparsers) -> None:
    """Register ``train`` and ``evaluate`` on an argparse sub-parser set (used by ``vggts``)."""
    tr = subparsers.add_parser("train", help="train the segmentation head (self-training or Ego-Exo4D pairs)",
                               description="Train the Union Segmentation Head on a frozen VGGT backbone. "
                                           "Runs under torchrun for DDP.")
    add_common_arguments(tr)
    tr.add_argument("--epochs", type=int, help="last epoch (default 12)")
    tr.add_argument("--lr", type=float, help="AdamW learning rate (default 5e-5)")
    tr.add_argument("--init-head", help="start from this head checkpoint (main_exp.pth) instead of scratch")
    tr.add_argument("--resume", help="auto (newest checkpoint in --out), none, or a checkpoint path")
    tr.add_argument("--eval-root", help="also evaluate after every epoch on this data root")
    tr.add_argument("--eval-split", help="split of the evaluation data (egoexo)")
    tr.set_defaults(func=cmd_train)

    ev = subparsers.add_parser("evaluate", help="correspondence metrics of a head on paired data; "
                                                "plain vs temporal on clips (--clips)",
                               description="IoU, location error, contour accuracy and visibility balanced "
                                           "accuracy per direction; table, JSON and worst-case overlays.")
    add_common_arguments(ev)
    ev.add_argument("--head-checkpoint", help="head weights (main_exp.pth or a training checkpoint); "
                                              "default zbbhhh/VGGT-S for vggt-1b (with --clips: the plain arm, "
                                              "default the temporal run's model.init_head)")
    ev.add_argument("--refine", type=int, help="refinement passes (default 1)")
    ev.add_argument("--worst", type=int, help="overlays of the k worst pairs (default 8)")
    ev.add_argument("--name", default="eval", help="base name of the output files")
    ev.add_argument("--json", help="also write the JSON report here")
    cl = ev.add_argument_group("clips (Temporal VGGT-S)", "--clips scores clips frame by frame: the per-frame "
                               "head (plain) against the temporal model, overall and on occluded, blurred and "
                               "the remaining frames")
    cl.add_argument("--clips", action="store_true", help="evaluate on clips instead of image pairs")
    cl.add_argument("--temporal-weights", help="the temporal model: a temporal training run's output directory "
                                               "(temporal.pth, with head.pth and config.json when there) or a "
                                               "temporal.pth file")
    cl.add_argument("--temporal-head", help="head of the temporal arm (default: head.pth beside the temporal "
                                            "weights, else the plain head)")
    cl.add_argument("--memory-off", action="store_true",
                    help="also score the temporal arm's head with its memory switched off")
    cl.add_argument("--frames", type=int, help="frames per clip (clips.frames)")
    cl.add_argument("--memory-frames", type=int,
                    help="memory size K the temporal weights must have (checked, not changed)")
    cl.add_argument("--truth", choices=("visible", "amodal"), help="self: ground truth of the synthetic clips")
    cl.add_argument("--seed", type=int, help="self: seed the synthetic clips are drawn from")
    ev.set_defaults(func=cmd_evaluate)


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m vggts_ros.training.cli train|evaluate ...`` (what torchrun starts): the
    same commands, options and error handling as ``vggts train|evaluate``."""
    parser = argparse.ArgumentParser(prog="vggts", description="VGGT-S training and evaluation")
    add_commands(parser.add_subparsers(dest="command", required=True))
    return run_command(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
