"""Choosing and building a segmentation backend from the typed configuration.

Shared by the command line, the ROS node and the demo so that ``model.backend``,
``model.config`` and the checkpoints mean the same thing everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
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


def pipeline_config(inference: InferenceConfig, model: Optional[ModelConfig] = None,
                    geometry=None) -> PipelineConfig:
    """The pipeline recipe a node configuration's ``inference`` (and ``model``, ``geometry``)
    section asks for: the one mapping the node, ``vggts replay --params-file`` and the demo
    share (:meth:`InferenceConfig.pipeline`, with a deprecated ``model.dtype`` folded in).
    ``geometry.vggt_heads`` turns on VGGT's camera and depth heads
    (``PipelineConfig.geometry_heads``)."""
    import dataclasses

    pipe = precision_of(model or ModelConfig(), inference.pipeline())
    if geometry is not None and geometry.vggt_heads:
        pipe = dataclasses.replace(pipe, geometry_heads=True)
    return pipe


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


@dataclass
class LoadedBackend:
    """A backend ready for a node: ``device`` it runs on, seconds to load and to warm up,
    and why the warm-up failed (empty when it did not; a failed warm-up is not fatal)."""

    segmentor: Segmentor
    device: str
    load_seconds: float
    warm_up_seconds: float
    warm_up_error: str = ""

    @property
    def seconds(self) -> float:
        return self.load_seconds + self.warm_up_seconds


def load_backend(cfg, given: Optional[Segmentor] = None) -> LoadedBackend:
    """The backend a node configuration (:class:`vggts_ros.config.NodeConfig`) asks for, or
    ``given`` (a ready one), warmed up when ``inference.warm_up`` (the weight-free backend never
    imports torch, so its device is the CPU)."""
    import time

    t0 = time.monotonic()
    segmentor, device = given, "cpu"
    if segmentor is None:
        if cfg.model.backend == "vggts":
            device = resolve_device(cfg.model.device)
            cfg.model.device = device
        segmentor = create_segmentor(cfg.model, pipeline_config(cfg.inference, cfg.model, cfg.geometry))
    loaded = time.monotonic() - t0
    warm, error = 0.0, ""
    if cfg.inference.warm_up:
        t0 = time.monotonic()
        try:
            warm_up(segmentor)
        except Exception as exc:  # noqa: BLE001 - an optimisation: real frames will tell
            error = f"{type(exc).__name__}: {exc}"
        warm = time.monotonic() - t0
    return LoadedBackend(segmentor, device, loaded, warm, error)


def release_device_memory() -> None:
    """Give cached CUDA memory back after a failure or an unload (no-op without torch loaded:
    the weight-free backend never imports it)."""
    import sys

    if "torch" not in sys.modules:
        return
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - best effort
        pass
