"""Choosing and building a segmentation backend from the typed configuration.

Shared by the command line, the ROS node and the demo so that ``model.backend``,
``model.config`` and the checkpoints mean the same thing everywhere.
"""

from __future__ import annotations

from typing import Optional

from vggts_ros.config import BACKENDS, ModelConfig, PipelineConfig
from vggts_ros.types import Segmentor


def resolve_device(name: str) -> str:
    """``auto`` picks CUDA when present; asking for CUDA without it is an error."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("model.device is 'cuda' but no CUDA device is available (use 'auto' or 'cpu')")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ValueError(f"model.device must be auto, cpu or cuda, got {name!r}")
    return name


def create_segmentor(model: ModelConfig, pipeline: Optional[PipelineConfig] = None) -> Segmentor:
    """Build the backend named by ``model.backend`` (weights are loaded here)."""
    pipeline = pipeline or PipelineConfig()
    if model.backend == "geometric":
        from vggts_ros.geometric import GeometricSegmentor

        return GeometricSegmentor()
    if model.backend == "vggts":
        from vggts_ros.pipeline import VGGTSegmentor

        return VGGTSegmentor.from_config(model, pipeline)
    raise ValueError(f"model.backend must be one of {BACKENDS}, got {model.backend!r}")
