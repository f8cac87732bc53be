"""Evaluation over a paired data set: Ego-Exo4D correspondence metrics per direction.

For every pair the head predicts the target mask on the network input (first pass plus
``refine_iterations`` refinements); the logits are pasted back into the target frame
(outside the crop = background) and scored against the frame's ground truth with
:mod:`vggts_ros.metrics`: IoU, location error and contour accuracy over pairs whose
object is visible, and visibility balanced accuracy over all pairs, per direction and
overall. Results come as a Markdown table, a JSON file (summary + one record per pair)
and overlays of the worst pairs.

Under ``torchrun`` every rank scores a shard and rank 0 gathers the records.
"""

from __future__ import annotations

import heapq
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from ..metrics import CorrespondenceMetrics
from ..models.union_head.refinement import check_identity, decode_with_refinement
from .pairs import collate, recover_to_frame
from .runtime import DistEnv, FeatureExtractor, head_inputs


@dataclass
class EvalReport:
    metrics: CorrespondenceMetrics
    worst: List[Dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def records(self) -> List[Dict[str, Any]]:
        return self.metrics.records

    def summary(self) -> Dict[str, Dict[str, float]]:
        return self.metrics.summary()

    def table(self) -> str:
        return self.metrics.table()

    def mean_iou(self, direction: str = "overall") -> float:
        return float(self.summary().get(direction, {}).get("iou", float("nan")))

    def to_json(self) -> Dict[str, Any]:
        return {
            "summary": _clean(self.summary()),
            "pairs": [_clean({k: v for k, v in r.items()}) for r in self.records],
            "seconds": round(self.seconds, 3),
        }

    def write(self, out_dir: str, name: str = "eval") -> Dict[str, str]:
        """``<name>.json``, ``<name>.md`` and ``overlays/<name>_worst_*.png`` in ``out_dir``."""
        base = Path(out_dir)
        base.mkdir(parents=True, exist_ok=True)
        paths = {"json": str(base / f"{name}.json"), "table": str(base / f"{name}.md")}
        Path(paths["json"]).write_text(json.dumps(self.to_json(), indent=2), encoding="utf-8")
        Path(paths["table"]).write_text(self.table() + "\n", encoding="utf-8")
        if self.worst:
            ov = base / "overlays"
            ov.mkdir(exist_ok=True)
            paths["overlays"] = str(ov)
            for rank, item in enumerate(self.worst):
                write_overlay(ov / f"{name}_worst_{rank:02d}_{item['direction']}_{_safe(item['key'])}.png", item)
        return paths


def _safe(key: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(key))[:80]


def _clean(obj):
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return None if math.isnan(v) else v
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def write_overlay(path: Path, item: Dict[str, Any]) -> None:
    import cv2

    from ..visualize import mosaic, overlay_masks

    src = overlay_masks(item["src_img"], item["src_mask"].astype(np.uint8), [item["src_points"]])
    gt = overlay_masks(item["tar_img"], item["tar_mask"].astype(np.uint8), [item["tar_points"]])
    pred = overlay_masks(item["tar_img"], item["pred_mask"].astype(np.uint8) * 2, [item["tar_points"]])
    iou = item.get("iou")
    titles = ["source", "target GT", f"prediction IoU {iou:.2f}" if iou == iou and iou is not None else "prediction"]
    tiles = [src, gt, pred]
    if item.get("frame") is not None and item.get("frame_pred") is not None:
        tiles.append(overlay_masks(item["frame"], item["frame_pred"].astype(np.uint8) * 2
                                   + item["frame_gt"].astype(np.uint8) * (item["frame_pred"] == 0)))
        titles.append("frame: pred green, missed red")
    img = mosaic(tiles, titles, height=256)
    cv2.imwrite(str(path), np.ascontiguousarray(img[..., ::-1]))


@torch.no_grad()
def predict_batch(
    head, extractor: FeatureExtractor, batch: Dict[str, Any], data, refine_iterations: int,
    identity: str = "accumulate",
) -> torch.Tensor:
    """Full-resolution target logits ``[B, 1, S, S]`` of a batch: one encode, then
    :func:`decode_with_refinement` (the function training and inference use)."""
    feats = extractor.features(batch)
    tar_points = extractor.target_prompts(batch, feats, data)
    batch["tar_points"] = tar_points
    src_points, tar, src_mask = head_inputs(batch, tar_points, extractor.device)
    ctx = head.encode(feats, src_points, tar, src_mask)
    full, _ = decode_with_refinement(head, ctx, refine_iterations, identity)
    return full


def score_batch(metrics: CorrespondenceMetrics, batch: Dict[str, Any], logits: torch.Tensor,
                worst: Optional[list] = None, worst_k: int = 0, counter: Optional[List[int]] = None) -> None:
    """Add one batch of predictions (crop-space logits) to ``metrics``; keep the
    ``worst_k`` lowest-IoU pairs (with their images) in the heap ``worst``."""
    for i in range(len(batch["key"])):
        frame_logits = recover_to_frame(logits[i, 0].float().cpu(), batch["meta"][i])
        pred = (frame_logits > 0).numpy()
        gt = np.asarray(batch["tar_frame_mask"][i]) > 0
        rec = metrics.add(gt, pred, direction=batch["direction"][i], key=batch["key"][i])
        if worst is None or worst_k <= 0:
            continue
        iou = rec["iou"]
        badness = -(iou if iou == iou else (1.0 if not rec["pred_visible"] else 0.0))
        n = counter[0] if counter is not None else len(worst)
        if counter is not None:
            counter[0] += 1
        item = (badness, n, {
            "key": batch["key"][i], "direction": batch["direction"][i], "iou": iou,
            "src_img": batch["src_img"][i], "src_mask": batch["src_mask"][i], "src_points": batch["src_points"][i],
            "tar_img": batch["tar_img"][i], "tar_mask": batch["tar_mask"][i],
            "tar_points": np.asarray(batch["tar_points"][i]),
            "pred_mask": (logits[i, 0] > 0).cpu().numpy(),
            "frame": batch["tar_frame"][i] if "tar_frame" in batch else None,
            "frame_pred": pred if "tar_frame" in batch else None, "frame_gt": gt if "tar_frame" in batch else None,
        })
        if len(worst) < worst_k:
            heapq.heappush(worst, item)
        elif item[0] > worst[0][0]:
            heapq.heapreplace(worst, item)


def evaluate(
    head, extractor: FeatureExtractor, dataset, data, *, batch_size: int = 4, refine_iterations: int = 1,
    worst_k: int = 8, env: Optional[DistEnv] = None, progress: bool = False, num_workers: int = 0,
    predictor: Optional[Callable[[Dict[str, Any]], torch.Tensor]] = None, identity: str = "accumulate",
) -> EvalReport:
    """Score ``head`` on every sample of ``dataset``. ``predictor`` (batch -> logits)
    replaces the model, e.g. to score fixed predictions. ``identity``: point-identity
    semantics of the refinement passes (``"accumulate"``: the reference's)."""
    check_identity(identity)
    env = env or DistEnv()
    t0 = time.perf_counter()
    was_training = head.training if head is not None else False
    if head is not None:
        head.eval()
    indices = list(range(env.rank, len(dataset), env.world))
    loader = DataLoader(Subset(dataset, indices), batch_size=batch_size, shuffle=False, collate_fn=collate,
                        num_workers=num_workers)
    metrics = CorrespondenceMetrics()
    worst: list = []
    counter = [0]
    it = loader
    if progress and env.is_main:
        from tqdm import tqdm

        it = tqdm(loader, desc="evaluate", dynamic_ncols=True)
    for batch in it:
        if predictor is not None:
            logits = predictor(batch)
        else:
            logits = predict_batch(head, extractor, batch, data, refine_iterations, identity)
        score_batch(metrics, batch, logits, worst, worst_k, counter)
    if head is not None and was_training:
        head.train()
    ranked = [item for _, _, item in sorted(worst, key=lambda t: (-t[0], t[1]))]
    if env.distributed:
        gathered: List[Any] = [None] * env.world
        torch.distributed.all_gather_object(gathered, (metrics.records, ranked))
        metrics.records = [r for recs, _ in gathered for r in recs]
        pool = [item for _, items in gathered for item in items]
        ranked = sorted(pool, key=lambda it_: (it_["iou"] if it_["iou"] == it_["iou"] else -1.0))[:worst_k]
    return EvalReport(metrics=metrics, worst=ranked, seconds=time.perf_counter() - t0)
