"""Typed configuration shared by the library, the command line, the ROS node and the tests.

Everything tunable lives here as dataclasses. Model presets (``vggt-1b``, ``test-tiny``)
are named so that a YAML file, a CLI flag and a test all mean the same network.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional


@dataclass
class AggregatorConfig:
    """VGGT aggregator: patch embedding plus alternating frame/global attention."""

    img_size: int = 518
    patch_size: int = 14
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4
    # "dinov2_vitl14_reg", "dinov2_vitb14_reg", "dinov2_vits14_reg", "dinov2_vitg2_reg"
    # or "conv" (a single strided convolution, used by small test configs).
    patch_embed: str = "dinov2_vitl14_reg"
    # Truncate the DINOv2 patch embedding to this many blocks (None = the full ViT).
    patch_embed_depth: Optional[int] = None
    qk_norm: bool = True
    rope_freq: float = 100.0
    init_values: float = 0.01
    aa_order: List[str] = field(default_factory=lambda: ["frame", "global"])
    aa_block_size: int = 1


@dataclass
class TrackHeadConfig:
    """VGGT track head: DPT feature extractor and the iterative point tracker."""

    features: int = 128
    iters: int = 4
    predict_conf: bool = True
    stride: int = 2
    corr_levels: int = 7
    corr_radius: int = 4
    hidden_size: int = 384


@dataclass
class BackboneConfig:
    aggregator: AggregatorConfig = field(default_factory=AggregatorConfig)
    track_head: TrackHeadConfig = field(default_factory=TrackHeadConfig)


@dataclass
class HeadConfig:
    """Union Segmentation Head (VGGT-S ``Predictor``)."""

    img_size: int = 518
    sa_tokens: int = 37
    embed_dim: int = 128
    blocks: int = 2
    num_heads: int = 8


@dataclass
class PipelineConfig:
    """Inference recipe of the paper (see SPEC "The pipeline")."""

    image_size: int = 518
    first_pass_points: int = 50
    prompt_points: int = 5
    outlier_k: int = 10
    # "3x" (reference default), "2x", "1.5x", "1x".
    crop_schedule: str = "3x"
    source_crop_ratio: float = 2.0
    refine_iterations: int = 1
    # Optional second tracking pass on the target crop (supplement).
    second_pass: bool = False
    # "float32" (default, as in the paper) or "bfloat16" (backbone only).
    backbone_dtype: str = "float32"


@dataclass
class ModelConfig:
    """Which network to run and where its weights come from."""

    # "vggts" (the learned model) or "geometric" (weight-free baseline).
    backend: str = "vggts"
    # "vggt-1b" (published weights) or "test-tiny" (deterministic test weights).
    config: str = "vggt-1b"
    vggt_checkpoint: str = "facebook/VGGT-1B"
    head_checkpoint: str = "zbbhhh/VGGT-S"
    device: str = "auto"
    dtype: str = "float32"


@dataclass
class ModelPreset:
    backbone: BackboneConfig
    head: HeadConfig
    # Seeds of the deterministic weight rule; None means weights come from checkpoints.
    backbone_seed: Optional[int] = None
    head_seed: Optional[int] = None


def vggt_1b_backbone() -> BackboneConfig:
    return BackboneConfig(AggregatorConfig(), TrackHeadConfig())


def tiny_backbone() -> BackboneConfig:
    """The small backbone of the ``vggt_track_tiny`` reference fixture."""
    return BackboneConfig(
        AggregatorConfig(img_size=518, embed_dim=64, depth=24, num_heads=4, patch_embed="conv"),
        TrackHeadConfig(),
    )


def model_preset(name: str) -> ModelPreset:
    """Return the named network. ``test-tiny`` carries deterministic weights and is
    meaningless on real images: it exists so that tests and demos run without downloads."""
    if name == "vggt-1b":
        return ModelPreset(vggt_1b_backbone(), HeadConfig())
    if name == "test-tiny":
        return ModelPreset(tiny_backbone(), HeadConfig(), backbone_seed=0, head_seed=1)
    raise ValueError(f"unknown model config {name!r}; expected one of: vggt-1b, test-tiny")


MODEL_PRESETS = ("vggt-1b", "test-tiny")


def to_dict(obj: Any) -> Dict[str, Any]:
    return dataclasses.asdict(obj)


def from_dict(cls, data: Dict[str, Any]):
    """Build dataclass ``cls`` from a (possibly nested) dict, refusing unknown keys."""
    if data is None:
        return cls()
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown key(s) {unknown}; known: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        ftype = names[key].type
        sub = _DATACLASSES.get(ftype if isinstance(ftype, str) else getattr(ftype, "__name__", ""))
        kwargs[key] = from_dict(sub, value) if sub is not None and isinstance(value, dict) else value
    return cls(**kwargs)


_DATACLASSES = {
    c.__name__: c
    for c in (AggregatorConfig, TrackHeadConfig, BackboneConfig, HeadConfig, PipelineConfig, ModelConfig)
}
