"""VGGT-S inference: from a source image and mask to target-view masks (SPEC "The pipeline").

``VGGTSegmentor`` ties the parity-tested pieces together:

1. letterbox every view to the network size and sample K-means points in the source mask;
2. **first pass**: one backbone pass over ``[source, target 1, ..., target N]`` (source
   first), then the tracker projects each object's points into every target;
3. per (object, target) the head's input view: exo/aerial/ground targets get the square
   crop around the projected points (10 outliers dropped, crop side from the schedule
   scaled by the frame's short side) and 5 clustered prompts; ego targets are resized
   whole and their prompts are 5 K-means source points tracked directly (the reference
   exo->ego recipe);
4. the source crop around the mask (ratio 2) with 5 K-means prompts;
5. **features**: one backbone pass over ``[source crop, target input 1, ..., N]`` per object;
6. the Union Segmentation Head, encoded once and decoded ``1 + refine_iterations`` times;
7. recovery into each target frame (outside the crop = -32), threshold at 0.

Design decisions:

* The tracker's space attention mixes query points, so tracking several objects' points in
  one call would make each object's mask depend on the others. The backbone (aggregator +
  DPT features, the expensive part) runs once per synchronised set; the tracker runs once
  per object (and once more for the 5 ego-target points, as the reference tracks those
  alone) on those shared features. Hence ``segment_objects`` returns exactly what
  ``segment`` returns for each object alone. ``joint_tracking=True`` tracks all query
  sets in one call instead.
* Refinement reproduces the reference *evaluation loop*, which produced the published
  numbers: its prompt encoder adds the source-point identity embedding to the point
  features in place and the loop passes the same tensor to every pass, so pass k carries
  that embedding k + 1 times (the head was trained the same way).
  ``accumulate_point_identity=False`` adds it once per pass; that is what
  ``pipeline_ego2exo.pt``'s ``final_low_res`` holds (its generator gave each pass fresh
  point features), so the stage parity test uses it, while the end-to-end parity test runs
  the default (IoU 0.9994 against the stored mask).
* Several targets of one object share one features pass (SPEC multi-view rule); with a
  single target this is exactly the reference pair. ``multi_view_features=False`` runs one
  pass per (source crop, target) pair instead.
* ``PipelineConfig.second_pass`` re-tracks K-means points of the source crop into each
  target input with the features pass (no extra backbone pass) and re-clusters the prompts.
* The network size comes from the model (the head's ``img_size``); the pipeline config's
  ``image_size`` is overridden by it. The reference constants (518, 259, the crop schedule
  in 960x540 pixels) follow the network size and the frame's short side.
* Reported source points are true correspondences of the target prompts: for a cropped
  target, the mean source point of the first-pass points clustered into each prompt; for
  an ego target, the tracked source point itself.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from vggts_ros import crops, prompts
from vggts_ros.config import ModelConfig, ModelPreset, PipelineConfig, model_preset
from vggts_ros.types import CROPPED_ROLES, SegmentationResult, TargetView

# Logit painted outside the target crop (the reference's value).
OUTSIDE_LOGIT = -32.0


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
    """One object's source view as the network sees it."""

    mask: np.ndarray  # letterboxed mask, size x size uint8 {0, 1}
    first_points: np.ndarray  # [n, 2] K-means points of ``mask`` (letterbox px)
    direct_points: Optional[np.ndarray]  # [P, 2] K-means points tracked into uncropped targets
    crop_image: np.ndarray  # size x size x 3, the zoom on the object
    crop_mask: np.ndarray  # size x size uint8
    crop_box: Tuple[int, int, int, int]  # (x1, y1, x2, y2) of the crop in letterbox px
    prompts: np.ndarray  # [P, 2] the head's source prompts (crop px)


@dataclass
class TargetInput:
    """One (object, target) view as the head sees it, and how to map it back."""

    image: np.ndarray  # size x size x 3
    prompts: np.ndarray  # [P, 2] float32, pixels of ``image``
    frame_hw: Tuple[int, int]
    crop: Optional[crops.CropMeta]  # None: the whole frame resized to size x size
    source_points: np.ndarray  # [P, 2] source-frame pixels corresponding to ``prompts``
    visibility: np.ndarray  # [P]
    confidence: np.ndarray  # [P]


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
    if h != w and round(short / crops.PATCH) * crops.PATCH == 0:
        raise ValueError(f"{what} ({w}x{h}) is too elongated for a {size} px network input")


