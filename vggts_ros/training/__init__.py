"""Training and evaluation of the VGGT-S Union Segmentation Head (ROS-free).

* :mod:`.config` — :class:`TrainConfig` (model, data, optim, run sections).
* :mod:`.self_training` — single-image self-training pairs from images with instance masks.
* :mod:`.egoexo` — Ego-Exo4D correspondence pairs (SegSwap layout), first-pass projections.
* :mod:`.trainer` — frozen backbone, float32 head, focal + dice, refinement half-batches,
  AdamW + step decay, resumable checkpoints, DDP under ``torchrun``.
* :mod:`.evaluate` — correspondence metrics per direction, table, JSON, worst overlays.
* :mod:`.cli` — ``vggts train`` / ``vggts evaluate`` (also ``python -m vggts_ros.training.cli``).
"""

from .config import DataSection, ModelSection, OptimSection, RunSection, TrainConfig, smoke_config

__all__ = ["TrainConfig", "ModelSection", "DataSection", "OptimSection", "RunSection", "smoke_config"]
