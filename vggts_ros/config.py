"""Typed configuration shared by the library, the command line, the ROS node and the tests.

Everything tunable lives here as dataclasses. Model presets (``vggt-1b``, ``test-tiny``)
are named so that a YAML file, a CLI flag and a test all mean the same network.

Each node parameter is declared once, as a field made by :func:`vggts_ros.schema.param`
carrying its doc, range or choices and live flag. From those declarations come the ROS
parameter names (:meth:`NodeConfig.to_parameters` / :meth:`NodeConfig.from_parameters`),
their descriptors (:data:`PARAMETERS`, :data:`CAMERA_PARAMETERS`), the checks of
:meth:`NodeConfig.validate`, the comments of ``config/multicam.yaml`` and the page
``docs/parameters.md`` (both written by ``python -m vggts_ros.parameter_docs``).

Adding a parameter is one declaration in its section, e.g. in :class:`PublishConfig`::

    max_age: float = param(0.5, doc="s, outputs older than this are not published", range=(0.0, 60.0), live=True)

``camera.<name>.<key>`` parameters are fields of :class:`CameraConfig`; list values are
typed ``List[float]``/``Tuple[float, ...]`` (a list default needs ``default_factory=list``,
a tuple default does not); a new section is a dataclass field of :class:`NodeConfig`, a
nested one (``model.geometric.*``) a dataclass field of a section. Then run
``python -m vggts_ros.parameter_docs`` and add the parameter to ``config/*.yaml``.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from vggts_ros.schema import fold_renamed, from_dict, param, parameters, renamed_value, to_dict  # noqa: F401
from vggts_ros.schema import check, field_errors, flatten, unflatten

# Allowed values, shared by the node, the command line and the checks.
MODEL_PRESETS = ("vggt-1b", "test-tiny")
ROLES = ("ego", "exo", "aerial", "ground")  # camera roles (vggts_ros.types.CROPPED_ROLES: cropped targets)
SOURCE_MODES = ("keyframe", "track")
DEVICES = ("auto", "cuda", "cpu")
DTYPES = ("float32", "bfloat16")  # the deprecated model.dtype / PipelineConfig.backbone_dtype
PRECISION_MODES = ("float32", "tf32", "bf16", "release", "float64")  # vggts_ros.precision
POINT_IDENTITY = ("accumulate", "per_pass")  # models.union_head.refinement
BACKENDS = ("vggts", "geometric")
CROP_SCHEDULES = ("3x", "2x", "1.5x", "1x")  # vggts_ros.crops

# The deprecated backbone dtype spellings mean this precision mode (float32: no change).
_DTYPE_TO_PRECISION = {"float32": None, "bfloat16": "bf16"}


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


# ---------------------------------------------------------------------------------------
# Settings the node and the pipeline share (declared once, used by both dataclasses)
# ---------------------------------------------------------------------------------------
_REFINE = dict(doc="refinement passes of the head per target view (they reuse the backbone features)",
               range=(0, 16))
_PRECISION = dict(
    doc="numeric mode (float32: TF32 off on CUDA, so GPU and CPU agree; bf16: backbone autocast; release: the "
        "released scripts' CUDA bf16 autocast)", choices=PRECISION_MODES,
    details="`tf32`: TF32 allowed on CUDA; `release` on a CPU computes float32 (its autocast is CUDA's); "
            "`float64`: networks and inputs in float64 (reference runs). See `vggts_ros/precision.py`.")
_POINT_IDENTITY = dict(
    doc="refinement semantics of the source points' identity (accumulate: the reference loops, what the "
        "published head saw; per_pass: once per pass)", choices=POINT_IDENTITY)
_TEMPORAL = dict(doc="Temporal VGGT-S: each (object, target camera) decodes with a memory of its earlier sets",
                 details="Off: the per-frame pipeline. Without trained weights the memory's zero gate leaves "
                         "every output unchanged (no trained temporal weights are published).")
_MEMORY_FRAMES = dict(doc="recent frames kept per (object, camera) memory bank (plus the first confident one)",
                      range=(1, 64))
_TEMPORAL_WEIGHTS = dict(doc="temporal.pth of the memory modules; empty: untrained memory (outputs unchanged)")


@dataclass
class PipelineConfig:
    """Inference recipe of the paper (see SPEC "The pipeline")."""

    image_size: int = param(518, doc="network input side (set from the model preset)")
    first_pass_points: int = param(50, doc="K-means points of the source mask tracked in the first pass")
    prompt_points: int = param(5, doc="prompt points per view after outlier removal")
    outlier_k: int = param(10, doc="neighbours of the outlier test on the tracked points")
    crop_schedule: str = param("3x", doc="target crop side against the spread of the projected points "
                                         "(3x: the reference default)", choices=CROP_SCHEDULES)
    source_crop_ratio: float = param(2.0, doc="source crop side against the mask's bounding box")
    refine_iterations: int = param(1, **_REFINE)
    second_pass: bool = param(False, doc="a second tracking pass on the target crop (supplement)")
    precision: str = param("float32", **_PRECISION)
    point_identity: str = param("accumulate", **_POINT_IDENTITY)
    temporal: bool = param(False, **_TEMPORAL)
    memory_frames: int = param(6, **_MEMORY_FRAMES)
    temporal_weights: str = param("", **_TEMPORAL_WEIGHTS)
    stream_reuse: bool = param(
        False, doc="stream reuse: a cropped target whose previous masks were confident skips the first pass",
        details="Off by default: its accuracy with the published weights is unmeasured "
                "(`vggts_ros/stream_reuse.py`). The crop comes from the last mask, the prompts are tracked in "
                "the features pass.")
    reuse_full_every: int = param(5, doc="stream reuse: a full pass every this many sets")
    reuse_min_score: float = param(0.6, doc="stream reuse: a full pass when a score is below this")
    reuse_max_drop: float = param(0.1, doc="stream reuse: a full pass when a score fell more than this "
                                           "since the last full pass")
    geometry_heads: bool = param(
        False, doc="VGGT's camera and depth heads on the first pass's tokens (vggts_ros.geometry.camera)",
        details="Each result then carries its target's and its source's ViewGeometry in frame pixels (depth, "
                "confidence, intrinsics, pose relative to the source camera; unknown scale). Needs a backbone "
                "with BackboneConfig.geometry_heads (the constructors build one).")
    backbone_dtype: str = param("", doc="", renamed_to="precision", value_map=_DTYPE_TO_PRECISION)

    def __post_init__(self) -> None:
        fold_renamed(self, "PipelineConfig.")


@dataclass
class GeometricConfig:
    """The weight-free backend (``vggts_ros/geometric.py``, ``model.backend: geometric``): SIFT
    with simulated tilts, RANSAC homography plus a local correction, GrabCut, and a
    scene-homography + colour fallback."""

    n_points: int = param(5, doc="prompt points sampled in the source mask (K-means, as the learned pipeline)",
                          range=(1, 64))
    contrast_threshold: float = param(0.02, doc="SIFT contrast threshold (lower: more, weaker keypoints)",
                                      range=(0.0, 1.0))
    tilts: Tuple[float, ...] = param((1.0, 1.41, 2.0), doc="ASIFT tilts simulated on the source (1: as is)",
                                     range=(1.0, 10.0))
    tilt_angles: Tuple[float, ...] = param((0.0, 45.0, 90.0, 135.0), doc="degrees, directions of the simulated "
                                           "tilts", range=(0.0, 360.0))
    source_features: int = param(3000, doc="SIFT keypoints kept per simulated source view (strongest); 0 = all",
                                 range=(0, 1_000_000))
    target_features: int = param(10000, doc="SIFT keypoints kept on the target; 0 = all", range=(0, 1_000_000))
    target_upscale: float = param(2.0, doc="the target is upsampled by this before SIFT (small far objects still "
                                           "give keypoints)", range=(0.1, 8.0))
    max_target_pixels: int = param(1_000_000, doc="largest target width x height after upscaling",
                                   range=(1, 1 << 31))
    ratio: float = param(0.8, doc="Lowe's ratio test threshold", range=(0.0, 1.0))
    min_matches: int = param(8, doc="fewer ratio-test matches: no transfer (empty mask)", range=(4, 1_000_000))
    min_inliers: int = param(8, doc="fewer RANSAC inliers: no transfer (empty mask)", range=(4, 1_000_000))
    ransac_thresh: float = param(0.015, doc="RANSAC reprojection threshold, fraction of the target diagonal",
                                 range=(1e-6, 1.0))
    support_factor: float = param(3.0, doc="support band = this x the RANSAC threshold", range=(1.0, 100.0))
    local_sigma: float = param(0.2, doc="width of the local correction, fraction of the object size "
                                        "(sqrt of the mask area)", range=(1e-6, 100.0))
    local_prior: float = param(0.5, doc="weight pulling the local correction to zero where matches are few",
                               range=(0.0, 1e6))
    grabcut: bool = param(True, doc="refine the transferred mask with GrabCut")
    grabcut_iters: int = param(5, doc="GrabCut iterations", range=(1, 100))
    band_gain: float = param(
        1.5, doc="GrabCut's uncertain band: band_gain x (log(s1/s2) - band_deadzone), in object sizes",
        range=(0.0, 100.0),
        details="s1/s2: singular values of the homography's local Jacobian (out-of-plane rotation makes "
                "silhouettes differ); capped at band_max, never below band_min_px.")
    band_deadzone: float = param(0.08, doc="see band_gain", range=(0.0, 10.0))
    band_max: float = param(0.5, doc="cap of the uncertain band, in object sizes", range=(0.0, 10.0))
    band_min_px: int = param(3, doc="px, floor of the uncertain band", range=(0, 10_000))
    crop_margin: int = param(16, doc="px around the transferred mask in GrabCut's crop", range=(0, 10_000))
    fallback: bool = param(True, doc="when the object's own features do not localise it, the surrounding "
                                     "scene's homography predicts its place and a colour model finds it there")
    context_radius: float = param(1.5, doc="ring around the object whose features the fallback matches, in "
                                           "object sizes", range=(1e-3, 100.0))
    colour_bins: Tuple[int, int, int] = param((4, 16, 16), doc="L, a, b histogram bins of the fallback's colour "
                                              "model", range=(1, 256))
    min_colour_distance: float = param(0.35, doc="Bhattacharyya distance object vs surroundings below which "
                                                 "the fallback has no colour model (above 1: never)",
                                       range=(0.0, 2.0))
    search_margin: float = param(0.75, doc="searched around the predicted region, in predicted object sizes",
                                 range=(0.0, 100.0))
    fallback_area: Tuple[float, float] = param((0.25, 4.0), doc="accepted area / predicted area of the "
                                               "fallback's mask (low, high)", range=(1e-6, 1e6))
    fallback_min_area: int = param(64, doc="source mask pixels below which the fallback has no colour model",
                                   range=(0, 1 << 31))


@dataclass
class ModelConfig:
    """Which backend and network run, where their weights come from and on which device."""

    backend: str = param("vggts", doc="segmentation backend (geometric: the weight-free baseline, settings "
                                      "model.geometric.*)", choices=BACKENDS)
    config: str = param("vggt-1b", doc="network preset (test-tiny: deterministic test weights, meaningless on real "
                                       "images)", choices=MODEL_PRESETS)
    vggt_checkpoint: str = param("facebook/VGGT-1B", doc="VGGT-1B model.pt: a local file, a directory or a "
                                                         "Hugging Face repo id")
    head_checkpoint: str = param("zbbhhh/VGGT-S", doc="VGGT-S head main_exp.pth: a local file, a directory or "
                                                      "a repo id")
    device: str = param("auto", doc="where the model runs (auto: CUDA when available)", choices=DEVICES,
                        pattern=(r"cuda:\d+", "cuda:<index>"))
    dtype: str = param("", doc="", renamed_to="inference.precision", value_map=_DTYPE_TO_PRECISION)
    geometric: GeometricConfig = field(default_factory=GeometricConfig)


def precision_of(model: ModelConfig, pipeline: Optional[PipelineConfig]) -> PipelineConfig:
    """``pipeline`` with the deprecated ``ModelConfig.dtype`` folded into its ``precision``
    (what :meth:`VGGTSegmentor.from_config` runs; a NodeConfig folds ``model.dtype`` itself)."""
    pipeline = pipeline or PipelineConfig()
    if not model.dtype:
        return pipeline
    mode = renamed_value("ModelConfig.dtype", model.dtype, "PipelineConfig.precision", pipeline.precision,
                         "float32", _DTYPE_TO_PRECISION)
    return dataclasses.replace(pipeline, precision=mode)


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


# ---------------------------------------------------------------------------------------
# Node configuration: the `ros__parameters` of config/*.yaml, usable without ROS.
# ---------------------------------------------------------------------------------------
@dataclass
class CameraConfig:
    """The cameras: ``cameras`` names them in order, ``camera.<name>.*`` sets each one.

    Every field with a ``param`` is a ``camera.<name>.<field>`` parameter."""

    name: str
    topic: str = param("", doc="image topic (empty: <name>/image_raw[/compressed]); relative names resolve in "
                                "the node namespace")
    role: str = param("exo", doc="exo/aerial/ground targets are cropped around the projected points, ego "
                                 "ones resized whole", choices=ROLES,
                      details="A square ego target is resized whole (the reference); a non-square one takes the "
                              "crop path (docs/fidelity.md).")
    compressed: bool = param(False, doc="sensor_msgs/CompressedImage instead of Image")
    required: bool = param(False, doc="sets are never made without this camera")
    depth_topic: str = param("", doc="registered depth image (32FC1 metres or 16UC1 millimetres, aligned to the "
                                     "colour image) for objects in 3D; empty = none",
                             details="A depth image of another size with the same aspect ratio is scaled to the "
                                     "colour image (nearest). Matched to the colour frame by stamp within sync.slop "
                                     "(docs/geometry.md).")
    intrinsics: List[float] = param(default_factory=list, doc="fx, fy, cx, cy in the colour image's pixels; empty = "
                                                              "from the camera_info beside the image topic",
                                    details="Write floats in a parameters file (`[525.0, 525.0, 319.5, 239.5]`): a "
                                            "ROS list of mixed integers and floats is refused.")
    pose: List[float] = param(default_factory=list, doc="x, y, z, qx, qy, qz, qw: the camera's optical frame in "
                                                        "geometry.frame (static extrinsics); empty = unknown",
                              details="The camera named by geometry.frame is the identity when another camera has "
                                      "a pose. With poses, objects are fused over the cameras (~/objects3d).")

    def resolved_topic(self) -> str:
        """The topic as given, else ``<name>/image_raw[/compressed]``, relative so that a
        node namespace applies to it."""
        return self.topic or f"{self.name}/image_raw" + ("/compressed" if self.compressed else "")


@dataclass
class SyncConfig:
    """The approximate-time synchroniser that groups the cameras' frames into sets
    (``vggts_ros/sync.py``)."""

    slop: float = param(0.05, doc="s, largest stamp difference inside one synchronised set", range=(1e-6, 10.0),
                        live=True)
    queue_size: int = param(10, doc="messages kept per camera while waiting for partners", range=(1, 1000),
                            live=True)
    stale_after: float = param(1.0, doc="s, a camera silent (or matching nothing) this long is left out of sets",
                               range=(1e-3, 3600.0), live=True)
    min_cameras: int = param(2, doc="cameras a set holds at least (at most the number of cameras)", range=(1, 64),
                             live=True)
    jump_threshold: float = param(1.0, doc="s, stamps going back (or ahead) more than this are a time jump "
                                           "(a looped bag)", range=(1e-3, 1e6), live=True)
    correct_offset_above: float = param(0.25, doc="s, camera clock offsets estimated above this are corrected "
                                                  "(0: never)", range=(0.0, 1e9), live=True)
    stale_periods: float = param(
        0.0, doc="k > 0: a camera is stale after max(sync.stale_after_min, k x its measured frame period); "
                 "0: always sync.stale_after (5 is a good k)", range=(0.0, 1000.0), live=True,
        details="Until a camera's rate is known, sync.stale_after applies.")
    stale_after_min: float = param(0.25, doc="s, floor of the rate-following stale limit (sync.stale_periods > 0)",
                                   range=(1e-3, 3600.0), live=True)


@dataclass
class InferenceConfig:
    """How each synchronised set is processed: pipeline settings, object limits, rate."""

    refine_iterations: int = param(1, **_REFINE)
    precision: str = param("float32", **_PRECISION)
    point_identity: str = param("accumulate", **_POINT_IDENTITY)
    source_mode: str = param("keyframe", doc="keyframe: a mask stays on the frame it was drawn on; track: it "
                                             "follows the object in the source camera", choices=SOURCE_MODES,
                             live=True)
    max_rate: float = param(0.0, doc="sets/s processed at most; 0 = as fast as the model runs", range=(0.0, 1000.0),
                            live=True, details="When the period has passed the newest waiting set is taken.")
    keyframe_history: float = param(2.0, doc="s of frames kept per camera (at most 120) to find the frame a mask "
                                             "was drawn on", range=(1e-3, 60.0), live=True)
    max_objects: int = param(32, doc="objects tracked at once (each costs a pipeline call per set)",
                             range=(1, 255), live=True)
    max_label_length: int = param(256, doc="characters of an object label", range=(0, 65536), live=True)
    max_image_pixels: int = param(16_777_216, doc="largest width x height of a frame or mask, checked before "
                                                  "decoding", range=(1, 1 << 31), live=True,
                                  details="Compressed frames: from the PNG/JPEG header.")
    temporal: bool = param(False, **_TEMPORAL)
    memory_frames: int = param(6, **_MEMORY_FRAMES)
    temporal_weights: str = param("", **_TEMPORAL_WEIGHTS)
    warm_up: bool = param(True, doc="run the backend once on a synthetic pair at start, so the first mask is not "
                                    "slow")

    def pipeline(self, base: Optional[PipelineConfig] = None) -> PipelineConfig:
        """``base`` (default: the paper's recipe) with the settings this section shares
        with :class:`PipelineConfig` (refinement, precision, point identity, temporal)."""
        shared = {f.name for f in dataclasses.fields(PipelineConfig)} & {f.name for f in dataclasses.fields(self)}
        return dataclasses.replace(base or PipelineConfig(), **{k: getattr(self, k) for k in sorted(shared)})


@dataclass
class PublishConfig:
    """What the node publishes besides masks and points, and its health reporting."""

    overlay: bool = param(False, doc="also publish ~/<camera>/overlay images")
    diagnostics_period: float = param(1.0, doc="s between /diagnostics messages", range=(1e-2, 3600.0))
    stall_timeout: float = param(0.0, doc="s without output (objects set) before diagnostics say ERROR; "
                                          "0 = max(2 periods, 3 x median set time)", range=(0.0, 1e6), live=True)
    # Masks at camera rate (vggts_ros.propagation_stage): every target frame between two
    # cross-view results gets the latest masks moved by a per-camera tracker.
    propagation: bool = param(False, doc="masks on every target frame between cross-view results, moved by a "
                                         "per-camera tracker")
    max_age: float = param(2.0, doc="s since its cross-view result after which a propagated mask is not "
                                    "published as good", range=(1e-3, 3600.0), live=True)
    refresh_pairs: int = param(0, doc="(object, target) pairs per cross-view step, oldest refresh first; "
                                      "0 = all", range=(0, 65025), live=True)


@dataclass
class ObjectsConfig:
    """The objects the node follows, beyond its lifetime."""

    state_dir: str = param("", doc="directory where objects are saved when they change and restored from at start "
                                   "(survive a restart); empty = in memory only",
                           details="One file per object, written atomically (`vggts_ros/object_store.py`); the "
                                   "launch file sets one.")


@dataclass
class GeometryConfig:
    """Objects in 3D (docs/geometry.md): per camera from its depth topic or VGGT's depth head,
    fused over the cameras whose poses are known (camera.<name>.pose or VGGT's camera head)."""

    enabled: bool = param(True, doc="objects in 3D (~/<camera>/objects3d, ~/objects3d, ~/<camera>/object_cloud) "
                                    "for the cameras with a depth topic or VGGT's depth head")
    vggt_heads: bool = param(True, doc="VGGT's camera and depth heads with model.backend vggts (the geometric "
                                       "backend has none): every camera's depth and pose",
                             details="On: 2.7 % of a set's compute and +1.0 GB of float32 weights "
                                     "(docs/geometry.md, \"VGGT's geometry heads\").")
    baseline: str = param("", doc="'cam_a,cam_b,metres': the distance between two cameras, a metric scale for "
                                  "VGGT's geometry without a depth topic; empty = none")
    frame: str = param("", doc="frame of the fused objects: a camera name (its optical frame) or the frame "
                               "camera.<name>.pose is given in; empty = the first camera")


# ROS parameters the node accepts besides its own (never an error, never read).
_FOREIGN = ("use_sim_time", "qos_overrides.")


@dataclass
class NodeConfig:
    cameras: List[CameraConfig] = param(default_factory=list, doc="camera names, in order (at least two)")
    sync: SyncConfig = field(default_factory=SyncConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    objects: ObjectsConfig = field(default_factory=ObjectsConfig)
    geometry: GeometryConfig = field(default_factory=GeometryConfig)

    def __post_init__(self) -> None:
        fold_renamed(self)  # model.dtype -> inference.precision, with a deprecation warning

    def camera(self, name: str) -> CameraConfig:
        for cam in self.cameras:
            if cam.name == name:
                return cam
        raise KeyError(name)

    def validate(self) -> "NodeConfig":
        """Raise one ValueError naming every invalid setting; return self."""
        errors = []
        names = [c.name for c in self.cameras]
        if len(names) < 2:
            errors.append(f"cameras: need at least two cameras, got {names}")
        if len(set(names)) != len(names):
            errors.append(f"cameras: duplicate names in {names}")
        for cam in self.cameras:
            if not isinstance(cam.name, str) or not cam.name or not cam.name.replace("_", "").isalnum():
                errors.append(f"camera {cam.name!r}: names must be non-empty letters, digits or '_'")
            errors += field_errors(cam, f"camera.{cam.name}")
        topics = [c.resolved_topic() for c in self.cameras]
        if len(set(topics)) != len(topics):
            errors.append(f"camera topics must differ, got {topics}")
        errors += field_errors(self)
        if max(1, len(names)) < self.sync.min_cameras <= 64:  # beyond 64: the range check says so
            errors.append(f"sync.min_cameras must be in [1, {len(names)}] (the number of cameras), "
                          f"got {self.sync.min_cameras}")
        errors += self._geometry_errors(names, topics)
        if errors:
            raise ValueError("invalid vggts configuration:\n  " + "\n  ".join(errors))
        return self

    def vggt_heads(self) -> bool:
        """Whether VGGT's heads run: ``geometry.vggt_heads`` with the VGGT backend."""
        return bool(self.geometry.vggt_heads and self.model.backend == "vggts")

    def reference_frame(self) -> str:
        """``geometry.frame``, or the first camera's name when it is empty."""
        return self.geometry.frame or (self.cameras[0].name if self.cameras else "")

    def _geometry_errors(self, names: List[str], topics: List[str]) -> List[str]:
        """Depth topics, intrinsics, poses and the baseline (objects in 3D)."""
        import math

        errors = []
        norm = lambda t: "/" + t.strip("/")  # noqa: E731 - relative and absolute names of one topic
        images = {norm(t) for t in topics}
        depth_topics = [c.depth_topic for c in self.cameras if c.depth_topic]
        for cam in self.cameras:
            key = f"camera.{cam.name}"
            if cam.depth_topic and norm(cam.depth_topic) in images:
                errors.append(f"{key}.depth_topic: {cam.depth_topic!r} is a camera image topic; give the "
                              "registered depth image's topic (e.g. <camera>/aligned_depth_to_color/image_raw)")
            if cam.depth_topic and depth_topics.count(cam.depth_topic) > 1:
                errors.append(f"{key}.depth_topic: {cam.depth_topic!r} is the depth topic of several cameras")
            if cam.intrinsics:
                v = cam.intrinsics
                if len(v) != 4:
                    errors.append(f"{key}.intrinsics: needs 4 numbers fx, fy, cx, cy (or empty for camera_info), "
                                  f"got {len(v)}: {list(v)}")
                elif not all(math.isfinite(x) for x in v) or v[0] <= 0 or v[1] <= 0:
                    errors.append(f"{key}.intrinsics: fx and fy must be positive and all four finite, got {list(v)}")
            if cam.pose:
                v = cam.pose
                if len(v) != 7:
                    errors.append(f"{key}.pose: needs 7 numbers x y z qx qy qz qw (the camera's optical frame in "
                                  f"geometry.frame; empty = unknown), got {len(v)}: {list(v)}")
                elif not all(math.isfinite(x) for x in v):
                    errors.append(f"{key}.pose: every number must be finite, got {list(v)}")
                elif abs(math.sqrt(sum(x * x for x in v[3:])) - 1.0) > 1e-3:
                    errors.append(f"{key}.pose: the quaternion (qx qy qz qw) {list(v[3:])} is not a unit quaternion "
                                  f"(norm {math.sqrt(sum(x * x for x in v[3:])):.4g})")
        g = self.geometry
        if g.baseline:
            from vggts_ros.geometry.scale import ScaleError, check_baseline, parse_baseline

            try:
                check_baseline(parse_baseline(g.baseline), names)
            except ScaleError as exc:
                errors.append(str(exc))
        if g.frame and g.frame != g.frame.strip():
            errors.append(f"geometry.frame: {g.frame!r} has leading or trailing spaces")
        return errors

    # -- flat ROS parameters ------------------------------------------------------------

    def to_parameters(self) -> Dict[str, Any]:
        """Flatten to ROS parameter names (``sync.slop``, ``camera.ego.topic``,
        ``model.geometric.ratio``, ...); tuples become lists."""
        params: Dict[str, Any] = {"cameras": [c.name for c in self.cameras]}
        for cam in self.cameras:
            for key, value in flatten(cam).items():
                params[f"camera.{cam.name}.{key}"] = cam.resolved_topic() if key == "topic" else _ros_value(value)
        for name, value in flatten(self, skip=("cameras",)).items():
            params[name] = _ros_value(value)
        return params

    @classmethod
    def from_parameters(cls, params: Dict[str, Any]) -> "NodeConfig":
        """Build from flat ROS parameter names; unknown names are an error, values are
        converted by the fields' types (``vggts_ros.schema.coerce``)."""
        params = dict(params)
        names = params.pop("cameras", []) or []
        if isinstance(names, str) or not hasattr(names, "__iter__"):
            raise ValueError(f"cameras: expected a list of camera names, got {names!r}")
        cameras = []
        for name in list(names):
            values = {k: params.pop(f"camera.{name}.{k}") for k in CAMERA_KEYS if f"camera.{name}.{k}" in params}
            cameras.append(from_dict(CameraConfig, dict(values, name=name), f"camera.{name}"))
        known = set(_SECTION_PARAMETERS)
        unknown = []
        for key in params:
            if key in known or key.startswith(_FOREIGN):
                continue
            unknown.append(f"{key} (camera not listed in 'cameras')" if key.startswith("camera.") else key)
        if unknown:
            raise ValueError(f"unknown vggts parameter(s): {sorted(unknown)}")
        tree = unflatten({k: v for k, v in params.items() if k in known})
        return from_dict(cls, dict(tree, cameras=cameras), "")

    def with_parameters(self, changes: Dict[str, Any]) -> "NodeConfig":
        """A copy with some parameters changed (flat names, as :meth:`to_parameters`)."""
        return NodeConfig.from_parameters({**self.to_parameters(), **changes})


def _ros_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


# ---------------------------------------------------------------------------------------
# What the node declares, derived from the fields above.
# ---------------------------------------------------------------------------------------
def _ros_range(entry) -> Optional[Tuple[Any, Any]]:
    """A descriptor range (both ends, in the field's type) for a scalar number, else None."""
    rng = entry.spec.range
    if rng is None or None in rng or entry.annotation not in (int, float):
        return None
    return tuple(entry.annotation(v) for v in rng)


_SECTION_PARAMETERS = parameters(NodeConfig, skip=("cameras",))
_CAMERA_PARAMETERS = parameters(CameraConfig)

# name -> (description, live (changeable while running), descriptor range or None).
# Everything not live needs a restart (the node refuses to change it).
PARAMETERS: Dict[str, Tuple[str, bool, Optional[Tuple[Any, Any]]]] = {
    entry.name: (entry.spec.summary(), entry.spec.live, _ros_range(entry))
    for entry in parameters(NodeConfig).values()
}
CAMERA_KEYS: Tuple[str, ...] = tuple(_CAMERA_PARAMETERS)
CAMERA_PARAMETERS: Dict[str, str] = {key: e.spec.summary() for key, e in _CAMERA_PARAMETERS.items()}
CAMERA_DEFAULTS: Dict[str, Any] = {key: _ros_value(e.default) for key, e in _CAMERA_PARAMETERS.items()}
# Deprecated spellings the node still accepts: old name -> new name.
DEPRECATED_PARAMETERS: Dict[str, str] = {
    e.name: e.spec.renamed_to for e in parameters(NodeConfig).values() if e.spec.renamed_to}


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
