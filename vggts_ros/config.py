"""Typed configuration shared by the library, the command line, the ROS node and the tests.

Everything tunable lives here as dataclasses. Model presets (``vggt-1b``, ``test-tiny``)
are named so that a YAML file, a CLI flag and a test all mean the same network.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple


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
class CameraHeadConfig:
    """VGGT camera head (``camera_head.*``): trunk of transformer blocks over the views'
    camera tokens, refined ``iterations`` times."""

    trunk_depth: int = 4
    num_heads: int = 16
    mlp_ratio: float = 4.0
    init_values: float = 0.01
    iterations: int = 4


@dataclass
class DepthHeadConfig:
    """VGGT depth head (``depth_head.*``): a DPT decoder with 2 output channels, ``exp``
    depth and ``1 + exp`` confidence."""

    features: int = 256
    out_channels: List[int] = field(default_factory=lambda: [256, 512, 1024, 1024])
    intermediate_layer_idx: List[int] = field(default_factory=lambda: [4, 11, 17, 23])
    frames_chunk_size: int = 8


@dataclass
class BackboneConfig:
    aggregator: AggregatorConfig = field(default_factory=AggregatorConfig)
    track_head: TrackHeadConfig = field(default_factory=TrackHeadConfig)
    # VGGT's camera and depth heads (``camera_head.*``, ``depth_head.*`` of model.pt); off:
    # they are neither built nor loaded.
    geometry_heads: bool = False
    camera_head: CameraHeadConfig = field(default_factory=CameraHeadConfig)
    depth_head: DepthHeadConfig = field(default_factory=DepthHeadConfig)


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
    # Numeric mode (vggts_ros.precision): "float32" (default; TF32 off on CUDA), "tf32",
    # "bf16" (backbone autocast), "release" (the released scripts' CUDA bf16 autocast
    # around backbone and head), "float64" (networks cast to float64: reference runs).
    precision: str = "float32"
    # Source-point identity across refinement passes: "accumulate" (the reference's
    # evaluation and training loops, which the published head was trained with) or
    # "per_pass" (models.union_head.refinement).
    point_identity: str = "accumulate"
    # Temporal VGGT-S (vggts_ros/temporal.py): memory per (object, target camera) when a
    # caller streams (segment_objects(..., stream=...)); off = the per-frame pipeline.
    # Without temporal_weights the memory's zero gate leaves every output unchanged.
    temporal: bool = False
    memory_frames: int = 6
    temporal_weights: str = ""
    # Stream reuse (vggts_ros.stream_reuse; off by default, its accuracy with the published
    # weights is unmeasured): a cropped target whose previous masks were confident skips
    # the first pass (crop from the last mask, prompts tracked in the features pass); a
    # full pass every ``reuse_full_every`` sets, or when a score is below
    # ``reuse_min_score`` or fell more than ``reuse_max_drop`` since the last full pass.
    stream_reuse: bool = False
    reuse_full_every: int = 5
    reuse_min_score: float = 0.6
    reuse_max_drop: float = 0.1
    # VGGT's camera and depth heads on the first pass's tokens (vggts_ros.geometry.camera):
    # each result then carries its target's and its source's ViewGeometry in frame pixels
    # (depth, confidence, intrinsics, pose relative to the source camera; unknown scale).
    # Needs a backbone with BackboneConfig.geometry_heads (the constructors build one).
    geometry_heads: bool = False


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
    # Network input resolution (letterbox/crop size); the head's img_size must equal it.
    image_size: int = 518
    # Seeds of the deterministic weight rule; None means weights come from checkpoints.
    backbone_seed: Optional[int] = None
    head_seed: Optional[int] = None


def vggt_1b_backbone() -> BackboneConfig:
    return BackboneConfig(AggregatorConfig(), TrackHeadConfig())


def tiny_backbone() -> BackboneConfig:
    """The small backbone of the ``vggt_track_tiny`` reference fixture (518 px)."""
    return BackboneConfig(
        AggregatorConfig(img_size=518, embed_dim=64, depth=24, num_heads=4, patch_embed="conv"),
        TrackHeadConfig(),
    )


def model_preset(name: str) -> ModelPreset:
    """Return the named network.

    ``vggt-1b`` is the published model (weights from checkpoints). ``test-tiny`` is a
    small network at 126 px with deterministic weights, for tests, demos of the plumbing
    and CPU smoke runs: its masks are meaningless on real images. (Depth stays 24
    because the track head reads aggregator layers 4/11/17/23; 4 correlation levels fit
    the 63 px feature map.)
    """
    if name == "vggt-1b":
        return ModelPreset(vggt_1b_backbone(), HeadConfig(img_size=518, sa_tokens=37), image_size=518)
    if name == "test-tiny":
        backbone = BackboneConfig(
            AggregatorConfig(img_size=126, embed_dim=64, depth=24, num_heads=4, patch_embed="conv"),
            TrackHeadConfig(corr_levels=4, hidden_size=96),
        )
        return ModelPreset(backbone, HeadConfig(img_size=126, sa_tokens=9), image_size=126,
                           backbone_seed=0, head_seed=1)
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
    for c in (AggregatorConfig, TrackHeadConfig, CameraHeadConfig, DepthHeadConfig, BackboneConfig, HeadConfig,
              PipelineConfig, ModelConfig)
}


# ---------------------------------------------------------------------------------------
# Node configuration: the `ros__parameters` of config/*.yaml, usable without ROS.
# ---------------------------------------------------------------------------------------

SOURCE_MODES = ("keyframe", "track")
CAMERA_KEYS = ("topic", "role", "compressed", "required")
DEVICES = ("auto", "cuda", "cpu")
DTYPES = ("float32", "bfloat16")
PRECISION_MODES = ("float32", "tf32", "bf16", "release", "float64")  # vggts_ros.precision
POINT_IDENTITY = ("accumulate", "per_pass")  # models.union_head.refinement
BACKENDS = ("vggts", "geometric")


@dataclass
class CameraConfig:
    name: str
    topic: str = ""
    role: str = "exo"
    compressed: bool = False
    required: bool = False  # sets are never made without this camera

    def resolved_topic(self) -> str:
        """The topic as given, else ``<name>/image_raw[/compressed]``, relative so that a
        node namespace applies to it."""
        return self.topic or f"{self.name}/image_raw" + ("/compressed" if self.compressed else "")


@dataclass
class SyncConfig:
    slop: float = 0.05  # seconds between the stamps of one synchronised set
    queue_size: int = 10  # messages kept per camera while waiting for partners
    stale_after: float = 1.0  # a camera silent (or matching nothing) this long is left out of sets
    min_cameras: int = 2  # a set has at least this many cameras
    jump_threshold: float = 1.0  # s; stamps going back (or ahead) more than this are a time jump
    correct_offset_above: float = 0.25  # s; larger estimated camera clock offsets are corrected (0: never)
    # Rate-following staleness: k > 0 makes a camera stale after max(stale_after_min, k x its
    # measured frame period) instead of stale_after (used until its rate is known); 5 is a good k.
    stale_periods: float = 0.0
    stale_after_min: float = 0.25  # s; floor of the rate-following limit


@dataclass
class InferenceConfig:
    refine_iterations: int = 1
    precision: str = "float32"  # vggts_ros.precision mode: float32 | tf32 | bf16 | release | float64
    point_identity: str = "accumulate"  # refinement semantics: accumulate (reference) | per_pass
    source_mode: str = "keyframe"
    max_rate: float = 0.0  # sets per second processed at most; 0 = as fast as possible
    keyframe_history: float = 2.0  # s of recent frames per camera kept for masks drawn on older stamps
    max_objects: int = 32  # objects tracked at once (each costs a pipeline call per set)
    max_label_length: int = 256  # characters of an object's label
    max_image_pixels: int = 16_777_216  # width x height of a camera frame or mask (checked before decoding)
    temporal: bool = False  # Temporal VGGT-S memory per (object, camera); off until trained weights exist
    memory_frames: int = 6  # recent frames in each memory bank
    temporal_weights: str = ""  # temporal.pth; "" = untrained memory (zero gate: outputs unchanged)
    warm_up: bool = True  # run the backend once on a synthetic pair at configure (the first mask is not slow)


@dataclass
class PublishConfig:
    overlay: bool = False
    diagnostics_period: float = 1.0
    stall_timeout: float = 0.0  # s without output (objects set) before ERROR; 0 = max(2 periods, 3 x median set time)


@dataclass
class ObjectsConfig:
    # Directory where every object is saved when it changes and restored from at start
    # (vggts_ros.object_store); "" = objects live in memory only.
    state_dir: str = ""


@dataclass
class NodeConfig:
    cameras: List[CameraConfig] = field(default_factory=list)
    sync: SyncConfig = field(default_factory=SyncConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    objects: ObjectsConfig = field(default_factory=ObjectsConfig)

    def camera(self, name: str) -> CameraConfig:
        for cam in self.cameras:
            if cam.name == name:
                return cam
        raise KeyError(name)

    def validate(self) -> "NodeConfig":
        errors = []
        names = [c.name for c in self.cameras]
        if len(names) < 2:
            errors.append(f"cameras: need at least two cameras, got {names}")
        if len(set(names)) != len(names):
            errors.append(f"cameras: duplicate names in {names}")
        from vggts_ros.types import ROLES

        for cam in self.cameras:
            if not cam.name or not cam.name.replace("_", "").isalnum():
                errors.append(f"camera {cam.name!r}: names must be non-empty letters, digits or '_'")
            if cam.role not in ROLES:
                errors.append(f"camera.{cam.name}.role: {cam.role!r} is not one of {ROLES}")
        topics = [c.resolved_topic() for c in self.cameras]
        if len(set(topics)) != len(topics):
            errors.append(f"camera topics must differ, got {topics}")
        if self.sync.slop <= 0:
            errors.append(f"sync.slop must be > 0, got {self.sync.slop}")
        if self.sync.queue_size < 1:
            errors.append(f"sync.queue_size must be >= 1, got {self.sync.queue_size}")
        if self.sync.stale_after <= 0:
            errors.append(f"sync.stale_after must be > 0, got {self.sync.stale_after}")
        if not 1 <= self.sync.min_cameras <= max(1, len(names)):
            errors.append(f"sync.min_cameras must be in [1, {len(names)}], got {self.sync.min_cameras}")
        if self.sync.jump_threshold <= 0:
            errors.append(f"sync.jump_threshold must be > 0, got {self.sync.jump_threshold}")
        if self.sync.correct_offset_above < 0:
            errors.append(f"sync.correct_offset_above must be >= 0, got {self.sync.correct_offset_above}")
        if not 0 <= self.sync.stale_periods < float("inf"):
            errors.append(f"sync.stale_periods must be >= 0 (0: fixed stale_after), got {self.sync.stale_periods}")
        if not 0 < self.sync.stale_after_min < float("inf"):
            errors.append(f"sync.stale_after_min must be > 0, got {self.sync.stale_after_min}")
        if self.model.backend not in BACKENDS:
            errors.append(f"model.backend: {self.model.backend!r} is not one of {BACKENDS}")
        if self.model.config not in MODEL_PRESETS:
            errors.append(f"model.config: {self.model.config!r} is not one of {MODEL_PRESETS}")
        if self.model.device not in DEVICES and not re.fullmatch(r"cuda:\d+", self.model.device):
            errors.append(f"model.device: {self.model.device!r} is not one of {DEVICES} or cuda:<index>")
        if self.model.dtype not in DTYPES:
            errors.append(f"model.dtype: {self.model.dtype!r} is not one of {DTYPES}")
        if self.inference.refine_iterations < 0:
            errors.append(f"inference.refine_iterations must be >= 0, got {self.inference.refine_iterations}")
        if self.inference.precision not in PRECISION_MODES:
            errors.append(f"inference.precision: {self.inference.precision!r} is not one of {PRECISION_MODES}")
        if self.inference.point_identity not in POINT_IDENTITY:
            errors.append(f"inference.point_identity: {self.inference.point_identity!r} is not one of {POINT_IDENTITY}")
        if self.inference.source_mode not in SOURCE_MODES:
            errors.append(f"inference.source_mode: {self.inference.source_mode!r} is not one of {SOURCE_MODES}")
        if self.inference.memory_frames < 1:
            errors.append(f"inference.memory_frames must be >= 1, got {self.inference.memory_frames}")
        if self.inference.max_rate < 0:
            errors.append(f"inference.max_rate must be >= 0, got {self.inference.max_rate}")
        if self.inference.keyframe_history <= 0:
            errors.append(f"inference.keyframe_history must be > 0 s, got {self.inference.keyframe_history}")
        if not 1 <= self.inference.max_objects <= 255:
            errors.append(f"inference.max_objects must be in [1, 255], got {self.inference.max_objects}")
        if self.inference.max_label_length < 0:
            errors.append(f"inference.max_label_length must be >= 0, got {self.inference.max_label_length}")
        if self.inference.max_image_pixels < 1:
            errors.append(f"inference.max_image_pixels must be >= 1, got {self.inference.max_image_pixels}")
        if self.publish.diagnostics_period <= 0:
            errors.append(f"publish.diagnostics_period must be > 0, got {self.publish.diagnostics_period}")
        if self.publish.stall_timeout < 0:
            errors.append(f"publish.stall_timeout must be >= 0, got {self.publish.stall_timeout}")
        if errors:
            raise ValueError("invalid vggts configuration:\n  " + "\n  ".join(errors))
        return self

    # -- flat ROS parameters ------------------------------------------------------------

    def to_parameters(self) -> Dict[str, Any]:
        """Flatten to ROS parameter names (``sync.slop``, ``camera.ego.topic``, ...)."""
        params: Dict[str, Any] = {"cameras": [c.name for c in self.cameras]}
        for cam in self.cameras:
            params[f"camera.{cam.name}.topic"] = cam.resolved_topic()
            params[f"camera.{cam.name}.role"] = cam.role
            params[f"camera.{cam.name}.compressed"] = cam.compressed
            params[f"camera.{cam.name}.required"] = cam.required
        for section in ("sync", "model", "inference", "publish", "objects"):
            for key, value in dataclasses.asdict(getattr(self, section)).items():
                params[f"{section}.{key}"] = value
        return params

    @classmethod
    def from_parameters(cls, params: Dict[str, Any]) -> "NodeConfig":
        """Build from flat ROS parameter names; unknown names are an error."""
        params = dict(params)
        names = list(params.pop("cameras", []) or [])
        cameras = []
        for name in names:
            cam = CameraConfig(name=name)
            for key in CAMERA_KEYS:
                full = f"camera.{name}.{key}"
                if full in params:
                    setattr(cam, key, params.pop(full))
            cameras.append(cam)
        sections: Dict[str, Dict[str, Any]] = {"sync": {}, "model": {}, "inference": {}, "publish": {}, "objects": {}}
        unknown = []
        for key, value in params.items():
            head, _, rest = key.partition(".")
            if head in sections and rest and "." not in rest:
                sections[head][rest] = value
            elif head == "camera":
                unknown.append(f"{key} (camera not listed in 'cameras')")
            elif head in ("use_sim_time",) or key.startswith("qos_overrides."):
                continue
            else:
                unknown.append(key)
        if unknown:
            raise ValueError(f"unknown vggts parameter(s): {sorted(unknown)}")
        typed = {
            "sync": SyncConfig, "model": ModelConfig, "inference": InferenceConfig, "publish": PublishConfig,
            "objects": ObjectsConfig,
        }
        built = {}
        for section, values in sections.items():
            dc = typed[section]
            fields_ = {f.name: f for f in dataclasses.fields(dc)}
            bad = sorted(set(values) - set(fields_))
            if bad:
                raise ValueError(f"unknown vggts parameter(s): {[f'{section}.{b}' for b in bad]}")
            default = dc()
            coerced = {k: _coerce(v, getattr(default, k), f"{section}.{k}") for k, v in values.items()}
            built[section] = dc(**coerced)
        for cam in cameras:
            cam.compressed = _coerce(cam.compressed, False, f"camera.{cam.name}.compressed")
            cam.required = _coerce(cam.required, False, f"camera.{cam.name}.required")
            cam.topic = _coerce(cam.topic, "", f"camera.{cam.name}.topic")
            cam.role = _coerce(cam.role, "", f"camera.{cam.name}.role")
        return cls(cameras=cameras, **built)


# ROS parameter descriptors: name -> (description, live (changeable while running), range).
# Everything not live needs a restart (the node refuses to change it).
PARAMETERS: Dict[str, Tuple[str, bool, Optional[Tuple[float, float]]]] = {
    "cameras": ("camera names, in order", False, None),
    "sync.slop": ("s, largest stamp difference inside one synchronised set", True, (1e-6, 10.0)),
    "sync.queue_size": ("messages kept per camera while waiting for partners", True, (1, 1000)),
    "sync.stale_after": ("s, a camera silent (or matching nothing) this long is left out of sets", True, (1e-3, 3600.0)),
    "sync.min_cameras": ("cameras a set holds at least", True, (1, 64)),
    "sync.jump_threshold": ("s, stamps going back/ahead more than this are a time jump", True, (1e-3, 1e6)),
    "sync.correct_offset_above": ("s, camera clock offsets above this are corrected (0: never)", True, (0.0, 1e9)),
    "sync.stale_periods": ("k > 0: a camera is stale after max(sync.stale_after_min, k x its measured frame "
                           "period), sync.stale_after until its rate is known; 0: always sync.stale_after "
                           "(5 is a good k)", True, (0.0, 1000.0)),
    "sync.stale_after_min": ("s, floor of the rate-following stale limit (sync.stale_periods > 0)", True,
                             (1e-3, 3600.0)),
    "model.backend": ("vggts | geometric", False, None),
    "model.config": ("vggt-1b | test-tiny", False, None),
    "model.vggt_checkpoint": ("VGGT-1B weights: local file, directory or repo id", False, None),
    "model.head_checkpoint": ("VGGT-S head weights: local file, directory or repo id", False, None),
    "model.device": ("auto | cpu | cuda | cuda:<index>", False, None),
    "model.dtype": ("float32 | bfloat16 (backbone only)", False, None),
    "inference.refine_iterations": ("refinement passes per target view", False, (0, 16)),
    "inference.precision": ("float32 (TF32 off on CUDA) | tf32 | bf16 (backbone autocast) | release "
                            "(the released scripts' CUDA bf16 autocast) | float64", False, None),
    "inference.point_identity": ("refinement semantics: accumulate (reference) | per_pass", False, None),
    "inference.source_mode": ("keyframe (mask stays on its frame) | track (follows the object)", True, None),
    "inference.max_rate": ("sets/s processed at most, 0 = as fast as the model runs", True, (0.0, 1000.0)),
    "inference.keyframe_history": ("s of frames kept per camera to find the frame a mask was drawn on", True,
                                   (1e-3, 60.0)),
    "inference.max_objects": ("objects tracked at once", True, (1, 255)),
    "inference.max_label_length": ("characters of an object label", True, (0, 65536)),
    "inference.max_image_pixels": ("largest width x height of a frame or mask, checked before decoding", True,
                                   (1, 1 << 31)),
    "inference.warm_up": ("run the backend once on a synthetic pair at start, so the first mask is not slow",
                          False, None),
    "inference.temporal": ("Temporal VGGT-S: memory of earlier sets per (object, camera)", False, None),
    "inference.memory_frames": ("recent frames kept per (object, camera) memory bank", False, (1, 64)),
    "inference.temporal_weights": ("temporal.pth of the memory modules; empty = untrained (outputs unchanged)",
                                   False, None),
    "publish.overlay": ("also publish ~/<camera>/overlay images", False, None),
    "publish.diagnostics_period": ("s between /diagnostics messages", False, (1e-2, 3600.0)),
    "objects.state_dir": ("directory where objects are saved when they change and restored from at start "
                          "(survive a restart); empty = in memory only", False, None),
    "publish.stall_timeout": ("s without output (objects set) before ERROR; 0 = max(2 periods, 3 x median set time)",
                              True, (0.0, 1e6)),
}
CAMERA_PARAMETERS = {
    "topic": "image topic (relative names resolve in the node namespace)",
    "role": "ego | exo | aerial | ground",
    "compressed": "sensor_msgs/CompressedImage instead of Image",
    "required": "sets are never made without this camera",
}


def _coerce(value: Any, default: Any, name: str) -> Any:
    """Accept YAML's loose typing (1 for 1.0, 'true') but refuse nonsense by name."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ValueError(f"{name}: expected true/false, got {value!r}")
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ValueError(f"{name}: expected an integer, got {value!r}")
        return int(value)
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name}: expected a number, got {value!r}")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ValueError(f"{name}: expected a string, got {value!r}")
        return value
    return value


def flatten_parameters(tree: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    """Nested YAML mapping -> ROS parameter names joined with '.'."""
    flat: Dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_parameters(value, name + "."))
        else:
            flat[name] = value
    return flat


def load_params_file(path: str, node_name: str = "vggts") -> Dict[str, Any]:
    """Read a ROS 2 parameters file (``--params-file`` semantics) without ROS.

    Sections for ``/**``, ``**``, the node name and ``/<node name>`` are merged in that
    order, so a node-specific entry overrides a wildcard one.
    """
    import yaml

    with open(path, "r", encoding="utf-8") as handle:
        data = yaml.safe_load(handle) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of node names to ros__parameters")
    merged: Dict[str, Any] = {}
    matched = False
    for key in ("/**", "**", node_name, f"/{node_name}"):
        section = data.get(key)
        if isinstance(section, dict) and "ros__parameters" in section:
            merged.update(flatten_parameters(section["ros__parameters"] or {}))
            matched = True
    if not matched:
        raise ValueError(f"{path}: no ros__parameters for node {node_name!r} (keys: {sorted(data)})")
    return merged


def load_node_config(path: str, node_name: str = "vggts") -> NodeConfig:
    return NodeConfig.from_parameters(load_params_file(path, node_name)).validate()
