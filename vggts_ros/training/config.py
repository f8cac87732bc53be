"""Typed configuration of training and evaluation, shared by the CLI, the trainer and the tests.

A :class:`TrainConfig` is four sections (``model``, ``data``, ``optim``, ``run``) plus an
optional ``eval_data`` section for validation after every epoch. It round-trips through
plain dicts (YAML/JSON files) and accepts dotted overrides such as ``optim.lr=1e-3``.

Defaults are the paper's recipe (AdamW 5e-5, weight decay 1e-4, 12 epochs with x0.1 drops
after epochs 8 and 11, grad-norm clip 1.0, 20 * focal + dice, half of each batch refined
once). The ``smoke`` model preset is a tiny network for CPU tests; it is meaningless on
real images.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..config import (
    AggregatorConfig,
    BackboneConfig,
    HeadConfig,
    TrackHeadConfig,
    model_preset,
)
from ..schema import assign, from_dict

MODEL_PRESETS = ("vggt-1b", "test-tiny", "smoke")
DATA_KINDS = ("self", "egoexo")
DIRECTIONS = ("ego2exo", "exo2ego")
ADAPTIVE_PROMPTS = ("backbone", "warp")


@dataclass
class ModelSection:
    """Which networks to build and where their weights come from."""

    # vggt-1b (published architecture), test-tiny (the parity fixture's backbone) or smoke
    # (a tiny CPU network for tests, see smoke_backbone()/smoke_head()).
    preset: str = "vggt-1b"
    # VGGT model.pt (path, directory or HF repo id). None: fill the backbone with the
    # deterministic rule (seed backbone_seed), which only makes sense for tests.
    vggt_checkpoint: Optional[str] = "facebook/VGGT-1B"
    backbone_seed: int = 0
    # Without a checkpoint: "deterministic" (the fixtures' rule everywhere) or "content"
    # (the rule for the aggregator and tracker, an identity-like DPT decoder; see
    # runtime.content_preserving_dpt_init). Random deep ReLU stacks map every input to
    # nearly the same direction, so the plain rule's track features barely tell objects
    # apart (cross-view similarity AUC 0.72 vs 0.98 for the tokens); "content" keeps 0.95.
    backbone_init: str = "content"
    # Start the head from a main_exp.pth (fine-tuning); None: fresh initialisation.
    init_head: Optional[str] = None
    # Fresh heads: deterministic rule with this seed, or None for PyTorch's default init
    # (seeded by run.seed).
    head_seed: Optional[int] = None
    # "float32" (paper) or "bfloat16"/"float16" autocast for the frozen aggregator only.
    backbone_dtype: str = "float32"
    # Refinement passes' source-point identity embedding: "accumulate" (the reference
    # pipeline, evaluation and training loops: pass k carries it k + 1 times) or
    # "per_pass" (once per pass). Used by training and evaluation alike.
    point_identity: str = "accumulate"
    # Network input side (None: the preset's, 518 for vggt-1b). The head's self-attention
    # grid follows (img_size // 2 must be a multiple of 7: 518, 420, 700, 112, 84, ...).
    img_size: Optional[int] = None


@dataclass
class DataSection:
    """A training or evaluation data set."""

    # "self": single-image self-training from images with instance masks;
    # "egoexo": Ego-Exo4D correspondence pairs in the SegSwap layout.
    kind: str = "self"
    root: str = ""
    # self: a COCO instances JSON (RLE or polygons); None = image/mask PNG pairs under root.
    coco: Optional[str] = None
    images_dir: Optional[str] = None  # COCO image folder (default: next to the JSON, or root)
    # egoexo: split name (split.json key and pair-file prefix), directions, cached first-pass
    # projections (reference <split>_obj_wp.json format; computed and written when missing).
    split: str = "train"
    directions: List[str] = field(default_factory=lambda: list(DIRECTIONS))
    projections: Optional[str] = None
    ego_camera_pattern: str = "aria"
    step: int = 1  # keep every step-th pair (the reference evaluates every 20th)
    limit: Optional[int] = None  # keep at most this many samples (after step)
    # Prompt geometry (both kinds).
    prompt_points: int = 5
    first_pass_points: int = 50
    outlier_k: int = 10
    crop_schedule: str = "3x"
    source_crop_ratio: float = 2.0
    # Self-training pairs.
    adaptive_ratio: float = 0.5  # share of VGGT-adaptive pairs (1:1 by default)
    # Target prompts of adaptive pairs: "backbone" (track head projection of source points,
    # the paper) or "warp" (source points moved through the known warp: a perfect tracker).
    adaptive_prompts: str = "backbone"
    target_crop: Tuple[float, float] = (0.55, 0.8)  # target crop side / short side (~2/3)
    offset_radius: float = 50.0  # prompt perturbation of non-adaptive pairs, px of a 518 input
    max_short_side: Optional[int] = None  # downscale sources first (default 2 * img_size)
    min_source_area: float = 0.001  # fraction of the input a source mask must cover
    min_instance_area: int = 64  # instances smaller than this (frame pixels) are skipped
    # One fixed pair per index (independent of the epoch): makes the feature cache useful
    # and gives reproducible held-out evaluation sets.
    fixed_pairs: bool = False
    seed: int = 0


@dataclass
class OptimSection:
    epochs: int = 12
    batch_size: int = 8  # per process
    lr: float = 5e-5
    weight_decay: float = 1e-4
    lr_drops: List[int] = field(default_factory=lambda: [8, 11])
    lr_gamma: float = 0.1
    max_norm: float = 1.0
    refine_ratio: float = 0.5  # share of each batch trained through a no-grad refinement pass
    refine_time: int = 1
    focal_weight: float = 20.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    dice_weight: float = 1.0
    steps_per_epoch: Optional[int] = None  # None: one pass over the (sharded) data set


@dataclass
class RunSection:
    out_dir: str = "runs/vggts"
    # "auto": newest <out_dir>/ckpts/epoch_*.pth if any; a path; or "none".
    resume: str = "auto"
    device: str = "auto"
    seed: int = 0
    num_workers: int = 2
    # Directory for backbone features of identical (source, target) inputs; None = off.
    feature_cache: Optional[str] = None
    feature_cache_dtype: str = "float16"
    tensorboard: bool = True
    progress: bool = True
    log_every: int = 20
    threads: Optional[int] = None  # torch intra-op threads (None: leave as is)
    refine_iterations: int = 1  # evaluation refinement passes
    worst_overlays: int = 8


class SectionsFile:
    """File round trip and ``section.key=value`` overrides of a configuration made of
    sections (a subclass provides ``from_dict`` and ``to_dict``)."""

    @classmethod
    def load(cls, path: str):
        return cls.from_dict(read_sections(path))

    def save(self, path: str) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")

    def override(self, assignments: Sequence[str]):
        """Apply ``section.key=value`` strings (values parsed as YAML: numbers, lists, null)."""
        return type(self).from_dict(assign(self.to_dict(), assignments, EMPTY_SECTIONS))


@dataclass
class TrainConfig(SectionsFile):
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    run: RunSection = field(default_factory=RunSection)
    eval_data: Optional[DataSection] = None

    # -- (de)serialisation ---------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Optional[Dict[str, Any]]) -> "TrainConfig":
        data = dict(data or {})
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"TrainConfig: unknown section(s) {unknown}; known: {sorted(known)}")
        return from_dict(cls, data, "").validate()

    # -- checks --------------------------------------------------------------------------
    def validate(self) -> "TrainConfig":
        errors: List[str] = []
        if self.model.backbone_init not in ("deterministic", "content"):
            errors.append(f"model.backbone_init: {self.model.backbone_init!r} is not deterministic or content")
        if self.model.preset not in MODEL_PRESETS:
            errors.append(f"model.preset: {self.model.preset!r} is not one of {MODEL_PRESETS}")
        elif self.model.img_size is not None:
            try:
                network_configs(self.model.preset, self.model.img_size)
            except ValueError as exc:
                errors.append(f"model.img_size: {exc}")
        for name, d in (("data", self.data), ("eval_data", self.eval_data)):
            if d is None:
                continue
            if d.kind not in DATA_KINDS:
                errors.append(f"{name}.kind: {d.kind!r} is not one of {DATA_KINDS}")
            bad = [x for x in d.directions if x not in DIRECTIONS]
            if bad or not d.directions:
                errors.append(f"{name}.directions: {d.directions!r} must be a non-empty subset of {DIRECTIONS}")
            if d.adaptive_prompts not in ADAPTIVE_PROMPTS:
                errors.append(f"{name}.adaptive_prompts: {d.adaptive_prompts!r} is not one of {ADAPTIVE_PROMPTS}")
            if not 0.0 <= d.adaptive_ratio <= 1.0:
                errors.append(f"{name}.adaptive_ratio must be in [0, 1], got {d.adaptive_ratio}")
            lo, hi = (list(d.target_crop) + [None, None])[:2]
            if lo is None or hi is None or not 0 < float(lo) <= float(hi) <= 1:
                errors.append(f"{name}.target_crop must be [lo, hi] with 0 < lo <= hi <= 1, got {d.target_crop}")
            if d.step < 1:
                errors.append(f"{name}.step must be >= 1, got {d.step}")
            if d.prompt_points < 1 or d.first_pass_points < d.prompt_points:
                errors.append(f"{name}: need 1 <= prompt_points <= first_pass_points")
        from ..models.union_head.refinement import IDENTITY_MODES

        if self.model.point_identity not in IDENTITY_MODES:
            errors.append(
                f"model.point_identity: {self.model.point_identity!r} is not one of {', '.join(IDENTITY_MODES)}"
            )
        o = self.optim
        if o.epochs < 1:
            errors.append(f"optim.epochs must be >= 1, got {o.epochs}")
        if o.batch_size < 1:
            errors.append(f"optim.batch_size must be >= 1, got {o.batch_size}")
        if o.lr <= 0:
            errors.append(f"optim.lr must be > 0, got {o.lr}")
        if not 0.0 <= o.refine_ratio <= 1.0:
            errors.append(f"optim.refine_ratio must be in [0, 1], got {o.refine_ratio}")
        if o.refine_time < 1:
            errors.append(f"optim.refine_time must be >= 1, got {o.refine_time}")
        if sorted(o.lr_drops) != list(o.lr_drops):
            errors.append(f"optim.lr_drops must be increasing, got {o.lr_drops}")
        if self.run.feature_cache_dtype not in ("float16", "float32", "bfloat16"):
            errors.append(f"run.feature_cache_dtype: {self.run.feature_cache_dtype!r} is not float16/float32/bfloat16")
        if errors:
            raise ValueError("invalid training configuration:\n  " + "\n  ".join(errors))
        return self


# An optional section an override switches on starts from its defaults.
EMPTY_SECTIONS = {"eval_data": lambda: dataclasses.asdict(DataSection())}


# ---------------------------------------------------------------------------------------
# Network presets
# ---------------------------------------------------------------------------------------

SMOKE_IMG_SIZE = 84


def smoke_backbone(img_size: int = SMOKE_IMG_SIZE) -> BackboneConfig:
    """A tiny backbone for CPU tests: 7-pixel strided-conv patches (12 x 12 tokens at 84
    px; 14-pixel patches give 6 x 6, too coarse for the head to learn quickly), width 32,
    the 24 layers the track head's DPT decoder reads, 32 feature channels, a small tracker."""
    return BackboneConfig(
        AggregatorConfig(img_size=img_size, patch_size=7, embed_dim=32, depth=24, num_heads=2, patch_embed="conv"),
        TrackHeadConfig(features=32, hidden_size=64, corr_levels=3, corr_radius=2),
    )


