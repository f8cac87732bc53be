"""VGGT-S inference: from a source image and mask to target-view masks (SPEC "The pipeline").

``VGGTSegmentor._run`` is the SPEC's stage list; every view geometry comes from
:mod:`vggts_ros.transforms` (the same functions the training loader uses):

1. **source view and prompts** (steps 1, 2, 4): a square source frame is resized to the
   network size, a non-square one cut to the short-side square around the mask's mean
   (reference ``clip_exo_mean``, never letterboxed); K-means points of its mask (50 for
   cropped targets, 5 for whole-frame targets); the R=2 zoom on the mask and its 5 prompts;
2. **first pass** (step 2): one backbone pass over ``[source view, target 1, ..., N]``
   (targets letterboxed; a square one is simply resized), then the tracker per query set;
   with ``PipelineConfig.geometry_heads`` VGGT's camera and depth heads run on the same
   pass's tokens and each result gets its target's and source's geometry in frame pixels;
3. **target inputs** (step 3): a cropped target gets the square crop around its
   projected points (10 outliers dropped, side from the schedule scaled by the frame's
   short side) and 5 clustered prompts; a whole-frame target is resized and its prompts
   are the 5 tracked K-means points clipped to the view (reference exo->ego recipe);
4. **features** (step 5): one backbone pass over ``[source zoom, target input 1, ..., N]``;
5. **head and refinement** (steps 6, 7): encoded once, decoded ``1 + refine_iterations`` times;
6. **recovery** (step 8): each target's transform maps the logits (outside = -32) and the
   prompts back into its frame; mask = logits > 0.

Which targets are cropped: exo, aerial and ground targets, **and every non-square target
whatever its role**. Only a square ego target is resized whole (the reference, bit for
bit). The reference has no non-square ego target; resizing one to 518x518 would squash
it (1.78x for 16:9) and the head only ever saw undistorted views. Of the undistorted
treatments, the square crop around the projected points is chosen over a letterbox
because it is an input the head was trained on (the exo targets' crops: no padding, the
object at the reference's zoom), while a letterbox shows the head a grey band it never saw
and shrinks the object by the aspect ratio. The crop's transform maps logits and points
back exactly (outside the crop = -32).

Design decisions:

* The tracker's space attention mixes query points, so tracking several objects' points in
  one call would make each object's mask depend on the others. The backbone (the
  expensive part) runs once per distinct source view (all objects of a square source
  share it; objects whose mask-mean squares differ get their own), the tracker once per
  object and query set on those features. Hence ``segment_objects`` returns exactly what
  ``segment`` returns for each object alone. ``joint_tracking=True`` tracks all query
  sets of one source view in one call instead.
* Refinement reproduces the reference *evaluation loop*, which produced the published
  numbers: its prompt encoder adds the source-point identity embedding to the point
  features in place and the loop passes the same tensor to every pass, so pass k carries
  that embedding k + 1 times (the head was trained the same way).
  ``accumulate_point_identity=False`` adds it once per pass.
* Several targets of one object share one features pass (SPEC multi-view rule); with a
  single target this is exactly the reference pair. ``multi_view_features=False`` runs one
  pass per (source zoom, target) pair instead.
* ``batch_features=True`` (the default) runs the features passes of all objects of a set
  as one batched backbone call (up to ``max_feature_batch`` sequences per call): each
  sequence attends only within itself, so the outputs are those of one call per object up
  to float32 rounding; the call is timed once, as the shared stage ``features_batch``.
* ``PipelineConfig.second_pass`` re-tracks K-means points of the source zoom into each
  target input with the features pass (no extra backbone pass) and re-clusters the prompts.
* The network size comes from the model (the head's ``img_size``); the pipeline config's
  ``image_size`` is overridden by it.
* Reported source points are true correspondences of the target prompts: for a cropped
  target, the mean source point of the first-pass points clustered into each prompt; for
  a whole-frame target, the tracked source point itself.
* The score (mean foreground probability) is computed on the device; the frame logits
  are copied to the host once.
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from vggts_ros import crops, precision, prompts, stream_reuse, transforms
from vggts_ros.config import ModelConfig, ModelPreset, PipelineConfig, model_preset, precision_of
from vggts_ros.device import resolve_device
from vggts_ros.models.union_head.refinement import check_identity, decode_with_refinement
from vggts_ros.stream import StreamState, StreamStep, check_stream
from vggts_ros.stream_reuse import StreamReuse
from vggts_ros.temporal import StreamRef, TemporalState, memory_from_config
from vggts_ros.types import CROPPED_ROLES, SegmentationResult, TargetView

OUTSIDE_LOGIT = transforms.OUTSIDE_LOGIT


# =======================================================================================
# Plain data passed between the stages
# =======================================================================================
@dataclass
class Tracks:
    """Tracker output for one set of query points over ``S`` views (network pixels)."""

    coords: np.ndarray  # [S, N, 2] float32, unclipped
    vis: np.ndarray  # [S, N] float32
    conf: np.ndarray  # [S, N] float32


@dataclass
class SourceInput:
    """One object's source as the networks see it (stage 1)."""

    view: transforms.SourceView
    first_points: Optional[np.ndarray]  # [n, 2] K-means points of view.mask, for cropped targets
    direct_points: Optional[np.ndarray]  # [P, 2] K-means points of view.mask, for whole-frame targets
    prompts: np.ndarray  # [P, 2] the head's source prompts (zoom px)

    @property
    def crop_image(self) -> np.ndarray:
        return self.view.crop_image

    @property
    def crop_mask(self) -> np.ndarray:
        return self.view.crop_mask


