"""Segmentation losses of VGGT-S: ``focal_weight * focal + dice_weight * dice`` on the
full-resolution target logits (20 and 1 in the paper)."""

from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F
from torch import Tensor


def _flat(logits: Tensor, target: Tensor):
    if logits.dim() == 4:
        logits = logits[:, 0]
    if target.dim() == 4:
        target = target[:, 0]
    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ")
    return logits.float(), target.float()


def focal_loss(logits: Tensor, target: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Sigmoid focal loss, averaged over pixels, then over the batch. ``[B,(1,)H,W]``."""
    x, t = _flat(logits, target)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p = torch.sigmoid(x)
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return loss.flatten(1).mean(1).mean()


def dice_loss(logits: Tensor, target: Tensor, smooth: float = 1.0) -> Tensor:
    """``1 - (2|P.G| + 1) / (|P| + |G| + 1)`` on sigmoid probabilities, batch mean."""
    x, t = _flat(logits, target)
    p = torch.sigmoid(x).flatten(1)
    t = t.flatten(1)
    num = 2 * (p * t).sum(-1) + smooth
    den = p.sum(-1) + t.sum(-1) + smooth
    return (1 - num / den).mean()


def segmentation_loss(
    logits: Tensor, target: Tensor, focal_weight: float = 20.0, dice_weight: float = 1.0,
    alpha: float = 0.25, gamma: float = 2.0,
) -> Dict[str, Tensor]:
    focal = focal_loss(logits, target, alpha, gamma)
    dice = dice_loss(logits, target)
    return {"loss": focal_weight * focal + dice_weight * dice, "focal": focal, "dice": dice}


@torch.no_grad()
def batch_iou(logits: Tensor, target: Tensor) -> Tensor:
    """Per-sample IoU of ``logits > 0`` against the target (1 when both are empty)."""
    x, t = _flat(logits, target)
    p = (x > 0).flatten(1)
    g = (t > 0.5).flatten(1)
    inter = (p & g).sum(-1).float()
    union = (p | g).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