def smoke_head(img_size: int = SMOKE_IMG_SIZE) -> HeadConfig:
    grid = img_size // 2
    sa_tokens = grid // 7
    return HeadConfig(img_size=img_size, sa_tokens=sa_tokens, embed_dim=32, blocks=1, num_heads=4)


def network_configs(preset: str, img_size: Optional[int] = None) -> Tuple[BackboneConfig, HeadConfig]:
    """(backbone, head) architecture of a training preset, optionally at another input size."""
    if preset == "smoke":
        size = int(img_size or SMOKE_IMG_SIZE)
        backbone, head = smoke_backbone(size), smoke_head(size)
    elif preset in ("vggt-1b", "test-tiny"):
        p = model_preset(preset)
        backbone, head = p.backbone, p.head
        if img_size:
            size = int(img_size)
            backbone = dataclasses.replace(backbone, aggregator=dataclasses.replace(backbone.aggregator, img_size=size))
            head = dataclasses.replace(head, img_size=size, sa_tokens=(size // 2) // 7)
    else:
        raise ValueError(f"unknown model preset {preset!r}; expected one of {MODEL_PRESETS}")
    size = head.img_size
    patch = backbone.aggregator.patch_size
    if size % patch or (size // 2) % 7 or size % 2:
        raise ValueError(f"img_size {size} must be a multiple of the patch size {patch} with "
                         f"(img_size // 2) a multiple of 7")
    return backbone, head


def smoke_config(out_dir: str, data_root: str, overrides: Optional[Dict[str, Any]] = None) -> TrainConfig:
    """The tiny CPU configuration of the tests and ``bench/bench_training.py``.

    The ``smoke`` preset (84 px inputs, 32 channels) with a random backbone (no
    checkpoint; deterministic aggregator and tracker, content-preserving DPT init), so
    adaptive pairs take their target prompts from the known warp (``"warp"``). Fixed pairs
    (features computed once, then cached), batches of 8 and a learning rate of 3e-3 (the
    recipe's 5e-5 is for fine-tuning over 240k samples; a head trained from scratch needs
    ~100 steps at 3e-3 to leave the all-background solution), one x0.1 drop near the end.
    ``overrides``: ``{"optim.epochs": 2, ...}``."""
    cfg = TrainConfig(
        model=ModelSection(preset="smoke", vggt_checkpoint=None, backbone_seed=0, backbone_init="content",
                           head_seed=None),
        data=DataSection(kind="self", root=data_root, adaptive_prompts="warp", fixed_pairs=True,
                         first_pass_points=20, outlier_k=4),
        optim=OptimSection(epochs=18, batch_size=8, lr=3e-3, weight_decay=1e-4, lr_drops=[15], max_norm=1.0),
        run=RunSection(out_dir=out_dir, resume="none", device="cpu", num_workers=0, progress=False,
                       log_every=1),
    )
    if overrides:
        cfg = cfg.override([f"{k}={json.dumps(v)}" for k, v in overrides.items()])
    return cfg


def read_sections(path: str) -> Optional[dict]:
    """The mapping of sections in a JSON or YAML configuration file (None when empty)."""
    text = Path(path).read_text(encoding="utf-8")
    if str(path).endswith(".json"):
        data = json.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text)
    if data is not None and not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of sections")
    return data
