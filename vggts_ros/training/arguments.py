"""Command-line arguments shared by ``vggts train``, ``vggts evaluate`` and
``vggts evaluate --clips``: the common options, the (option -> ``section.key``) pairs
they set, and turning them into ``--set``-style overrides of a training configuration.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import List

from ..errors import UsageError
from .config import DATA_KINDS, DIRECTIONS, MODEL_PRESETS, TrainConfig


def base_config(args: argparse.Namespace) -> TrainConfig:
    if args.config:
        if not Path(args.config).is_file():
            raise UsageError(f"config file not found: {args.config}")
        try:
            return TrainConfig.load(args.config)
        except ValueError as exc:
            raise UsageError(f"{args.config}: {exc}") from exc
    return TrainConfig()


def assignments(args: argparse.Namespace, pairs) -> List[str]:
    """``section.key=value`` overrides for the (argument, config key) ``pairs`` given on
    the command line (``--vggt-checkpoint none``: no backbone weights)."""
    sets = []
    for attr, key in pairs:
        value = getattr(args, attr, None)
        if value is None:
            continue
        if key == "model.vggt_checkpoint" and str(value).lower() == "none":
            value = None
        sets.append(f"{key}={json.dumps(value)}")
    return sets


def apply_options(cfg, args: argparse.Namespace, pairs, extra: List[str]):
    """``cfg`` (a TrainConfig or TemporalTrainConfig) with the ``pairs`` given on the command
    line and the ``--set`` items ``extra`` applied; a bad value is a UsageError."""
    sets = assignments(args, pairs)
    try:
        return cfg.override(sets + list(extra or []))
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    """The options ``train``, ``evaluate`` and ``evaluate --clips`` share."""
    p.add_argument("--config", help="YAML/JSON training configuration to start from")
    p.add_argument("--preset", choices=MODEL_PRESETS, help="network architecture (default vggt-1b)")
    p.add_argument("--img-size", type=int, help="network input side (default: the preset's)")
    p.add_argument("--vggt-checkpoint", help="VGGT model.pt: path, directory, HF repo id, or 'none' for "
                                             "deterministic test weights")
    p.add_argument("--data", choices=DATA_KINDS, help="self (single-image self-training) or egoexo")
    p.add_argument("--data-root", help="image/mask folder (self) or Ego-Exo4D SegSwap root (egoexo)")
    p.add_argument("--coco", help="self: COCO instances JSON (RLE or polygons) instead of PNG pairs")
    p.add_argument("--images-dir", help="self: folder of the COCO images")
    p.add_argument("--split", help="egoexo: split name (train, val, ...)")
    p.add_argument("--directions", nargs="+", choices=DIRECTIONS, help="egoexo: directions to use")
    p.add_argument("--projections", help="egoexo: cached first-pass projections JSON (computed when missing)")
    p.add_argument("--limit", type=int, help="use at most this many samples")
    p.add_argument("--step", type=int, help="use every n-th sample")
    p.add_argument("--out", help="output directory")
    p.add_argument("--device", help="auto, cpu, cuda")
    p.add_argument("--batch-size", type=int, help="batch size per process")
    p.add_argument("--workers", type=int, help="data loader workers per process")
    p.add_argument("--feature-cache", help="directory caching backbone features between epochs")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="any configuration value, e.g. optim.lr_drops=[8,11] (repeatable)")


def data_pairs(section: str):
    """(argument, key) pairs of the data options for ``section`` (data or eval_data)."""
    return [("data", f"{section}.kind"), ("data_root", f"{section}.root"), ("coco", f"{section}.coco"),
            ("images_dir", f"{section}.images_dir"), ("split", f"{section}.split"),
            ("directions", f"{section}.directions"), ("projections", f"{section}.projections"),
            ("limit", f"{section}.limit"), ("step", f"{section}.step")]


MODEL_PAIRS = [("preset", "model.preset"), ("img_size", "model.img_size"), ("vggt_checkpoint", "model.vggt_checkpoint")]
RUN_PAIRS = [("out", "run.out_dir"), ("device", "run.device"), ("batch_size", "optim.batch_size"),
             ("workers", "run.num_workers"), ("feature_cache", "run.feature_cache")]




def check_data(data) -> None:
    """A UsageError when a data section names no data or data that is not there."""
    if data.kind == "self" and not data.coco and not data.root:
        raise UsageError("self-training needs --data-root (image/mask PNG pairs) or --coco")
    if data.kind == "egoexo" and not data.root:
        raise UsageError("--data egoexo needs --data-root (the SegSwap-layout Ego-Exo4D folder)")
    if data.root and not Path(data.root).is_dir():
        raise UsageError(f"data root {data.root} is not a directory")
    if data.coco and not Path(data.coco).is_file():
        raise UsageError(f"COCO file {data.coco} not found")