# =======================================================================================
# Small geometric helpers
# =======================================================================================
def _letterbox_mask(mask: np.ndarray, size: int, meta: crops.LetterboxMeta) -> np.ndarray:
    """Letterboxed mask that keeps tiny objects: when nearest resizing drops every
    foreground pixel, the object's pixels are marked at their scaled positions."""
    out, _ = crops.letterbox(mask.astype(np.uint8), size, is_mask=True)
    if not out.any():
        ys, xs = np.nonzero(mask)
        sy, sx = meta.new_h / meta.ori_h, meta.new_w / meta.ori_w
        yy = np.clip(np.floor(ys * sy).astype(int), 0, meta.new_h - 1)
        xx = np.clip(np.floor(xs * sx).astype(int), 0, meta.new_w - 1)
        out[yy, xx] = 1
    return out


def outlier_split(points: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Indices (kept, removed) of :func:`prompts.remove_outliers_median` (same order)."""
    points = np.asarray(points)
    centre = np.median(points, axis=0)
    order = np.argsort(-np.linalg.norm(points - centre, axis=1))
    k = max(0, min(int(k), len(points) - 1))
    return order[k:], order[:k]


def _group_means(values: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Mean of ``values`` rows per label ``0..k-1``; a label without members takes the
    first row's value (prompt padding repeats the first point)."""
    values = np.asarray(values, dtype=np.float64)
    out = np.empty((k,) + values.shape[1:], dtype=np.float64)
    for c in range(k):
        members = values[labels == c]
        out[c] = members.mean(axis=0) if len(members) else values[0]
    return out


def source_crop_to_letterbox(points: np.ndarray, box: Tuple[int, int, int, int], size: int) -> np.ndarray:
    """Pixels of the resized source crop -> letterbox pixels (pixel centres kept)."""
    x1, y1, x2, y2 = box
    pts = np.asarray(points, dtype=np.float64)
    return np.stack(
        [x1 + (pts[:, 0] + 0.5) * (x2 - x1) / size - 0.5, y1 + (pts[:, 1] + 0.5) * (y2 - y1) / size - 0.5], axis=1
    )


def letterbox_to_frame(points: np.ndarray, meta: crops.LetterboxMeta) -> np.ndarray:
    """Letterbox pixels -> frame pixels (per-axis scale of the resized content, pixel
    centres kept), clipped to the frame. Used for the reported source points; the target
    projections keep the reference's long-side scaling (``crops.letterbox_points_to_frame``)
    because the crop placement depends on it."""
    pts = np.asarray(points, dtype=np.float64).copy()
    pts[:, 0] = (pts[:, 0] + 0.5) * (meta.ori_w / meta.new_w) - 0.5
    pts[:, 1] = (pts[:, 1] + 0.5) * (meta.ori_h / meta.new_h) - 0.5
    pts[:, 0] = np.clip(pts[:, 0], 0, meta.ori_w - 1)
    pts[:, 1] = np.clip(pts[:, 1], 0, meta.ori_h - 1)
    return pts


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
        accumulate_point_identity: bool = True,
        multi_view_features: bool = True,
        joint_tracking: bool = False,
    ) -> None:
        size = int(image_size if image_size is not None else head.cfg.img_size)
        if head.cfg.img_size != size:
            raise ValueError(f"image_size {size} differs from the head's img_size {head.cfg.img_size}")
        if size % crops.PATCH:
            raise ValueError(f"image_size must be a multiple of {crops.PATCH}, got {size}")
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
        self.device = torch.device(device)
        self.backbone = backbone.to(self.device).eval()
        self.head = head.to(self.device).eval()
        if self.backbone.dtype == torch.float32:  # an explicit backbone dtype wins over the config's
            self.backbone.dtype = cfg.backbone_dtype
        self.cfg = cfg
        self.image_size = size
        self.accumulate_point_identity = bool(accumulate_point_identity)
        self.multi_view_features = bool(multi_view_features)
        self.joint_tracking = bool(joint_tracking)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, model: ModelConfig, pipeline: Optional[PipelineConfig] = None) -> "VGGTSegmentor":
        """Build from the typed configuration (what ``backends.create_segmentor`` calls).

        ``vggt-1b`` loads ``model.vggt_checkpoint`` / ``model.head_checkpoint`` (paths,
        directories or Hugging Face repo ids). Presets with weight seeds (``test-tiny``)
        use the deterministic weights while both checkpoints are left at the published
        defaults (which cannot fit them); naming both loads them into the preset's
        networks instead (e.g. checkpoints of a trained small model). ``model.dtype`` (or
        ``pipeline.backbone_dtype``) ``bfloat16`` applies to the backbone's aggregator only.
        """
        from vggts_ros.backends import resolve_device

        preset = model_preset(model.config)
        device = resolve_device(model.device)
        dtype = model.dtype if model.dtype != "float32" else (pipeline or PipelineConfig()).backbone_dtype
        defaults = ModelConfig()
        if preset.backbone_seed is not None:
            given = [
                model.vggt_checkpoint != defaults.vggt_checkpoint,
                model.head_checkpoint != defaults.head_checkpoint,
            ]
            if not any(given):
                return cls.deterministic(model.config, pipeline, device=device, dtype=dtype)
            if not all(given):
                raise ValueError(
                    f"model config {model.config!r} uses deterministic weights unless both the VGGT and "
                    f"the head checkpoint are given; got only the {'VGGT' if given[0] else 'head'} checkpoint"
                )
        return cls.from_checkpoints(
            model.vggt_checkpoint, model.head_checkpoint, preset=model.config, pipeline=pipeline,
            device=device, dtype=dtype,
        )

    @classmethod
    def deterministic(
        cls,
        preset: str | ModelPreset = "test-tiny",
        pipeline: Optional[PipelineConfig] = None,
        device: str = "cpu",
        dtype: str = "float32",
        **options,
    ) -> "VGGTSegmentor":
        """The preset's networks filled by the fixtures' deterministic weight rule."""
        from vggts_ros.models.backbone import VGGTBackbone
        from vggts_ros.models.deterministic import fill_deterministic
        from vggts_ros.models.union_head import UnionSegmentationHead

        p = model_preset(preset) if isinstance(preset, str) else preset
        if p.backbone_seed is None or p.head_seed is None:
            raise ValueError("this preset has no weight seeds; its weights come from checkpoints")
        backbone = fill_deterministic(VGGTBackbone(p.backbone), p.backbone_seed)
        head = fill_deterministic(UnionSegmentationHead(p.head), p.head_seed)
        backbone.dtype = dtype
        return cls(backbone, head, pipeline, device=device, image_size=p.image_size, **options)

    @classmethod
    def from_checkpoints(
        cls,
        vggt: str,
        head: str,
        preset: str | ModelPreset = "vggt-1b",
        pipeline: Optional[PipelineConfig] = None,
        device: str = "cpu",
        dtype: str = "float32",
        **options,
    ) -> "VGGTSegmentor":
        """Load ``model.pt`` (flat VGGT state dict; other heads skipped) and ``main_exp.pth``
        (``{"model": ...}``, ``module.`` prefix allowed) into the preset's networks."""
        from vggts_ros.models.backbone import VGGTBackbone
        from vggts_ros.models.union_head import UnionSegmentationHead

        p = model_preset(preset) if isinstance(preset, str) else preset
        backbone = VGGTBackbone.from_pretrained(vggt, cfg=p.backbone, map_location="cpu")
        head_net = UnionSegmentationHead.from_pretrained(head, cfg=p.head)
        backbone.dtype = dtype
        return cls(backbone, head_net, pipeline, device=device, image_size=p.image_size, **options)

    @classmethod
    def from_pretrained(
        cls,
        vggt: str = "facebook/VGGT-1B",
        head: str = "zbbhhh/VGGT-S",
        device: str = "auto",
        dtype: str = "float32",
        **pipeline_kwargs,
    ) -> "VGGTSegmentor":
        """The published model, e.g. ``VGGTSegmentor.from_pretrained(refine_iterations=2)``."""
        from vggts_ros.backends import resolve_device

        pipeline = PipelineConfig(**pipeline_kwargs)
        return cls.from_checkpoints(vggt, head, "vggt-1b", pipeline, device=resolve_device(device), dtype=dtype)

    # ------------------------------------------------------------------ public API
    def segment(
        self, source_image: np.ndarray, source_mask: np.ndarray, targets: Sequence[TargetView]
    ) -> List[SegmentationResult]:
        """Find the object marked by ``source_mask`` in every target view."""
        return self.segment_objects(source_image, [source_mask], targets)[0]

    def segment_objects(
        self, source_image: np.ndarray, masks: Sequence[np.ndarray], targets: Sequence[TargetView]
    ) -> List[List[SegmentationResult]]:
        """Several objects of one source view at once: ``result[o][t]`` is object ``o`` in
        target ``t``. The first backbone pass is shared by all objects and targets."""
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
        _check_letterbox(source_image.shape[:2], self.image_size, "source image")
        if not binary or not targets:
            return [[] for _ in binary]
        with torch.inference_mode():
            return self._run(source_image, binary, targets)

    # ------------------------------------------------------------------ stages
    def images_to_tensor(self, views: Sequence[np.ndarray]) -> torch.Tensor:
        """uint8 HxWx3 views -> ``[1, S, 3, H, W]`` in [0, 1] on the device (divided in
        float64 like the reference, then float32)."""
        batch = np.stack([np.ascontiguousarray(v) for v in views])
        t = torch.from_numpy(batch).to(self.device)
        t = (t.double() / 255.0).float()
        return t.permute(0, 3, 1, 2).contiguous().unsqueeze(0)

    def backbone_features(self, views: Sequence[np.ndarray]) -> torch.Tensor:
        """One backbone pass (aggregator + DPT): ``[1, S, C, size/2, size/2]``."""
        return self.backbone(self.images_to_tensor(views)).features

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
        coord_iters, vis, conf = self.backbone.track(features, queries)
        coords = coord_iters[-1][0].float().cpu().numpy()
        vis_np = vis[0].float().cpu().numpy()
        conf_np = conf[0].float().cpu().numpy() if conf is not None else np.ones_like(vis_np)
        return coords, vis_np, conf_np

    def prepare_source(self, image_lb: np.ndarray, mask_lb: np.ndarray, need_direct: bool) -> SourceInput:
        """Points of the first pass and the zoomed source view with its head prompts."""
        cfg = self.cfg
        first = prompts.kmeans_sample_points(mask_lb, cfg.first_pass_points)
        direct = prompts.kmeans_sample_points(mask_lb, cfg.prompt_points) if need_direct else None
        crop_img, crop_mask, box = crops.crop_around_mask(image_lb, mask_lb, cfg.source_crop_ratio)
        if not crop_mask.any():  # the reference falls back to the whole view
            crop_img, crop_mask, box = image_lb, mask_lb, (0, 0, self.image_size, self.image_size)
        src_prompts = prompts.kmeans_sample_points(crop_mask, cfg.prompt_points)
        return SourceInput(mask_lb, first, direct, crop_img, crop_mask.astype(np.uint8), box, src_prompts)

    def cropped_target(
        self,
        image: np.ndarray,
        lb_meta: crops.LetterboxMeta,
        tracks: Tracks,
        view_index: int,
        source_points_frame: np.ndarray,
    ) -> Tuple[TargetInput, Dict[str, np.ndarray]]:
        """Exo/aerial/ground target: square crop around the projected points.

        ``source_points_frame``: the first-pass query points in source-frame pixels (to
        pair each prompt with the mean source point of its cluster). Also returns the
        intermediate stages (frame projections, kept points, box and crop sizes)."""
        cfg, size = self.cfg, self.image_size
        frame_pts = crops.letterbox_points_to_frame(tracks.coords[view_index], lb_meta)
        kept_idx, _ = outlier_split(frame_pts, cfg.outlier_k)
        kept = frame_pts[kept_idx]
        box = prompts.points_box_size(kept)
        side = crops.crop_size(cfg.crop_schedule, box, short_side=min(image.shape[:2]))
        sq = crops.square_crop_around_points(image, kept, side, size)
        labels, centres = prompts.cluster_points(sq.points, cfg.prompt_points)
        k = cfg.prompt_points
        target = TargetInput(
            image=sq.image,
            prompts=np.asarray(centres, dtype=np.float32),
            frame_hw=tuple(image.shape[:2]),
            crop=sq.meta,
            source_points=_group_means(source_points_frame[kept_idx], labels, k).astype(np.float32),
            visibility=_group_means(tracks.vis[view_index][kept_idx], labels, k).astype(np.float32),
            confidence=_group_means(tracks.conf[view_index][kept_idx], labels, k).astype(np.float32),
        )
        stages = dict(projected=frame_pts, kept=kept, box_size=np.float64(box), crop_size=np.int64(side),
                      crop_points=sq.points)
        return target, stages

    def direct_target(
        self,
        image: np.ndarray,
        lb_meta: crops.LetterboxMeta,
        tracks: Tracks,
        view_index: int,
        source_points_frame: np.ndarray,
    ) -> TargetInput:
        """Ego target: the whole frame resized to the network size; the prompts are the
        tracked K-means points (the reference exo->ego recipe)."""
        import cv2

        size = self.image_size
        h, w = image.shape[:2]
        frame_pts = crops.letterbox_points_to_frame(tracks.coords[view_index], lb_meta)
        net = np.stack([frame_pts[:, 0] * (size / w), frame_pts[:, 1] * (size / h)], axis=1)
        net = np.clip(net, 0, size - 1).astype(np.float32)
        resized = image if (h, w) == (size, size) else cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
        return TargetInput(
            image=resized,
            prompts=net,
            frame_hw=(h, w),
            crop=None,
            source_points=np.asarray(source_points_frame, dtype=np.float32),
            visibility=tracks.vis[view_index].astype(np.float32),
            confidence=tracks.conf[view_index].astype(np.float32),
        )

    def decode(
        self,
        features: torch.Tensor,
        src_prompts: np.ndarray,
        tar_prompts: Sequence[np.ndarray],
        src_mask: np.ndarray,
        target_indices: Optional[Sequence[int]] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Head on ``features`` ``[1, S, C, g, g]`` (frame 0 = source crop): one encode,
        ``1 + refine_iterations`` decodes, batched over the targets (frames
        ``target_indices``, default ``1..S-1``). Returns (full ``[T,1,size,size]``,
        low-res ``[T,1,4g,4g]``) logits of the last pass."""
        feats = features[0]
        idx = list(target_indices) if target_indices is not None else list(range(1, feats.shape[0]))
        t = len(idx)
        feat_map = torch.stack([feats[0].expand(t, *feats.shape[1:]), feats[idx]], dim=1)
        src = torch.from_numpy(np.asarray(src_prompts, np.float32)).to(self.device)[None].expand(t, -1, -1)
        tar = torch.from_numpy(np.stack([np.asarray(p, np.float32) for p in tar_prompts])).to(self.device)
        mask = torch.from_numpy(np.asarray(src_mask, np.float32)).to(self.device)[None].expand(t, -1, -1)
        ctx = self.head.encode(feat_map, src.contiguous(), tar, mask.contiguous())
        full, low = self.head.decode(ctx)
        for _ in range(self.cfg.refine_iterations):
            if self.accumulate_point_identity:
                ctx = self.head.add_point_feature_identity(ctx)
            full, low = self.head.decode(ctx, low)
        return full, low

    def recover(self, logits: torch.Tensor, target: TargetInput) -> Tuple[torch.Tensor, np.ndarray]:
        """Network-size logits ``[size, size]`` and prompts -> frame logits ``[H, W]`` and
        frame points."""
        h, w = target.frame_hw
        pts = torch.from_numpy(np.asarray(target.prompts, np.float32))
        if target.crop is not None:
            frame, back = crops.recover_square_crop(logits, pts, target.crop, fill=OUTSIDE_LOGIT)
            return frame, back.cpu().numpy().astype(np.float32)
        size = self.image_size
        frame = F.interpolate(logits[None, None].float(), size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        back = np.stack([pts[:, 0].numpy() * (w / size), pts[:, 1].numpy() * (h / size)], axis=1)
        return frame, back.astype(np.float32)

    def second_pass(
        self,
        features: torch.Tensor,
        src: SourceInput,
        view_index: int,
        lb_src: crops.LetterboxMeta,
        target: TargetInput,
    ) -> TargetInput:
        """Re-project K-means points of the source crop into the target input with the
        features pass (no extra backbone pass) and re-cluster them into the prompts."""
        cfg = self.cfg
        queries = prompts.kmeans_sample_points(src.crop_mask, cfg.first_pass_points)
        tr = self.track(features, [queries])[0]
        pts = np.clip(tr.coords[view_index], 0, self.image_size - 1)
        kept_idx, _ = outlier_split(pts, cfg.outlier_k)
        labels, centres = prompts.cluster_points(pts[kept_idx], cfg.prompt_points)
        k = cfg.prompt_points
        src_frame = letterbox_to_frame(source_crop_to_letterbox(queries, src.crop_box, self.image_size), lb_src)
        return dataclasses.replace(
            target,
            prompts=np.asarray(centres, dtype=np.float32),
            source_points=_group_means(src_frame[kept_idx], labels, k).astype(np.float32),
            visibility=_group_means(tr.vis[view_index][kept_idx], labels, k).astype(np.float32),
            confidence=_group_means(tr.conf[view_index][kept_idx], labels, k).astype(np.float32),
        )

    # ------------------------------------------------------------------ the whole run
    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _run(
        self, source_image: np.ndarray, masks: List[np.ndarray], targets: List[TargetView], trace: Optional[dict] = None
    ) -> List[List[SegmentationResult]]:
        size, cfg = self.image_size, self.cfg
        t_start = time.perf_counter()

        # --- letterbox and first-pass points ---------------------------------------------
        t0 = time.perf_counter()
        src_lb, lb_src = crops.letterbox(source_image, size)
        tgt_lbs = [crops.letterbox(v.image, size) for v in targets]
        cropped = [v.role in CROPPED_ROLES for v in targets]
        need_direct = not all(cropped)
        sources = [self.prepare_source(src_lb, _letterbox_mask(m, size, lb_src), need_direct) for m in masks]
        t_prompts = time.perf_counter() - t0

        # --- first pass: one backbone pass for every view, tracks per object -------------
        t0 = time.perf_counter()
        feats = self.backbone_features([src_lb] + [lb for lb, _ in tgt_lbs])
        query_sets: List[np.ndarray] = []
        for s in sources:
            if any(cropped):
                query_sets.append(s.first_points)
            if need_direct:
                query_sets.append(s.direct_points)
        tracks = self.track(feats, query_sets)
        del feats
        self._sync()
        t_first = time.perf_counter() - t0

        results: List[List[SegmentationResult]] = []
        it = iter(tracks)
        for o, src in enumerate(sources):
            t0 = time.perf_counter()
            tr_first = next(it) if any(cropped) else None
            tr_direct = next(it) if need_direct else None
            inputs: List[TargetInput] = []
            stages: List[dict] = []
            for t, view in enumerate(targets):
                if cropped[t]:
                    src_frame = letterbox_to_frame(src.first_points, lb_src)
                    ti, st = self.cropped_target(view.image, tgt_lbs[t][1], tr_first, t + 1, src_frame)
                else:
                    src_frame = letterbox_to_frame(src.direct_points, lb_src)
                    ti, st = self.direct_target(view.image, tgt_lbs[t][1], tr_direct, t + 1, src_frame), {}
                inputs.append(ti)
                stages.append(st)
            t_remap = time.perf_counter() - t0

            # --- features pass(es) and the head --------------------------------------------
            t0 = time.perf_counter()
            t_head = 0.0
            fulls: List[torch.Tensor] = [None] * len(targets)  # type: ignore[list-item]
            groups = [list(range(len(targets)))] if self.multi_view_features else [[t] for t in range(len(targets))]
            for group in groups:
                f = self.backbone_features([src.crop_image] + [inputs[t].image for t in group])
                if cfg.second_pass:
                    for j, t in enumerate(group):
                        inputs[t] = self.second_pass(f, src, j + 1, lb_src, inputs[t])
                self._sync()
                th = time.perf_counter()
                full, _ = self.decode(f, src.prompts, [inputs[t].prompts for t in group], src.crop_mask)
                self._sync()
                t_head += time.perf_counter() - th
                for j, t in enumerate(group):
                    fulls[t] = full[j, 0]
                del f
            t_features = time.perf_counter() - t0 - t_head

            # --- recovery ------------------------------------------------------------------
            t0 = time.perf_counter()
            per_object = []
            for t, view in enumerate(targets):
                frame_logits, frame_pts = self.recover(fulls[t], inputs[t])
                logits = frame_logits.float().cpu().numpy()
                mask = logits > 0
                prob = torch.sigmoid(frame_logits.float())
                score = float(prob[torch.from_numpy(mask).to(prob.device)].mean()) if mask.any() else 0.0
                per_object.append(
                    SegmentationResult(
                        mask=mask,
                        source_points=np.asarray(inputs[t].source_points, np.float32),
                        target_points=frame_pts,
                        visibility=np.clip(inputs[t].visibility, 0, 1).astype(np.float32),
                        confidence=np.clip(inputs[t].confidence, 0, 1).astype(np.float32),
                        score=score,
                        logits=logits.astype(np.float32),
                        timings={},
                    )
                )
                if trace is not None:
                    trace.setdefault("targets", []).append(dict(object=o, target=t, input=inputs[t], **stages[t]))
            t_recover = time.perf_counter() - t0
            for r in per_object:
                r.timings = dict(prompts=t_prompts, first_pass=t_first, remap=t_remap, features=t_features,
                                 head=t_head, recover=t_recover)
            results.append(per_object)
        if trace is not None:
            trace["sources"] = sources
            trace["tracks"] = tracks
        total = time.perf_counter() - t_start
        for per_object in results:
            for r in per_object:
                r.timings["total"] = total
        return results
