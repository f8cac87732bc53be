"""Choosing and building a segmentation backend from the typed configuration.

Shared by the command line, the ROS node and the demo so that ``model.backend``,
``model.config`` and the checkpoints mean the same thing everywhere.
"""

from __future__ import annotations

from typing import Optional

from vggts_ros.config import BACKENDS, InferenceConfig, ModelConfig, PipelineConfig, precision_of
from vggts_ros.device import resolve_device  # noqa: F401  (re-exported: the node imports it from here)
from vggts_ros.types import Segmentor


def create_segmentor(model: ModelConfig, pipeline: Optional[PipelineConfig] = None) -> Segmentor:
    """Build the backend named by ``model.backend`` (weights are loaded here)."""
    pipeline = pipeline or PipelineConfig()
    if model.backend == "geometric":
        from vggts_ros.geometric import GeometricSegmentor

        return GeometricSegmentor(model.geometric)
    if model.backend == "vggts":
        from vggts_ros.pipeline import VGGTSegmentor

        return VGGTSegmentor.from_config(model, pipeline)
    raise ValueError(f"model.backend must be one of {BACKENDS}, got {model.backend!r}")


def choose_backend(requested: str, preset: str = "vggt-1b", vggt_checkpoint: str = "", head_checkpoint: str = "",
                   default: str = "geometric") -> str:
    """``auto`` (the default of ``vggts segment``, ``replay`` and ``demo``) resolved the same way
    everywhere: the learned model when it can run without a download (a preset with
    deterministic weights such as ``test-tiny``, or both checkpoints given), else ``default``
    (the weight-free geometric backend, or a parameters file's ``model.backend``)."""
    if requested != "auto":
        return requested
    from vggts_ros.config import model_preset

    if vggt_checkpoint and head_checkpoint:
        return "vggts"
    if not vggt_checkpoint and not head_checkpoint and model_preset(preset).backbone_seed is not None:
        return "vggts"
    return default


def pipeline_config(inference: InferenceConfig, model: Optional[ModelConfig] = None) -> PipelineConfig:
    """The pipeline recipe a node configuration's ``inference`` (and ``model``) section asks
    for: the one mapping the node, ``vggts replay --params-file`` and the demo share
    (:meth:`InferenceConfig.pipeline`, with a deprecated ``model.dtype`` folded in)."""
    return precision_of(model or ModelConfig(), inference.pipeline())


def warm_up(segmentor: Segmentor) -> float:
    """Run ``segmentor`` once on a small synthetic pair (a textured box seen from two sides)
    so that its first real call does not pay for lazy initialisation (imports, kernels,
    allocator, caches). Returns the seconds it took."""
    import time

    import numpy as np

    from vggts_ros.types import TargetView

    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    texture = np.kron(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), np.ones((10, 10, 1), np.uint8))
    source = np.ascontiguousarray(texture)
    target = np.ascontiguousarray(np.roll(texture, (6, 9), axis=(0, 1)))
    mask = np.zeros(source.shape[:2], np.uint8)
    mask[40:80, 50:110] = 1
    segmentor.segment(source, mask, [TargetView(target, "exo", "warm_up")])
    return time.perf_counter() - t0
