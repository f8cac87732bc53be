"""Choosing and building a segmentation backend from the typed configuration.

Shared by the command line, the ROS node and the demo so that ``model.backend``,
``model.config`` and the checkpoints mean the same thing everywhere.
"""

from __future__ import annotations

from typing import Optional

from vggts_ros.config import BACKENDS, InferenceConfig, ModelConfig, PipelineConfig
from vggts_ros.device import resolve_device  # noqa: F401  (re-exported: the node imports it from here)
from vggts_ros.types import Segmentor


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


def pipeline_config(inference: InferenceConfig, model: Optional[ModelConfig] = None) -> PipelineConfig:
    """The pipeline recipe a node configuration's ``inference`` (and ``model``) section asks
    for: the one mapping the node, ``vggts replay --params-file`` and the demo share."""
    return PipelineConfig(
        refine_iterations=inference.refine_iterations,
        backbone_dtype=(model or ModelConfig()).dtype,
        precision=inference.precision,
        point_identity=inference.point_identity,
        temporal=inference.temporal,
        memory_frames=inference.memory_frames,
        temporal_weights=inference.temporal_weights,
    )
