"""``vggts evaluate --clips``: the per-frame head against Temporal VGGT-S on clips.

The *temporal model* is named by ``--temporal-weights``: a temporal training run's output
directory or its ``temporal.pth``. Its memory modules come from ``temporal.pth``; the
head it decodes with is ``head.pth`` beside it (what the run fine-tuned; ``--temporal-head``
names another, and without either it is the plain head); the run's ``config.json`` beside
it, when there and no ``--config`` is given, supplies the model, clip and data settings
the run used (command-line options override them). The *plain* arm is the head of
``--head-checkpoint`` (default: the run's ``model.init_head``, else the published head
for ``vggt-1b``).

Clips are ``--data self`` ("image as video" clips synthesised deterministically from a
folder of images with masks and ``--seed``) or ``--data egoexo`` (consecutive annotated
moments, :class:`~vggts_ros.training.clips.EgoExoClips`). Every arm streams the same clips
(:func:`~vggts_ros.training.clip_eval.evaluate_clips`); the result is a Markdown table
(one row per arm, IoU and frame counts overall, occluded, blurred, rest) printed and
written with a JSON file holding every frame's record.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Dict, Optional

from ..errors import UsageError
from .arguments import MODEL_PAIRS, RUN_PAIRS, apply_options, check_data, data_pairs

HEAD_FILENAME = "head.pth"
CONFIG_FILENAME = "config.json"


def temporal_model_files(source: str) -> Dict[str, Optional[str]]:
    """``{"temporal", "head", "config"}`` paths of the temporal model ``source`` names
    (``head`` and ``config`` None when absent)."""
    from ..models.temporal.checkpoint import TEMPORAL_FILENAME

    p = Path(source).expanduser()
    if p.is_dir():
        weights = p / TEMPORAL_FILENAME
        if not weights.is_file():
            raise UsageError(f"--temporal-weights {source}: the directory has no {TEMPORAL_FILENAME} (give a "
                             f"temporal training run's output directory or a {TEMPORAL_FILENAME} file)")
    elif p.is_file():
        weights = p
    else:
        raise UsageError(f"--temporal-weights {source}: no such file or directory")
    head, config = weights.parent / HEAD_FILENAME, weights.parent / CONFIG_FILENAME
    return {"temporal": str(weights), "head": str(head) if head.is_file() else None,
            "config": str(config) if config.is_file() else None}


def _config(args: argparse.Namespace, files: Optional[Dict[str, Optional[str]]]):
    """The evaluation configuration, and whether its file names a temporal architecture."""
    from .config import read_sections
    from .temporal_train import TemporalTrainConfig

    source = args.config or (files or {}).get("config")
    if source:
        if not Path(source).is_file():
            raise UsageError(f"config file not found: {source}")
        if not args.config:
            print(f"note: model, clip and data settings of the training run: {source}", file=sys.stderr)
        try:
            sections = read_sections(source)
            cfg = TemporalTrainConfig.from_dict(sections)
        except (ValueError, TypeError) as exc:
            raise UsageError(f"{source}: {exc}") from exc
        asks = bool(sections and sections.get("temporal"))
    else:
        cfg, asks = TemporalTrainConfig(), False
    if cfg.base.eval_data is None:  # clips prepared like the training data, from the given root/split
        cfg.base.eval_data = dataclasses.replace(cfg.base.data, split=args.split or "val", fixed_pairs=True)
    pairs = MODEL_PAIRS + RUN_PAIRS + data_pairs("eval_data") + [
        ("refine", "run.refine_iterations"), ("frames", "clips.frames"), ("truth", "clips.truth"),
        ("seed", "eval_data.seed"), ("memory_frames", "temporal.memory_frames")]
    return apply_options(cfg, args, pairs, args.sets), asks


def evaluate_clips_command(args: argparse.Namespace) -> int:
    import torch

    from ..checkpoint import CheckpointError
    from ..models.temporal import load_temporal
    from .clip_eval import ClipEvalReport, evaluate_clips
    from .runtime import FeatureExtractor, build_backbone, build_head, check_sizes, load_head_weights, \
        setup_distributed
    from .temporal_train import build_clips

    t0 = time.perf_counter()
    files = temporal_model_files(args.temporal_weights) if args.temporal_weights else None
    if files is None and (args.memory_off or args.temporal_head or args.memory_frames is not None):
        raise UsageError("--memory-off, --temporal-head and --memory-frames need --temporal-weights")
    cfg, asks = _config(args, files)
    base, data = cfg.base, cfg.base.eval_data
    check_data(data)
    # the architecture the weights must have: what a configuration's temporal section or the
    # command line asked for (nothing asked: the file's own)
    requested = asks or args.memory_frames is not None or any(
        s.strip().startswith("temporal.") for s in args.sets or [])
    plain_ckpt = args.head_checkpoint
    if plain_ckpt is None and not base.model.init_head and base.model.preset == "vggt-1b":
        plain_ckpt = "zbbhhh/VGGT-S"
    env = setup_distributed(base.run.device)
    try:
        if env.distributed:
            raise UsageError("clip evaluation runs in one process: start it without torchrun")
        if base.run.threads:
            torch.set_num_threads(int(base.run.threads))
        backbone = build_backbone(base.model, env.device)
        head = build_head(base.model, env.device, seed=base.run.seed)
        if plain_ckpt:
            load_head_weights(head, plain_ckpt)
        elif not base.model.init_head:
            print("warning: no --head-checkpoint: the plain arm is an untrained head", file=sys.stderr)
        check_sizes(backbone, head)
        arms = [("plain", head, None)]
        settings = {"data": dataclasses.asdict(data), "clips": dataclasses.asdict(cfg.clips),
                    "refine_iterations": int(base.run.refine_iterations),
                    "plain_head": plain_ckpt or base.model.init_head}
        if files is not None:
            temporal = load_temporal(files["temporal"], head.cfg, cfg.temporal if requested else None, env.device)
            t_head_path = args.temporal_head or files["head"]
            t_head = head
            if t_head_path:
                t_head = build_head(base.model, env.device, seed=base.run.seed)
                load_head_weights(t_head, t_head_path)
            arms.append(("temporal", t_head, temporal))
            if args.memory_off:
                arms.append(("temporal, memory off", t_head, None))
            settings.update(temporal_weights=files["temporal"], temporal_head=t_head_path or settings["plain_head"],
                            temporal_config=temporal.cfg.to_dict())
        else:
            print("note: no --temporal-weights: only the per-frame head is scored", file=sys.stderr)
        dataset = build_clips(data, cfg.clips, head.cfg.img_size, backbone, env, base.optim.batch_size)
        if len(dataset) == 0:
            raise UsageError(f"no clips in {data.root or data.coco} (limit/step leave none)")
        try:
            dataset[0]
        except RuntimeError as exc:  # every instance failed to give a clip
            raise UsageError(f"{data.root or data.coco}: {exc}") from exc
        extractor = FeatureExtractor(backbone, env.device, base.run.feature_cache, base.run.feature_cache_dtype)
        report = ClipEvalReport(settings=dict(settings, clips_scored=len(dataset)))
        for name, arm_head, arm_memory in arms:
            report.arms[name] = evaluate_clips(arm_head, arm_memory, dataset, extractor, base.run.refine_iterations)
    except (FileNotFoundError, CheckpointError, ValueError, KeyError) as exc:
        raise UsageError(str(exc)) from exc
    finally:
        env.close()
    report.seconds = time.perf_counter() - t0
    out = args.out or str(Path(base.run.out_dir) / "eval")
    paths = report.write(out, name=args.name)
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_json(), indent=2), encoding="utf-8")
        paths["json_copy"] = args.json
    print(report.table())
    print(json.dumps({"clips": len(dataset), "written": paths, "seconds": round(report.seconds, 2)}, indent=2))
    return 0
