"""Scoring of clips: the per-frame head against Temporal VGGT-S, frame by frame.

:func:`evaluate_clips` streams every clip of a data set through one *arm* (a head, with
or without memory modules) exactly as the node would and scores each frame's mask
against the clip's truth. :func:`summarise` groups the frames: ``overall``, ``occluded``
(more than half of the object hidden), ``blurred`` and the ``rest``, each with its mean
IoU and frame count. :class:`ClipEvalReport` holds several arms scored on the same clips
(``vggts evaluate --clips``) and writes them as a Markdown table and a JSON file with
every frame's record.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from ..models.temporal import TemporalMemory
from ..models.union_head.union_head import HeadContext, UnionSegmentationHead
from .clips import collate_clips
from .losses import batch_iou
from .runtime import FeatureExtractor

OCCLUDED = 0.5  # a frame counts as occluded when more than this share of the object is hidden
GROUPS = ("overall", "occluded", "blurred", "rest")


# ---------------------------------------------------------------------------------------
# clip batches as network inputs (shared with the clip trainer)
# ---------------------------------------------------------------------------------------
def context_rows(ctx: HeadContext, start: int, stop: int) -> HeadContext:
    """Rows ``[start, stop)`` of a batched head context."""
    return replace(ctx, tokens=ctx.tokens[start:stop], src_map=ctx.src_map[start:stop],
                   tar_feat=ctx.tar_feat[start:stop], src_down0=ctx.src_down0[start:stop])


def clip_features(extractor: FeatureExtractor, batch: Dict[str, Any]) -> torch.Tensor:
    """``[B, T, 2, C, g, g]`` backbone features of every (source, frame) pair."""
    b, T = batch["tar_img"].shape[:2]
    flat = {"src_img": batch["src_img"].reshape(b * T, *batch["src_img"].shape[2:]),
            "tar_img": batch["tar_img"].reshape(b * T, *batch["tar_img"].shape[2:])}
    f = extractor.features(flat)
    return f.view(b, T, *f.shape[1:])


def clip_inputs(batch: Dict[str, Any], device: torch.device):
    """Source points, target points, source mask and target truth as float tensors."""
    def t(key):
        return torch.from_numpy(np.ascontiguousarray(batch[key])).to(device).float()

    return t("src_points"), t("tar_points"), t("src_mask"), t("tar_mask")


# ---------------------------------------------------------------------------------------
# one arm
# ---------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate_clips(head: UnionSegmentationHead, temporal: Optional[TemporalMemory], dataset,
                   extractor: FeatureExtractor, refine_iterations: int = 1) -> Dict[str, Any]:
    """Stream every clip of ``dataset`` through the head (``temporal``: with a
    :class:`vggts_ros.temporal.TargetStream` per clip, exactly as the node would) and
    score every frame. Returns ``{"frames": [...], "summary": {...}}`` (see
    :func:`summarise`)."""
    from ..temporal import TargetStream

    was = head.training
    head.eval()
    if temporal is not None:
        temporal.eval()
    frames: List[Dict[str, Any]] = []
    device = next(head.parameters()).device
    for i in range(len(dataset)):
        clip = collate_clips([dataset[i]])
        feats = clip_features(extractor, clip)[0]
        src_points, tar_points, src_mask, tar_mask = clip_inputs(clip, device)
        ctx_all = head.encode(feats, src_points[0], tar_points[0], src_mask[0])
        stream = TargetStream(temporal) if temporal is not None else None
        size = tuple(clip["tar_img"].shape[2:4])
        for t in range(feats.shape[0]):
            ctx = context_rows(ctx_all, t, t + 1)
            if stream is None:
                full, low = head.decode(ctx)
                for _ in range(int(refine_iterations)):
                    full, low = head.decode(ctx, low)
            else:
                full, low = stream.step(head, ctx, stamp=0.1 * t, source_version=clip["key"][0], size=size,
                                        refine_iterations=refine_iterations)
            iou = float(batch_iou(full, tar_mask[0, t][None, None])[0])
            frames.append({"clip": clip["key"][0], "frame": t, "iou": iou,
                           "occlusion": float(clip["occlusion"][0, t]), "blurred": bool(clip["blurred"][0, t])})
    head.train(was)
    return {"frames": frames, "summary": summarise(frames)}


def summarise(frames: Sequence[Dict[str, Any]]) -> Dict[str, Dict[str, float]]:
    """Mean IoU and frame count ``overall``, on ``occluded`` frames (hidden share above
    :data:`OCCLUDED`; unknown, NaN, counts as not occluded), on ``blurred`` frames and on
    the ``rest`` (neither). An empty group has IoU NaN."""
    groups = {
        "overall": [f for f in frames],
        "occluded": [f for f in frames if f["occlusion"] > OCCLUDED],
        "blurred": [f for f in frames if f["blurred"]],
        "rest": [f for f in frames if not f["occlusion"] > OCCLUDED and not f["blurred"]],
    }
    return {k: {"iou": float(np.mean([f["iou"] for f in v])) if v else float("nan"), "frames": len(v)}
            for k, v in groups.items()}


# ---------------------------------------------------------------------------------------
# several arms on the same clips
# ---------------------------------------------------------------------------------------
@dataclass
class ClipEvalReport:
    """Arms scored on the same clips, in order (``arms[name] = evaluate_clips(...)``)."""

    arms: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    settings: Dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> Dict[str, Dict[str, Dict[str, float]]]:
        return {name: arm["summary"] for name, arm in self.arms.items()}

    def table(self) -> str:
        """Markdown: one row per arm, mean IoU (frames) per group."""
        lines = ["| arm | " + " | ".join(f"{g} IoU (frames)" for g in GROUPS) + " |",
                 "| --- |" + " --- |" * len(GROUPS)]
        for name, arm in self.arms.items():
            cells = []
            for g in GROUPS:
                s = arm["summary"][g]
                value = "n/a" if not math.isfinite(s["iou"]) else f"{s['iou']:.4f}"
                cells.append(f"{value} ({s['frames']})")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def to_json(self) -> Dict[str, Any]:
        return _clean({"summary": self.summary(), "frames": {n: a["frames"] for n, a in self.arms.items()},
                       "settings": self.settings, "seconds": round(self.seconds, 3)})

    def write(self, out_dir: str, name: str = "clips") -> Dict[str, str]:
        """``<name>.md`` and ``<name>.json`` in ``out_dir``."""
        base = Path(out_dir)
        base.mkdir(parents=True, exist_ok=True)
        paths = {"table": str(base / f"{name}.md"), "json": str(base / f"{name}.json")}
        Path(paths["table"]).write_text(self.table() + "\n", encoding="utf-8")
        Path(paths["json"]).write_text(json.dumps(self.to_json(), indent=2), encoding="utf-8")
        return paths


def _clean(obj):
    """JSON-safe copy: NaN becomes null (no occlusion annotated, empty groups)."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return None if math.isnan(v) else v
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