@dataclass
class TargetInput:
    """One (object, target) view as the head sees it, and how to map it back."""

    image: np.ndarray  # size x size x 3
    prompts: np.ndarray  # [P, 2] float32, pixels of ``image``
    transform: transforms.ViewTransform  # frame -> ``image``
    source_points: np.ndarray  # [P, 2] source-frame pixels corresponding to ``prompts``
    visibility: np.ndarray  # [P]
    confidence: np.ndarray  # [P]
    stages: Dict[str, object] = dataclasses.field(default_factory=dict)  # intermediate values (tests)


def is_cropped(view: TargetView) -> bool:
    """The target rule of the module docstring: only square ego targets are resized whole."""
    h, w = view.image.shape[:2]
    return view.role in CROPPED_ROLES or h != w


def _group_means(values: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Mean of ``values`` rows per label ``0..k-1``; a label without members takes the
    first row's value (prompt padding repeats the first point)."""
    values = np.asarray(values, dtype=np.float64)
    out = np.empty((k,) + values.shape[1:], dtype=np.float64)
    for c in range(k):
        members = values[labels == c]
        out[c] = members.mean(axis=0) if len(members) else values[0]
    return out


def _backbone_config(preset: ModelPreset, pipeline: Optional[PipelineConfig]):
    """The preset's backbone, with the geometry heads when the pipeline asks for them."""
    on = bool(pipeline is not None and pipeline.geometry_heads)
    return dataclasses.replace(preset.backbone, geometry_heads=on) if on else preset.backbone


class _StageClock:
    """Wall time per stage name (synchronising CUDA at the boundaries)."""

    def __init__(self, sync) -> None:
        self.sync = sync
        self.times: Dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.sync()
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - t0


# =======================================================================================
# Input checks
# =======================================================================================
def _check_image(image, what: str) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{what} must be a NumPy HxWx3 uint8 RGB array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{what} must be HxWx3 (RGB), got shape {tuple(image.shape)}")
    if image.dtype != np.uint8:
        raise ValueError(f"{what} must have dtype uint8, got {image.dtype}")
    h, w = image.shape[:2]
    if h < 2 or w < 2:
        raise ValueError(f"{what} is too small ({w}x{h} pixels)")
    return image


def _check_mask(mask, image_hw: Tuple[int, int], what: str) -> np.ndarray:
    if not isinstance(mask, np.ndarray):
        raise ValueError(f"{what} must be a NumPy HxW array, got {type(mask).__name__}")
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise ValueError(f"{what} must be HxW, got shape {tuple(mask.shape)}")
    if tuple(mask.shape) != tuple(image_hw):
        raise ValueError(
            f"{what} is {mask.shape[1]}x{mask.shape[0]} but the source image is "
            f"{image_hw[1]}x{image_hw[0]} (width x height)"
        )
    if mask.dtype.kind not in "biuf":
        raise ValueError(f"{what} must be boolean or numeric, got dtype {mask.dtype}")
    if mask.dtype.kind == "f" and not np.isfinite(mask).all():
        raise ValueError(f"{what} contains NaN or infinite values")
    binary = mask > 0
    if not binary.any():
        raise ValueError(f"{what} is empty: no nonzero pixel marks the object")
    return binary


def _check_letterbox(hw: Tuple[int, int], size: int, what: str) -> None:
    h, w = hw
    short = min(h, w) * size / max(h, w)
    if h != w and round(short / transforms.PATCH) * transforms.PATCH == 0:
        raise ValueError(f"{what} ({w}x{h}) is too elongated for a {size} px network input")


# =======================================================================================
# The segmentor
# =======================================================================================
class VGGTSegmentor:
    """VGGT-S with a :class:`VGGTBackbone` and a :class:`UnionSegmentationHead`.

    Satisfies :class:`vggts_ros.types.Segmentor`. Images are HxWx3 uint8 RGB NumPy arrays,
    masks HxW (nonzero = object); every result is in the target frame's pixels.
    """

    name = "vggts"

    def __init__(
        self,
        backbone,
        head,
        pipeline_cfg: Optional[PipelineConfig] = None,
        device: str | torch.device = "cpu",
        image_size: Optional[int] = None,
        *,
        accumulate_point_identity: Optional[bool] = None,
        multi_view_features: bool = True,
        joint_tracking: bool = False,
        batch_features: bool = True,
        max_feature_batch: int = 8,
    ) -> None:
        size = int(image_size if image_size is not None else head.cfg.img_size)
        if head.cfg.img_size != size:
            raise ValueError(f"image_size {size} differs from the head's img_size {head.cfg.img_size}")
        if size % transforms.PATCH:
            raise ValueError(f"image_size must be a multiple of {transforms.PATCH}, got {size}")
        cfg = dataclasses.replace(pipeline_cfg or PipelineConfig(), image_size=size)
        if cfg.refine_iterations < 0:
            raise ValueError(f"refine_iterations must be >= 0, got {cfg.refine_iterations}")
        if cfg.first_pass_points < 1 or cfg.prompt_points < 1:
            raise ValueError("first_pass_points and prompt_points must be >= 1")
        if cfg.crop_schedule not in crops.CROP_SCHEDULES:
            raise ValueError(
                f"unknown crop_schedule {cfg.crop_schedule!r}; expected one of {list(crops.CROP_SCHEDULES)}"
            )
        if cfg.source_crop_ratio <= 0:
            raise ValueError(f"source_crop_ratio must be > 0, got {cfg.source_crop_ratio}")
        precision.check_mode(cfg.precision)
        if accumulate_point_identity is not None:  # the keyword wins over the config
            cfg = dataclasses.replace(cfg, point_identity="accumulate" if accumulate_point_identity else "per_pass")
        check_identity(cfg.point_identity)
        self.device = torch.device(device)
        self.dtype = precision.model_dtype(cfg.precision)
        self.backbone = backbone.to(self.device, self.dtype).eval()
        self.head = head.to(self.device, self.dtype).eval()
        # the one place precision reaches the backbone: it runs its aggregator under this
        # autocast and its DPT/tracker without (vggts_ros.precision); the head's autocast is decode()'s
        self.backbone.dtype = precision.backbone_dtype(cfg.precision, self.device)
        if cfg.geometry_heads and getattr(self.backbone, "camera_head", None) is None:
            raise ValueError("PipelineConfig.geometry_heads needs a backbone built with "
                             "BackboneConfig.geometry_heads (camera_head.* and depth_head.* of model.pt)")
        self.cfg = cfg
        self.image_size = size
        self.multi_view_features = bool(multi_view_features)
        self.joint_tracking = bool(joint_tracking)
        if int(max_feature_batch) < 1:
            raise ValueError(f"max_feature_batch must be >= 1, got {max_feature_batch}")
        self.batch_features = bool(batch_features)
        self.max_feature_batch = int(max_feature_batch)
        # Temporal VGGT-S: the memory modules (None when off); the banks are in each caller's
        # StreamState (init_stream), used by streamed calls only
        self.memory = memory_from_config(cfg.temporal, cfg.memory_frames, cfg.temporal_weights, self.head,
                                         self.device)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, model: ModelConfig, pipeline: Optional[PipelineConfig] = None) -> "VGGTSegmentor":
        """Build from the typed configuration (what ``backends.create_segmentor`` calls).

        ``vggt-1b`` loads ``model.vggt_checkpoint`` / ``model.head_checkpoint`` (paths,
        directories or Hugging Face repo ids). Presets with weight seeds (``test-tiny``)
        use the deterministic weights while both checkpoints are left at the published
        defaults (which cannot fit them); naming both loads them into the preset's
        networks instead (e.g. checkpoints of a trained small model). The numeric mode is
        ``pipeline.precision`` (the deprecated ``model.dtype`` is folded into it).
        """
        preset = model_preset(model.config)
        device = resolve_device(model.device)
        pipeline = precision_of(model, pipeline)
        defaults = ModelConfig()
        if preset.backbone_seed is not None:
            given = [
                model.vggt_checkpoint != defaults.vggt_checkpoint,
                model.head_checkpoint != defaults.head_checkpoint,
            ]
            if not any(given):
                return cls.deterministic(model.config, pipeline, device=device)
            if not all(given):
                raise ValueError(
                    f"model config {model.config!r} uses deterministic weights unless both the VGGT and "
                    f"the head checkpoint are given; got only the {'VGGT' if given[0] else 'head'} checkpoint"
                )
        return cls.from_checkpoints(
            model.vggt_checkpoint, model.head_checkpoint, preset=model.config, pipeline=pipeline, device=device,
        )

    @classmethod
    def deterministic(
        cls,
        preset: str | ModelPreset = "test-tiny",
        pipeline: Optional[PipelineConfig] = None,
        device: str = "cpu",
        **options,
    ) -> "VGGTSegmentor":
        """The preset's networks filled by the fixtures' deterministic weight rule (numeric
        mode: ``pipeline.precision``)."""
        from vggts_ros.models.backbone import VGGTBackbone
        from vggts_ros.models.deterministic import fill_deterministic
        from vggts_ros.models.union_head import UnionSegmentationHead

        p = model_preset(preset) if isinstance(preset, str) else preset
        if p.backbone_seed is None or p.head_seed is None:
            raise ValueError("this preset has no weight seeds; its weights come from checkpoints")
        backbone = VGGTBackbone(_backbone_config(p, pipeline)).fill_deterministic(p.backbone_seed)
        head = fill_deterministic(UnionSegmentationHead(p.head), p.head_seed)
        return cls(backbone, head, pipeline, device=device, image_size=p.image_size, **options)

    @classmethod
    def from_checkpoints(
        cls,
        vggt: str,
        head: str,
        preset: str | ModelPreset = "vggt-1b",
        pipeline: Optional[PipelineConfig] = None,
        device: str = "cpu",
        **options,
    ) -> "VGGTSegmentor":
        """Load ``model.pt`` (flat VGGT state dict; the heads not asked for skipped) and
        ``main_exp.pth`` (``{"model": ...}``, ``module.`` prefix allowed) into the preset's
        networks (numeric mode: ``pipeline.precision``)."""
        from vggts_ros.models.backbone import VGGTBackbone
        from vggts_ros.models.union_head import UnionSegmentationHead

        p = model_preset(preset) if isinstance(preset, str) else preset
        backbone = VGGTBackbone.from_pretrained(vggt, cfg=_backbone_config(p, pipeline), map_location="cpu")
        head_net = UnionSegmentationHead.from_pretrained(head, cfg=p.head)
        return cls(backbone, head_net, pipeline, device=device, image_size=p.image_size, **options)

    @classmethod
    def from_pretrained(
        cls,
        vggt: str = "facebook/VGGT-1B",
        head: str = "zbbhhh/VGGT-S",
        device: str = "auto",
        **pipeline_kwargs,
    ) -> "VGGTSegmentor":
        """The published model, e.g. ``VGGTSegmentor.from_pretrained(refine_iterations=2,
        precision="bf16")`` (keywords: :class:`PipelineConfig` fields)."""
        pipeline = PipelineConfig(**pipeline_kwargs)
        return cls.from_checkpoints(vggt, head, "vggt-1b", pipeline, device=resolve_device(device))

    # ------------------------------------------------------------------ public API
    def init_stream(self) -> StreamState:
        """A new, empty stream state for :meth:`segment_objects` (``state=``): the Temporal
        VGGT-S memory banks (``PipelineConfig.temporal``) and the stream-reuse record
        (``PipelineConfig.stream_reuse``); empty when both are off."""
        return StreamState(
            temporal=TemporalState(self.memory) if self.memory is not None else None,
            reuse=StreamReuse.from_config(self.cfg) if self.cfg.stream_reuse else None,
        )

    def segment(
        self, source_image: np.ndarray, source_mask: np.ndarray, targets: Sequence[TargetView]
    ) -> List[SegmentationResult]:
        """Find the object marked by ``source_mask`` in every target view."""
        return self.segment_objects(source_image, [source_mask], targets)[0]

    def segment_objects(
        self, source_image: np.ndarray, masks: Sequence[np.ndarray], targets: Sequence[TargetView],
        *, state: Optional[StreamState] = None, step: Optional[StreamStep] = None,
    ) -> List[List[SegmentationResult]]:
        """Several objects of one source view at once: ``result[o][t]`` is object ``o`` in
        target ``t``. The first backbone pass is shared by all objects and targets.
        ``state`` (from :meth:`init_stream`) and ``step`` (stamp, object ids, source-mask
        versions): this call is one set of a video; with ``PipelineConfig.temporal`` each
        (object, target camera) decodes with the memory of its earlier sets
        (:mod:`vggts_ros.temporal`), with ``stream_reuse`` confident targets skip the first
        pass (:mod:`vggts_ros.stream_reuse`). Without them the call is stateless."""
        source_image = _check_image(source_image, "source image")
        if isinstance(masks, np.ndarray) and masks.ndim == 2:
            raise ValueError("masks must be a sequence of HxW masks (use segment() for one mask)")
        binary = [
            _check_mask(m, source_image.shape[:2], "source mask" if len(masks) == 1 else f"source mask {i}")
            for i, m in enumerate(masks)
        ]
        targets = list(targets)
        for i, view in enumerate(targets):
            if not isinstance(view, TargetView):
                raise ValueError(f"target {i} must be a TargetView, got {type(view).__name__}")
            _check_image(view.image, f"target {i} image" + (f" ({view.name})" if view.name else ""))
            _check_letterbox(view.image.shape[:2], self.image_size, f"target {i} image")
        check_stream(state, step, len(binary))
        if not binary or not targets:
            return [[] for _ in binary]
        with torch.inference_mode(), precision.precision_context(self.cfg.precision, self.device):
            return self._run(source_image, binary, targets, state=state, step=step)

    # ------------------------------------------------------------------ the stage list
    def _run(
        self, source_image: np.ndarray, masks: List[np.ndarray], targets: List[TargetView], trace: Optional[dict] = None,
        state: Optional[StreamState] = None, step: Optional[StreamStep] = None,
    ) -> List[List[SegmentationResult]]:
        """Stages 1-6 of the module docstring; ``trace`` (tests) receives the sources, the
        first-pass tracks and each object's target inputs."""
        clock = _StageClock(self._sync)
        t_start = time.perf_counter()
        cropped = [is_cropped(v) for v in targets]
        # stream reuse (off by default): targets whose last masks stand in for the first pass
        reuse = state.reuse if state is not None else None
        prev = reuse.plan(step.object_ids, targets, cropped) if reuse is not None else [None] * len(targets)
        full = [t for t in range(len(targets)) if prev[t] is None]  # targets of the first pass
        pos = {t: i + 1 for i, t in enumerate(full)}  # their frame index in it
        with clock("prompts"):
            sources = [self.prepare_source(source_image, m, any(cropped[t] for t in full),
                                           not all(cropped)) for m in masks]
            first_views = [transforms.letterbox(v.image.shape[:2], self.image_size) for v in targets]
        geometry = {} if self.cfg.geometry_heads else None
        with clock("first_pass"):
            tracks = (self.first_pass(sources, [first_views[t].image(targets[t].image) for t in full], geometry)
                      if full else [(None, None)] * len(sources))
        if geometry:
            with clock("geometry"):
                geometry = self.view_geometry(geometry, sources, [first_views[t] for t in full])
        shared = dict(clock.times)
        object_inputs, object_times = [], []
        for o, (src, (tr_first, tr_direct)) in enumerate(zip(sources, tracks)):
            clock.times = dict(shared)
            with clock("remap"):
                object_inputs.append([
                    self.reused_target(v.image, prev[t][o]) if prev[t] is not None
                    else self.cropped_target(v.image, first_views[t], tr_first, pos[t], src) if cropped[t]
                    else self.direct_target(v.image, tr_direct, pos[t], src)
                    for t, v in enumerate(targets)
                ])
            object_times.append(clock.times)
        batched = [None] * len(sources)
        if self.batch_features and len(sources) > 1:
            clock.times = {}
            with clock("features_batch"):
                batched = self.batched_features(sources, object_inputs)
            shared["features_batch"] = clock.times["features_batch"]
            object_times = [dict(t, features_batch=shared["features_batch"]) for t in object_times]
        results = []
        for o, (src, inputs) in enumerate(zip(sources, object_inputs)):
            clock.times = object_times[o]
            memory = state.temporal if state is not None else None
            refs = step.refs(o, targets) if memory is not None else None
            logits = self.features_and_head(src, inputs, clock, refs, retrack=[p is not None for p in prev],
                                            memory=memory, features=batched[o])
            batched[o] = None
            with clock("recover"):
                per_object = [self.recover_result(lg, ti) for lg, ti in zip(logits, inputs)]
            if geometry:  # [source, first-pass targets] of this object's pass
                for t, r in enumerate(per_object):
                    r.source_geometry = geometry[o][0]
                    r.geometry = geometry[o][pos[t]] if t in pos else None
            for r in per_object:
                r.timings = dict(clock.times, total=0.0)
            results.append(per_object)
            if trace is not None:
                trace.setdefault("targets", []).append(inputs)
        if trace is not None:
            trace["sources"], trace["tracks"] = sources, tracks
        total = time.perf_counter() - t_start
        for r in (r for per_object in results for r in per_object):
            r.timings["total"] = total
        if reuse is not None:
            reuse.record(step.object_ids, targets, results, [p is not None for p in prev])
        return results

    # ------------------------------------------------------------------ stages
    @property
    def accumulate_point_identity(self) -> bool:
        return self.cfg.point_identity == "accumulate"

    def images_to_tensor(self, views: Sequence[np.ndarray]) -> torch.Tensor:
        """uint8 HxWx3 views -> ``[1, S, 3, H, W]`` in [0, 1] on the device: divided in
        float64 and rounded to float32 like the reference, then cast to the model dtype (in
        ``float64`` mode the network computes in float64 on the same float32 input, as the
        reference's float64 runs do)."""
        batch = np.stack([np.ascontiguousarray(v) for v in views])
        t = torch.from_numpy(batch).to(self.device)
        t = (t.double() / 255.0).float().to(self.dtype)
        return t.permute(0, 3, 1, 2).contiguous().unsqueeze(0)

    def backbone_features(self, views: Sequence[np.ndarray], geometry: bool = False):
        """One backbone pass (aggregator + DPT): ``[1, S, C, size/2, size/2]``; with
        ``geometry`` also the camera and depth heads on its tokens: ``(features, GeometryOutput)``."""
        out = self.backbone(self.images_to_tensor(views), geometry=geometry)
        return (out.features, out.geometry) if geometry else out.features

    def track(self, features: torch.Tensor, query_sets: Sequence[np.ndarray]) -> List[Tracks]:
        """Track each set of frame-0 query points (network px) through all views."""
        sets = [np.asarray(q, dtype=np.float32).reshape(-1, 2) for q in query_sets]
        if self.joint_tracking and len(sets) > 1:
            allq = torch.from_numpy(np.concatenate(sets)).to(self.device)[None]
            coords, vis, conf = self._track_one(features, allq)
            out, start = [], 0
            for q in sets:
                sl = slice(start, start + len(q))
                out.append(Tracks(coords[:, sl], vis[:, sl], conf[:, sl]))
                start += len(q)
            return out
        return [Tracks(*self._track_one(features, torch.from_numpy(q).to(self.device)[None])) for q in sets]

    def _track_one(self, features: torch.Tensor, queries: torch.Tensor):
        coord_iters, vis, conf = self.backbone.track(features, queries.to(self.dtype))
        as_np = (lambda x: x.cpu().numpy()) if self.dtype == torch.float64 else (lambda x: x.float().cpu().numpy())
        coords = as_np(coord_iters[-1][0])
        vis_np = as_np(vis[0])
        conf_np = as_np(conf[0]) if conf is not None else np.ones_like(vis_np)
        return coords, vis_np, conf_np

    def prepare_source(self, image: np.ndarray, mask: np.ndarray, need_first: bool = True,
                       need_direct: bool = False) -> SourceInput:
        """Stage 1: the source view (:func:`transforms.prepare_source`), its first-pass
        K-means points and the head's prompts in the zoom."""
        cfg = self.cfg
        view = transforms.prepare_source(image, mask, self.image_size, cfg.source_crop_ratio)
        first = prompts.kmeans_sample_points(view.mask, cfg.first_pass_points) if need_first else None
        direct = prompts.kmeans_sample_points(view.mask, cfg.prompt_points) if need_direct else None
        return SourceInput(view, first, direct, prompts.kmeans_sample_points(view.crop_mask, cfg.prompt_points))

    def first_pass(self, sources: Sequence[SourceInput], target_views: Sequence[np.ndarray],
                   geometry: Optional[dict] = None):
        """Stage 2: one backbone pass per distinct source view over ``[source, targets]``,
        then each object's query sets tracked. Returns ``(first, direct)`` tracks per object.
        ``geometry`` (a dict): receives, per object, its pass's camera and depth heads
        (``GeometryOutput``) run on that pass's tokens."""
        out: List[Tuple[Optional[Tracks], Optional[Tracks]]] = [(None, None)] * len(sources)
        groups: Dict[Tuple[int, ...], List[int]] = {}
        for o, s in enumerate(sources):
            groups.setdefault(tuple(s.view.square.box), []).append(o)
        for members in groups.values():
            feats = self.backbone_features([sources[members[0]].view.image] + list(target_views), geometry is not None)
            if geometry is not None:
                feats, geo = feats
                geometry.update({o: geo for o in members})
            sets = [q for o in members for q in (sources[o].first_points, sources[o].direct_points) if q is not None]
            found = iter(self.track(feats, sets))
            for o in members:
                s = sources[o]
                out[o] = (next(found) if s.first_points is not None else None,
                          next(found) if s.direct_points is not None else None)
            del feats
        return out

    def view_geometry(self, heads: dict, sources: Sequence[SourceInput],
                      target_views: Sequence[transforms.ViewTransform]) -> dict:
        """The heads' outputs of each object's first pass in frame pixels: object ->
        ``[source ViewGeometry, first-pass target ViewGeometry, ...]`` (poses relative to the
        source camera); objects sharing a pass share its list."""
        from vggts_ros.geometry.camera import view_geometries

        done: Dict[int, list] = {}
        out = {}
        for o, g in heads.items():
            if id(g) not in done:
                views = [sources[o].view.square] + list(target_views)
                done[id(g)] = view_geometries(g.pose_encoding[0], g.depth[0, ..., 0], g.depth_conf[0], views)
            out[o] = done[id(g)]
        return out

    def cropped_target(self, image: np.ndarray, first_view: transforms.Letterbox, tracks: Tracks,
                       view_index: int, src: SourceInput) -> TargetInput:
        """Stage 3, cropped target: the first-pass tracks in frame pixels (the reference's
        long-side mapping), the square crop around them (:func:`transforms.crop_target`)
        and 5 clustered prompts, each paired with the mean source point of its cluster."""
        cfg, k = self.cfg, self.cfg.prompt_points
        frame_pts = first_view.reference_points_to_frame(tracks.coords[view_index])
        crop = transforms.crop_target(image.shape[:2], frame_pts, self.image_size, cfg.crop_schedule, cfg.outlier_k)
        kept = frame_pts[crop.kept]
        crop_points = crop.window.points(kept).astype(np.float32)
        labels, centres = prompts.cluster_points(crop_points, k)
        src_frame = src.view.square.points_to_frame(src.first_points, clip=True)
        return TargetInput(
            image=crop.window.image(image),
            prompts=np.asarray(centres, dtype=np.float32),
            transform=crop.window,
            source_points=_group_means(src_frame[crop.kept], labels, k).astype(np.float32),
            visibility=_group_means(tracks.vis[view_index][crop.kept], labels, k).astype(np.float32),
            confidence=_group_means(tracks.conf[view_index][crop.kept], labels, k).astype(np.float32),
            stages=dict(projected=frame_pts, kept=kept, box_size=crop.box_size, crop_size=crop.crop_size,
                        crop_points=crop_points),
        )

    def reused_target(self, image: np.ndarray, previous_mask: np.ndarray) -> TargetInput:
        """Stage 3 under stream reuse: the crop around the object's previous mask
        (:func:`stream_reuse.crop_from_mask`); its prompts come from the features pass."""
        crop = stream_reuse.crop_from_mask(image.shape[:2], previous_mask, self.image_size, self.cfg)
        k = self.cfg.prompt_points
        zeros = np.zeros(k, np.float32)
        return TargetInput(image=crop.window.image(image), prompts=np.zeros((k, 2), np.float32),
                           transform=crop.window, source_points=np.zeros((k, 2), np.float32),
                           visibility=zeros, confidence=zeros,
                           stages=dict(reused=True, box_size=crop.box_size, crop_size=crop.crop_size))

    def direct_target(self, image: np.ndarray, tracks: Tracks, view_index: int, src: SourceInput) -> TargetInput:
        """Stage 3, square ego target: the frame resized; the prompts are the tracked
        K-means points clipped to the view (the reference exo->ego recipe)."""
        size = self.image_size
        window = transforms.resize(image.shape[:2], size)
        return TargetInput(
            image=window.image(image),
            prompts=np.clip(tracks.coords[view_index], 0, size - 1).astype(np.float32),
            transform=window,
            source_points=src.view.square.points_to_frame(src.direct_points, clip=True).astype(np.float32),
            visibility=tracks.vis[view_index].astype(np.float32),
            confidence=tracks.conf[view_index].astype(np.float32),
        )

    def feature_groups(self, n_targets: int) -> List[List[int]]:
        """The targets of each features pass of one object: all together, or one by one
        with ``multi_view_features=False``."""
        return [list(range(n_targets))] if self.multi_view_features else [[t] for t in range(n_targets)]

    def batched_features(self, sources: Sequence[SourceInput],
                         object_inputs: Sequence[List[TargetInput]]) -> List[List[torch.Tensor]]:
        """Stage 4 for every object at once: the ``[source zoom, target inputs]`` sequences
        of all objects' feature groups through the backbone as batches of up to
        ``max_feature_batch`` (all sequences of a set have the same length). Returns per
        object the features of each group, ``[1, S, C, g, g]`` each."""
        seqs = [(o, [src.crop_image] + [object_inputs[o][t].image for t in group])
                for o, src in enumerate(sources) for group in self.feature_groups(len(object_inputs[o]))]
        out: List[List[torch.Tensor]] = [[] for _ in sources]
        for start in range(0, len(seqs), self.max_feature_batch):
            chunk = seqs[start:start + self.max_feature_batch]
            images = torch.cat([self.images_to_tensor(views) for _, views in chunk])  # [B, S, 3, H, W]
            feats = self.backbone(images).features
            for b, (o, _) in enumerate(chunk):
                out[o].append(feats[b:b + 1])
        return out

    def features_and_head(self, src: SourceInput, inputs: List[TargetInput], clock: _StageClock,
                          refs: Optional[List[StreamRef]] = None,
                          retrack: Sequence[bool] = (), memory: Optional[TemporalState] = None,
                          features: Optional[List[torch.Tensor]] = None) -> List[torch.Tensor]:
        """Stages 4-5: features of ``[source zoom, target inputs]`` (one pass, or one per
        target with ``multi_view_features=False``; ``features``: those passes already made,
        one per group, by :meth:`batched_features`), optional second pass (always for the
        targets flagged in ``retrack``: stream reuse), then the head (``refs``: each
        target's stream in ``memory``, see :meth:`decode`).
        Returns each target's last network-size logits ``[size, size]`` (on the device)."""
        fulls: List[torch.Tensor] = [None] * len(inputs)  # type: ignore[list-item]
        for g, group in enumerate(self.feature_groups(len(inputs))):
            with clock("features"):
                f = (features[g] if features is not None
                     else self.backbone_features([src.crop_image] + [inputs[t].image for t in group]))
                tracked = None  # one tracker call serves every target of the group
                for j, t in enumerate(group):
                    if self.cfg.second_pass or (t < len(retrack) and retrack[t]):
                        tracked = tracked or self.second_pass_tracks(f, src)
                        inputs[t] = self.second_pass(f, src, j + 1, inputs[t], tracked)
            with clock("head"):
                full, _ = self.decode(f, src.prompts, [inputs[t].prompts for t in group], src.crop_mask,
                                      refs=[refs[t] for t in group] if refs is not None else None, memory=memory)
            for j, t in enumerate(group):
                fulls[t] = full[j, 0]
            del f
        return fulls

    def decode(
        self,
        features: torch.Tensor,
        src_prompts: np.ndarray,
        tar_prompts: Sequence[np.ndarray],
        src_mask: np.ndarray,
        target_indices: Optional[Sequence[int]] = None,
        refs: Optional[Sequence[StreamRef]] = None,
        memory: Optional[TemporalState] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Head on ``features`` ``[1, S, C, g, g]`` (frame 0 = source zoom): one encode,
        ``1 + refine_iterations`` decodes, batched over the targets (frames
        ``target_indices``, default ``1..S-1``). Returns (full ``[T,1,size,size]``,
        low-res ``[T,1,4g,4g]``) logits of the last pass. ``refs`` (one per target) and
        ``memory`` (a stream state's Temporal VGGT-S banks): decode each target with its
        stream's memory and write the result to it (:meth:`TemporalState.decode_rows`)."""
        feats = features[0]
        idx = list(target_indices) if target_indices is not None else list(range(1, feats.shape[0]))
        t = len(idx)
        feat_map = torch.stack([feats[0].expand(t, *feats.shape[1:]), feats[idx]], dim=1)
        as_t = lambda a: torch.from_numpy(np.asarray(a, np.float64)).to(self.device, self.dtype)  # noqa: E731
        src = as_t(src_prompts)[None].expand(t, -1, -1)
        tar = torch.stack([as_t(p) for p in tar_prompts])
        mask = as_t(src_mask)[None].expand(t, -1, -1)
        with precision.autocast(self.cfg.precision, self.device, "head"):
            ctx = self.head.encode(feat_map, src.contiguous(), tar, mask.contiguous())
            if refs is not None and memory is not None:
                return memory.decode_rows(self.head, ctx, refs, self.cfg.refine_iterations,
                                                 self.cfg.point_identity)
            return decode_with_refinement(self.head, ctx, self.cfg.refine_iterations, self.cfg.point_identity)

    def recover(self, logits: torch.Tensor, target: TargetInput) -> Tuple[torch.Tensor, np.ndarray]:
        """Stage 6: network-size logits and the prompts -> frame logits ``[H, W]`` (on the
        logits' device) and frame points."""
        frame = target.transform.logits_to_frame(logits, OUTSIDE_LOGIT)
        points = target.transform.points_to_frame(target.prompts)
        return frame, points.astype(np.float32)

    def recover_result(self, logits: torch.Tensor, target: TargetInput) -> SegmentationResult:
        """Stage 6 into a result: the score (mean foreground probability) on the device,
        one copy of the frame logits to the host."""
        frame, points = self.recover(logits, target)
        frame = frame.float()
        positive = frame > 0
        count = positive.sum()
        score = torch.where(count > 0, (torch.sigmoid(frame) * positive).sum() / count.clamp(min=1), 0.0)
        logits = frame.cpu().numpy()
        return SegmentationResult(
            mask=logits > 0,
            source_points=np.asarray(target.source_points, np.float32),
            target_points=points,
            visibility=np.clip(target.visibility, 0, 1).astype(np.float32),
            confidence=np.clip(target.confidence, 0, 1).astype(np.float32),
            score=float(score),
            logits=logits,
            timings={},
        )

    def second_pass_tracks(self, features: torch.Tensor, src: SourceInput) -> Tuple[np.ndarray, Tracks]:
        """K-means points of the source zoom and their tracks through the features pass."""
        queries = prompts.kmeans_sample_points(src.crop_mask, self.cfg.first_pass_points)
        return queries, self.track(features, [queries])[0]

    def second_pass(self, features: torch.Tensor, src: SourceInput, view_index: int, target: TargetInput,
                    tracked: Optional[Tuple[np.ndarray, Tracks]] = None) -> TargetInput:
        """Re-project K-means points of the source zoom into the target input with the
        features pass (no extra backbone pass) and re-cluster them into the prompts.
        ``tracked``: :meth:`second_pass_tracks` of these features, when already made."""
        cfg, k = self.cfg, self.cfg.prompt_points
        queries, tr = tracked if tracked is not None else self.second_pass_tracks(features, src)
        pts = np.clip(tr.coords[view_index], 0, self.image_size - 1)
        kept, _ = prompts.median_outlier_split(pts, cfg.outlier_k)
        labels, centres = prompts.cluster_points(pts[kept], k)
        src_frame = src.view.crop.points_to_frame(queries, clip=True)
        return dataclasses.replace(
            target,
            prompts=np.asarray(centres, dtype=np.float32),
            source_points=_group_means(src_frame[kept], labels, k).astype(np.float32),
            visibility=_group_means(tr.vis[view_index][kept], labels, k).astype(np.float32),
            confidence=_group_means(tr.conf[view_index][kept], labels, k).astype(np.float32),
        )

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
